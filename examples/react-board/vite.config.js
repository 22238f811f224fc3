// The board is built like any Vite app. Two things are its own: it is served under /demo/
// by the bridge (so the build goes to dist/demo with relative paths), and a service worker
// that precaches every file of the build lets the page open with no network at all.
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { defineConfig } from 'vite';

/** Emits sw.js with the list of files to precache and a version that changes with them. */
function serviceWorker() {
  return {
    name: 'rowsync-board-service-worker',
    apply: 'build',
    generateBundle(_options, bundle) {
      const files = ['./', ...Object.keys(bundle).map((name) => `./${name}`)].sort();
      const version = createHash('sha256').update(files.join('\n')).digest('hex').slice(0, 12);
      const source = readFileSync(new URL('./src/sw.js', import.meta.url), 'utf8')
        .replace('self.__PRECACHE__', JSON.stringify(files))
        .replace('self.__VERSION__', JSON.stringify(version));
      this.emitFile({ type: 'asset', fileName: 'sw.js', source });
    },
  };
}

export default defineConfig({
  base: './',
  // CodeMirror and Yjs make one bundle of about 750 kB (220 kB compressed): fine for a demo.
  build: { outDir: 'dist/demo', emptyOutDir: true, chunkSizeWarningLimit: 1000 },
  plugins: [serviceWorker()],
  // The example links the client's folder (file:../../client), which has React installed
  // for its own tests: one React for the app, as an installed package would have.
  resolve: { dedupe: ['react', 'react-dom'] },
});
