// The package as users get it: `npm pack` of client/, installed into a fresh project next
// to React and Vite, then imported by name in node, type-checked with tsc, and bundled by
// Vite. Run by scripts/test.sh; exits non-zero on the first failure.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const client = join(dirname(fileURLToPath(import.meta.url)), '..');
const project = mkdtempSync(join(tmpdir(), 'rowsync-pack-'));
const run = (command, args, cwd = project) => execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

try {
  const tarball = run('npm', ['pack', '--silent', '--pack-destination', project], client).trim().split('\n').pop();
  const files = run('tar', ['-tzf', join(project, tarball)]).split('\n');
  for (const needed of ['package/src/index.js', 'package/src/react.js', 'package/types/index.d.ts', 'package/types/react.d.ts']) {
    if (!files.includes(needed)) throw new Error(`the tarball lacks ${needed}: ${files.join(' ')}`);
  }
  if (files.some((f) => f.includes('/test/') || f.includes('node_modules'))) throw new Error('the tarball carries tests or dependencies');

  const versions = JSON.parse(readFileSync(join(client, 'package.json'), 'utf8')).devDependencies;
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true, type: 'module' }));
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', join(project, tarball),
    `react@${versions.react}`, `react-dom@${versions['react-dom']}`, `@types/react@${versions['@types/react']}`,
    `typescript@${versions.typescript}`, 'vite@8.3.8']);

  // node: both entry points by name.
  writeFileSync(join(project, 'node.mjs'), `
    import { createClient, memoryStorage, membersDigest } from '@rowsync/client';
    import { RowsyncProvider, useRecord, useRecords, useWrite, useUndoRedo, usePresence, useConnectionState, useTyping } from '@rowsync/client/react';
    const hooks = [RowsyncProvider, useRecord, useRecords, useWrite, useUndoRedo, usePresence, useConnectionState, useTyping];
    if (typeof createClient !== 'function' || hooks.some((h) => typeof h !== 'function')) throw new Error('missing exports');
    if (membersDigest([['a', 1], ['b', 2]]) !== '16550687064280097846') throw new Error('digest');
    await memoryStorage().putRows([['tasks:1', { id: '1' }]]);
    console.log('node: @rowsync/client and @rowsync/client/react import');
  `);
  process.stdout.write(run('node', ['node.mjs']));

  // tsc: the declarations in the tarball type an app.
  writeFileSync(join(project, 'app.tsx'), `
    import { createClient } from '@rowsync/client';
    import { RowsyncProvider, useRecord } from '@rowsync/client/react';
    interface Task { id: string; title: string; version: number }
    function Title({ id }: { id: string }) {
      const task = useRecord<Task>('tasks', id);
      return <b>{task?.title ?? ''}</b>;
    }
    export const app = <RowsyncProvider client={createClient({ url: 'ws://x/v1/ws', getToken: () => 't' })}><Title id="1" /></RowsyncProvider>;
  `);
  writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { strict: true, noEmit: true, jsx: 'react-jsx', module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', lib: ['es2022', 'dom'], skipLibCheck: false, types: [] },
    files: ['app.tsx'],
  }));
  run('npx', ['tsc', '-p', 'tsconfig.json']);
  console.log('tsc: the packed declarations type a React app');

  // Vite: both entry points bundle for a browser.
  writeFileSync(join(project, 'index.html'), '<!doctype html><div id="root"></div><script type="module" src="./main.js"></script>');
  writeFileSync(join(project, 'main.js'), `
    import { createElement } from 'react';
    import { createRoot } from 'react-dom/client';
    import { createClient } from '@rowsync/client';
    import { RowsyncProvider, useConnectionState } from '@rowsync/client/react';
    function Badge() { return createElement('span', null, useConnectionState().state); }
    const client = createClient({ url: 'ws://localhost/v1/ws', getToken: () => 'x.e30.y', user: 'u' });
    createRoot(document.getElementById('root')).render(createElement(RowsyncProvider, { client }, createElement(Badge)));
  `);
  run('npx', ['vite', 'build', '--logLevel', 'warn']);
  const bundle = readdirSync(join(project, 'dist', 'assets')).find((f) => f.endsWith('.js'));
  if (!readFileSync(join(project, 'dist', 'assets', bundle), 'utf8').includes('/v1/ws')) throw new Error('the bundle lacks the app');
  console.log(`vite: bundled (${bundle})`);
} catch (error) {
  console.error(error.stderr ?? '', error.stdout ?? '', error.message);
  process.exitCode = 1;
} finally {
  rmSync(project, { recursive: true, force: true });
}
