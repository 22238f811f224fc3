import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, memoryStorage, membersDigest } from '../src/index.js';
import { Connection } from '../src/connection.js';
import { FakeServer, until } from './fake-server.js';

// The digest of [["a", 1], ["b", 2]]; bridge/src/protocol.rs pins the same value.
const DIGEST_A1_B2 = '16550687064280097846';

const TASK = { id: 't1', version: 1, title: 'Write', status: 'todo', board_id: 'b1', tags: ['a'] };

function setup(storage = memoryStorage()) {
  const server = new FakeServer({ 'tasks:t1': structuredClone(TASK) });
  const client = createClient({ url: 'ws://fake/v1/ws', getToken: () => 'x.e30.y', WebSocket: server.WebSocket, storage, minBackoffMs: 1, maxBackoffMs: 5 });
  return { server, client };
}

async function loaded(client) {
  const view = client.record('tasks', 't1');
  view.subscribe(() => {});
  await until(() => view.getSnapshot()?.title, 'the record to load');
  return view;
}

test('a write shows at once, then carries the server\'s version', async () => {
  const { client } = setup();
  const view = await loaded(client);
  const done = client.write([{ type: 'set', table: 'tasks', id: 't1', key: 'title', value: 'Ship' }]);
  assert.equal(view.getSnapshot().title, 'Ship', 'optimistic, in the same turn');
  const result = await done;
  assert.equal(result.rows[0].version, 2);
  assert.equal(view.getSnapshot().version, 2);
  client.close();
});

test('a refused write rolls back and says why', async () => {
  const { server, client } = setup();
  const view = await loaded(client);
  const rejected = new Promise((resolve) => client.on('rejected', resolve));
  server.refuseNext = { code: 'conflict', message: 'version conflict', temporary: false };
  const write = client.write([{ type: 'set', table: 'tasks', id: 't1', key: 'title', value: 'Mine', version: 1 }]);
  assert.equal(view.getSnapshot().title, 'Mine');
  await assert.rejects(write, { code: 'conflict' });
  assert.equal((await rejected).error.code, 'conflict');
  assert.equal(view.getSnapshot().title, 'Write');
  client.close();
});

test('writes made offline wait in storage, survive a new client and sync', async () => {
  const storage = memoryStorage();
  const first = setup(storage);
  const view = await loaded(first.client);
  first.server.online = false;
  first.server.disconnect();
  await until(() => first.client.state === 'offline', 'offline');
  first.client.write([{ type: 'listInsert', table: 'tasks', id: 't1', key: 'tags', value: 'offline' }]).catch(() => {});
  assert.deepEqual(view.getSnapshot().tags, ['a', 'offline']);
  await new Promise((r) => setTimeout(r, 0));
  assert.equal((await storage.load()).length, 1);
  first.client.close();

  const second = setup(storage);
  await second.client.ready;
  await until(() => second.server.rows.get('tasks:t1').tags.includes('offline'), 'the queued write on the server');
  await until(() => second.client.pending.length === 0, 'the acknowledgement');
  assert.equal((await storage.load()).length, 0);
  second.client.close();
});

test('after a reconnect it resumes from the last cursor', async () => {
  const { server, client } = setup();
  await loaded(client);
  server.push({ type: 'changes', rows: [{ op: 'upsert', table: 'tasks', id: 't1', version: 1, row: server.rows.get('tasks:t1'), keys: ['tasks:t1'] }], cursor: 'tok42' });
  await until(() => client.cursor === 'tok42', 'the cursor');
  server.disconnect();
  await until(() => server.received.some((f) => f.type === 'subscribe' && f.cursor === 'tok42'), 'a subscribe from cursor tok42');
  client.close();
});

test('server events reach listeners and move the cursor', async () => {
  const { server, client } = setup();
  await loaded(client);
  const received = new Promise((resolve) => client.on('event', resolve));
  server.push({ type: 'changes', rows: [{ op: 'event', topic: 'user:bob', event: 'mention', payload: { by: 'alice' }, from: null }], cursor: 'tok77' });
  assert.deepEqual(await received, { topic: 'user:bob', event: 'mention', payload: { by: 'alice' }, from: null });
  assert.equal(client.cursor, 'tok77');
  client.close();
});

test('undo applies the server\'s guarded inverse; redo reapplies', async () => {
  const { server, client } = setup();
  const view = await loaded(client);
  await client.write([{ type: 'set', table: 'tasks', id: 't1', key: 'status', value: 'doing' }]);
  assert.ok(client.canUndo);
  await client.undo();
  assert.equal(view.getSnapshot().status, 'todo');
  assert.ok(client.canRedo);
  await client.redo();
  assert.equal(view.getSnapshot().status, 'doing');
  // A collaborator's later edit is not clobbered: the guard skips it.
  server.rows.set('tasks:t1', { ...server.rows.get('tasks:t1'), status: 'done', version: 9 });
  server.push({ type: 'changes', rows: [{ op: 'upsert', table: 'tasks', id: 't1', version: 9, row: server.rows.get('tasks:t1'), keys: ['tasks:t1'] }], cursor: 'tok50' });
  await until(() => view.getSnapshot().status === 'done', 'the collaborator\'s edit');
  const skipped = new Promise((resolve) => client.on('skipped', resolve));
  await client.undo();
  assert.equal((await skipped).skipped[0].reason, 'changed');
  assert.equal(view.getSnapshot().status, 'done');
  client.close();
});

