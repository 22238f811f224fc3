// The offline cache and queue in IndexedDB (fake-indexeddb: the same API as a browser's,
// in memory): rows and pending writes survive a new client, one database per user, a
// bound on rows, revalidation against the server, and sign-out forgets everything.
import 'fake-indexeddb/auto';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, indexedDbStorage } from '../src/index.js';
import { FakeServer, until } from './fake-server.js';

const TASK = { id: 't1', version: 1, title: 'Write', status: 'todo', board_id: 'b1', tags: ['a'] };
const OTHER = { id: 't2', version: 1, title: 'Read', status: 'todo', board_id: 'b1', tags: [] };

/** An unsigned JWT for `sub`: the client only reads its sub, to name the cache. */
const token = (sub) => `x.${Buffer.from(JSON.stringify({ sub })).toString('base64url')}.y`;

function client(server, sub, extra = {}) {
  return createClient({
    url: 'ws://fake/v1/ws',
    getToken: () => token(sub),
    WebSocket: server.WebSocket,
    minBackoffMs: 1,
    maxBackoffMs: 5,
    ...extra,
  });
}

const settle = () => new Promise((r) => setTimeout(r, 300));

test('rows: written, replaced, forgotten, and bounded oldest first', async () => {
  const storage = indexedDbStorage('bounded', { maxRows: 2 });
  await storage.putRows([['tasks:a', { id: 'a' }], ['tasks:b', { id: 'b' }]]);
  await storage.putRows([['tasks:a', { id: 'a', title: 'again' }]]);
  await storage.putRows([['tasks:c', { id: 'c' }]]);
  const rows = new Map(await storage.loadRows());
  assert.deepEqual([...rows.keys()].sort(), ['tasks:a', 'tasks:c'], 'b was written longest ago');
  assert.equal(rows.get('tasks:a').title, 'again');
  await storage.putRows([['tasks:a', null]]);
  assert.deepEqual((await storage.loadRows()).map(([k]) => k), ['tasks:c']);
  await storage.put({ id: 'tx1', ops: [], created: 1 });
  await storage.clear();
  assert.deepEqual(await storage.loadRows(), []);
  assert.deepEqual(await storage.load(), []);
});

test('a client started offline shows the cached rows and the queued writes at once', async () => {
  const server = new FakeServer({ 'tasks:t1': structuredClone(TASK), 'tasks:t2': structuredClone(OTHER) });
  const first = client(server, 'bob');
  const view = first.query('tasks', { board_id: 'b1' });
  view.subscribe(() => {});
  await until(() => view.getSnapshot().length === 2, 'the scope to load');
  server.online = false;
  server.disconnect();
  await until(() => first.state === 'offline', 'offline');
  first.write([{ type: 'set', table: 'tasks', id: 't1', key: 'title', value: 'Written offline' }]).catch(() => {});
  await settle();
  first.close();

  const second = client(server, 'bob');
  const again = second.query('tasks', { board_id: 'b1' });
  again.subscribe(() => {});
  await second.ready;
  assert.notEqual(second.state, 'open');
  const titles = again.getSnapshot().map((row) => row.title).sort();
  assert.deepEqual(titles, ['Read', 'Written offline'], 'cached rows with the queued write on top');

  server.online = true;
  await until(() => server.rows.get('tasks:t1')?.title === 'Written offline', 'the queued write to sync');
  second.close();
});

test('revalidation drops cached rows that were deleted or hidden meanwhile', async () => {
  const server = new FakeServer({ 'tasks:t1': structuredClone(TASK), 'tasks:t2': structuredClone(OTHER) });
  const first = client(server, 'carol');
  const scope = first.query('tasks', { board_id: 'b1' });
  scope.subscribe(() => {});
  const record = first.record('tasks', 't2');
  record.subscribe(() => {});
  await until(() => scope.getSnapshot().length === 2, 'the scope to load');
  await settle();
  first.close();

  server.rows.set('tasks:t2', null);
  const second = client(server, 'carol');
  const cachedScope = second.query('tasks', { board_id: 'b1' });
  const cachedRecord = second.record('tasks', 't2');
  cachedScope.subscribe(() => {});
  cachedRecord.subscribe(() => {});
  await second.ready;
  assert.equal(cachedRecord.getSnapshot()?.title, 'Read', 'shown from the cache first');
  await until(() => cachedRecord.getSnapshot() === null, 'the record to be revalidated');
  await until(() => cachedScope.getSnapshot().length === 1, 'the scope to be revalidated');
  await settle();
  second.close();
  const third = client(server, 'carol');
  await third.ready;
  assert.equal(third.record('tasks', 't2').getSnapshot(), undefined, 'and gone from the cache');
  third.close();
});

test('each user has a cache of their own, and sign-out forgets it', async () => {
  const server = new FakeServer({ 'tasks:t1': structuredClone(TASK) });
  const alice = client(server, 'alice');
  const view = alice.record('tasks', 't1');
  view.subscribe(() => {});
  await until(() => view.getSnapshot()?.title === 'Write', 'the record to load');
  server.online = false;
  server.disconnect();
  alice.write([{ type: 'set', table: 'tasks', id: 't1', key: 'title', value: 'unsent' }]).catch(() => {});
  await settle();
  alice.close();

  const mallory = client(server, 'mallory');
  await mallory.ready;
  assert.equal(mallory.record('tasks', 't1').getSnapshot(), undefined, "another user does not see alice's cache");
  assert.equal(mallory.pending.length, 0, "nor her unsent writes");
  mallory.close();

  const again = client(server, 'alice');
  await again.ready;
  assert.equal(again.record('tasks', 't1').getSnapshot()?.title, 'unsent');
  await again.signOut();
  assert.equal(again.record('tasks', 't1').getSnapshot(), undefined);
  const after = client(server, 'alice');
  await after.ready;
  assert.equal(after.record('tasks', 't1').getSnapshot(), undefined, 'nothing left on the device');
  assert.equal(after.pending.length, 0);
  after.close();
  server.online = true;
  await settle();
  assert.equal(server.rows.get('tasks:t1').title, 'Write', 'the signed-out write was never sent');
});
