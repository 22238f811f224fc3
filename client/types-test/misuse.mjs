// Compiles misuse.tsx and checks that exactly its marked lines fail, each with its code:
// the types catch these mistakes, and nothing else in the file is refused.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const file = join(here, 'misuse.tsx');
const expected = new Map();
readFileSync(file, 'utf8')
  .split('\n')
  .forEach((line, i) => {
    const mark = line.match(/\/\/ error (TS\d+)$/);
    if (mark) expected.set(i + 1, mark[1]);
  });

let output = '';
try {
  execFileSync('npx', ['tsc', '-p', join(here, 'tsconfig.misuse.json')], { encoding: 'utf8', cwd: join(here, '..') });
} catch (error) {
  output = error.stdout;
}
const found = new Map();
for (const [, line, code] of output.matchAll(/misuse\.tsx\((\d+),\d+\): error (TS\d+)/g)) {
  if (!found.has(Number(line))) found.set(Number(line), code);
}
const problems = [];
for (const [line, code] of expected) {
  if (found.get(line) !== code) problems.push(`line ${line}: expected ${code}, got ${found.get(line) ?? 'no error'}`);
}
for (const [line, code] of found) {
  if (!expected.has(line)) problems.push(`line ${line}: unexpected ${code}`);
}
if (problems.length > 0 || expected.size === 0) {
  console.error(`misuse.tsx:\n${problems.join('\n')}\n\ntsc printed:\n${output}`);
  process.exit(1);
}
console.log(`misuse.tsx: all ${expected.size} misuses refused, each with its error`);