test('writes close together undo together', async () => {
  const { client } = setup();
  const view = await loaded(client);
  await client.write([{ type: 'set', table: 'tasks', id: 't1', key: 'title', value: 'A' }]);
  await client.write([{ type: 'listInsert', table: 'tasks', id: 't1', key: 'tags', value: 'b' }]);
  assert.equal(client.undoStack.length, 1);
  await client.undo();
  assert.equal(view.getSnapshot().title, 'Write');
  assert.deepEqual(view.getSnapshot().tags, ['a']);
  client.close();
});

test('backoff grows, is capped and jittered', () => {
  const delays = [];
  const connection = new Connection({ url: 'ws://x', getToken: () => '', minBackoffMs: 100, maxBackoffMs: 1000, random: () => 1 });
  const setTimeoutReal = globalThis.setTimeout;
  globalThis.setTimeout = (fn, ms) => { delays.push(ms); return 0; };
  try {
    for (let i = 0; i < 6; i++) connection.retry('test');
  } finally {
    globalThis.setTimeout = setTimeoutReal;
  }
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
  const half = new Connection({ url: 'ws://x', getToken: () => '', minBackoffMs: 100, random: () => 0.5 });
  globalThis.setTimeout = (fn, ms) => { delays.push(ms); return 0; };
  try { half.retry('test'); } finally { globalThis.setTimeout = setTimeoutReal; }
  assert.equal(delays.at(-1), 50);
});

test('pushed rows show without a fetch; a remove, members and revoked drop rows', async () => {
  const { server, client } = setup();
  const scope = client.query('tasks', { board_id: 'b1' });
  scope.subscribe(() => {});
  await until(() => scope.getSnapshot().length === 1, 'the scope');
  const fetches = server.received.filter((f) => f.type === 'fetch').length;
  const t2 = { id: 't2', board_id: 'b1', title: 'Pushed', tags: [], version: 1 };
  server.push({ type: 'changes', rows: [{ op: 'upsert', table: 'tasks', id: 't2', version: 1, row: t2, keys: ['tasks?board_id=b1'] }], cursor: 'tok60' });
  await until(() => scope.getSnapshot().length === 2, 'the pushed row');
  assert.equal(server.received.filter((f) => f.type === 'fetch').length, fetches, 'no refetch');
  server.push({ type: 'changes', rows: [{ op: 'remove', table: 'tasks', id: 't2', keys: ['tasks?board_id=b1'] }], cursor: 'tok61' });
  await until(() => scope.getSnapshot().length === 1, 'the removal');
  server.push({ type: 'changes', rows: [{ op: 'upsert', table: 'tasks', id: 't2', version: 2, row: { ...t2, version: 2 }, keys: ['tasks?board_id=b1'] }], cursor: 'tok62' });
  await until(() => scope.getSnapshot().length === 2, 'the row again');
  server.push({ type: 'members', key: 'tasks?board_id=b1', rows: [['t2', 2]] });
  await until(() => scope.getSnapshot().length === 1 && scope.getSnapshot()[0].id === 't2', 'only the members');
  const revoked = new Promise((resolve) => client.on('revoked', resolve));
  server.push({ type: 'revoked', keys: ['tasks?board_id=b1'], reason: 'not_visible' });
  assert.deepEqual((await revoked).keys, ['tasks?board_id=b1']);
  assert.equal(scope.getSnapshot().length, 0);
  client.close();
});

test('the resume digest is the bridge\'s (shared vector in bridge/src/protocol.rs)', () => {
  assert.equal(membersDigest([]), '0');
  assert.equal(membersDigest([['a', 1], ['b', 2]]), membersDigest([['b', 2], ['a', 1]]));
  assert.equal(membersDigest([['a', 1], ['b', 2]]), DIGEST_A1_B2);
  assert.notEqual(membersDigest([['a', 1], ['b', 3]]), DIGEST_A1_B2);
});

test('a table query follows every row of the table the user may see', async () => {
  const { server, client } = setup();
  const all = client.query('tasks');
  all.subscribe(() => {});
  await until(() => all.getSnapshot().length === 1, 'the table');
  assert.ok(server.received.some((f) => f.type === 'subscribe' && f.keys.includes('tasks')));
  const other = { id: 't9', board_id: 'b2', title: 'Elsewhere', tags: [], version: 1 };
  server.push({ type: 'changes', rows: [{ op: 'upsert', table: 'tasks', id: 't9', version: 1, row: other, keys: ['tasks'] }], cursor: 'tok70' });
  await until(() => all.getSnapshot().length === 2, 'a row of another board');
  assert.deepEqual(client.digests(['tasks', 'tasks:t1']), { tasks: membersDigest([['t1', 1], ['t9', 1]]) });
  assert.throws(() => client.query('tasks', { a: '1', b: '2' }), TypeError);
  client.close();
});
