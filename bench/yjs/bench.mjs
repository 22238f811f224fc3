// One generator, three servers: the reference y-websocket server (in memory, nothing
// stored), one rowsync bridge, and two rowsync bridges (writers on one, readers on the
// other, so every update goes through Postgres and the feed). All clients are the stock
// y-websocket provider in this process, so one clock times send → receive.
//
// Env: BENCH_REF, BENCH_A, BENCH_B (ws base URLs), BENCH_TOKEN, BENCH_DOCS (room ids),
// BENCH_PIDS ({"ref": pid, "a": pid}), BENCH_SECONDS.
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import WebSocket from 'ws';
import { readFileSync } from 'node:fs';

const env = process.env;
const DOCS = JSON.parse(env.BENCH_DOCS);
const PIDS = JSON.parse(env.BENCH_PIDS);
const SECONDS = Number(env.BENCH_SECONDS ?? 10);
const RATE = 10; // updates per second per document

// Each provider listens for the process's exit.
process.setMaxListeners(0);

const rss = (pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const clients = [];

function connect(base, room) {
  const doc = new Y.Doc();
  const provider = new WebsocketProvider(base, room, doc, {
    params: { access_token: env.BENCH_TOKEN },
    WebSocketPolyfill: WebSocket,
    disableBc: true,
  });
  clients.push({ doc, provider });
  return { doc, provider, text: doc.getText('t') };
}

async function synced(list, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  while (!list.every((c) => c.provider.synced)) {
    if (Date.now() > deadline) throw new Error('clients did not sync');
    await sleep(5);
  }
}

function closeAll() {
  for (const { doc, provider } of clients.splice(0)) {
    provider.destroy();
    doc.destroy();
  }
}

const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN;
};

/** `docs` documents, a writer on `writeBase` and a reader on `readBase` each; RATE
 * updates a second per document for SECONDS. Latency: send → the reader's text has it. */
async function propagation(name, writeBase, readBase, docs) {
  const pairs = docs.map((room) => ({ writer: connect(writeBase, room), reader: connect(readBase, room) }));
  await synced(pairs.flatMap((p) => [p.writer, p.reader]));
  const sent = new Map();
  const latencies = [];
  for (const { reader } of pairs) {
    reader.text.observe((event) => {
      const now = performance.now();
      for (const op of event.delta) {
        if (typeof op.insert !== 'string') continue;
        for (const [, seq] of op.insert.matchAll(/#(\d+);/g)) {
          const at = sent.get(Number(seq));
          if (at !== undefined) latencies.push(now - at);
        }
      }
    });
  }
  let seq = 0;
  const started = performance.now();
  const end = started + SECONDS * 1000;
  while (performance.now() < end) {
    const tick = performance.now();
    for (const { writer } of pairs) {
      seq += 1;
      sent.set(seq, performance.now());
      writer.text.insert(writer.text.length, `#${seq};`);
    }
    await sleep(Math.max(0, 1000 / RATE - (performance.now() - tick)));
  }
  await sleep(1500);
  const elapsed = (performance.now() - started) / 1000;
  closeAll();
  return {
    name,
    docs: docs.length,
    sent: seq,
    delivered: latencies.length,
    delivered_per_s: Math.round(latencies.length / elapsed),
    p50_ms: +percentile(latencies, 50).toFixed(2),
    p99_ms: +percentile(latencies, 99).toFixed(2),
  };
}

/** A 4 MB document, then 150 clients joining it at once: until every one has it all. */
async function joinStorm(name, base, room, closeBetween) {
  const writer = connect(base, room);
  await synced([writer]);
  const chunk = 'x'.repeat(1024);
  writer.doc.transact(() => {
    for (let i = 0; i < 4096; i++) writer.text.insert(writer.text.length, chunk);
  });
  const length = writer.text.length;
  await sleep(closeBetween ? 2000 : 500);
  if (closeBetween) {
    // Nobody has it open: the joiners load it from where it is stored.
    closeAll();
    await sleep(1000);
  }
  const started = performance.now();
  const joiners = Array.from({ length: 150 }, () => connect(base, room));
  const deadline = Date.now() + 120000;
  while (!joiners.every((j) => j.provider.synced && j.text.length === length)) {
    if (Date.now() > deadline) break;
    await sleep(10);
  }
  const done = joiners.filter((j) => j.text.length === length).length;
  const seconds = (performance.now() - started) / 1000;
  closeAll();
  return { name, joiners: 150, complete: done, seconds: +seconds.toFixed(2) };
}

/** RSS per idle connection (1,000, ten on each of 100 documents: in one room of 1,000,
 * every join's awareness goes to all the others, and the queues' growth would be what is
 * measured) and per open document (200). */
async function memory(name, base, pid, rooms) {
  await sleep(2000);
  const before = rss(pid);
  const idle = Array.from({ length: 1000 }, (_, i) => connect(base, rooms[i % 100]));
  await synced(idle);
  await sleep(1000);
  const withConnections = rss(pid);
  closeAll();
  await sleep(2000);
  const base2 = rss(pid);
  const open = rooms.slice(0, 200).map((room) => connect(base, room));
  await synced(open);
  for (const c of open) c.text.insert(0, 'a small document of about a hundred bytes, typed in once. '.repeat(2));
  await sleep(1500);
  const withDocs = rss(pid);
  closeAll();
  return {
    name,
    kb_per_idle_connection: +((withConnections - before) / 1000).toFixed(2),
    kb_per_open_document: +((withDocs - base2) / 200).toFixed(2),
  };
}

const results = [];
const run = async (f) => {
  const r = await f();
  console.log(JSON.stringify(r));
  results.push(r);
};
// Memory first, on servers that have done nothing yet.
await run(() => memory('reference', env.BENCH_REF, PIDS.ref, DOCS.slice(0, 200)));
await run(() => memory('rowsync', env.BENCH_A, PIDS.a, DOCS.slice(0, 200)));
if (env.BENCH_ONLY === 'memory') process.exit(0);
await run(() => propagation('reference', env.BENCH_REF, env.BENCH_REF, DOCS.slice(0, 1)));
await run(() => propagation('rowsync, one bridge', env.BENCH_A, env.BENCH_A, DOCS.slice(1, 2)));
await run(() => propagation('rowsync, two bridges', env.BENCH_A, env.BENCH_B, DOCS.slice(2, 3)));
await run(() => propagation('reference', env.BENCH_REF, env.BENCH_REF, DOCS.slice(0, 100)));
await run(() => propagation('rowsync, one bridge', env.BENCH_A, env.BENCH_A, DOCS.slice(100, 200)));
await run(() => propagation('rowsync, two bridges', env.BENCH_A, env.BENCH_B, DOCS.slice(0, 100)));
await run(() => joinStorm('reference', env.BENCH_REF, DOCS[200], false));
await run(() => joinStorm('rowsync, one bridge, document open', env.BENCH_A, DOCS[201], false));
await run(() => joinStorm('rowsync, one bridge, loaded from Postgres', env.BENCH_A, DOCS[200], true));
process.exit(0);
