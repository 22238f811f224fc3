// Collaborative documents with the real npm clients: yjs and y-websocket's stock
// WebsocketProvider, against two real bridges and Postgres (started by
// tests/yjs_documents.rs, which passes their URLs and tokens). The documents are the
// example app's task descriptions.
//
// Every provider has disableBc: Node has a global BroadcastChannel, and two providers in
// one process would otherwise sync through it instead of through the bridge.

import 'fake-indexeddb/auto';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import WebSocket from 'ws';
import { IndexeddbPersistence } from 'y-indexeddb';
import { createHmac } from 'node:crypto';
import * as awarenessProtocol from 'y-protocols/awareness';
import * as encoding from 'lib0/encoding';

const BRIDGES = JSON.parse(process.env.ROWSYNC_YJS_BRIDGES ?? '[]');
const TOKENS = JSON.parse(process.env.ROWSYNC_TOKENS ?? '{}');
const HTTP = JSON.parse(process.env.ROWSYNC_HTTP ?? '[]');
const CAROL_MEMBERSHIP = process.env.ROWSYNC_CAROL_MEMBERSHIP;
const MAX_MESSAGE = Number(process.env.ROWSYNC_YJS_MAX_MESSAGE_BYTES);

const ANNOUNCE = '00000000-0000-4000-8000-000000000001';
const SIGNUP = '00000000-0000-4000-8000-000000000002';
const VENUE = '00000000-0000-4000-8000-000000000003';
const SECRET = '00000000-0000-4000-8000-000000000004';
const MILK = '00000000-0000-4000-8000-000000000005';

const providers = [];
const sockets = [];
after(() => {
  // The awareness of each document runs a timer until the document is destroyed.
  providers.forEach((p) => {
    p.destroy();
    p.doc.destroy();
  });
  sockets.forEach((ws) => ws.terminate());
});

/** A raw WebSocket on bob's behalf to a task's description, and the messages it heard. */
async function rawClient(task) {
  const ws = new WebSocket(`${BRIDGES[0]}/tasks/${task}/description?access_token=${TOKENS.bob}`);
  sockets.push(ws);
  ws.on('error', () => {});
  const heard = [];
  ws.on('message', (data) => heard.push(Buffer.from(data)));
  await new Promise((resolve) => ws.on('open', resolve));
  return { ws, heard };
}

/** A user's y-websocket client for a task's description, on bridge `bridge`. */
function open(user, task, { bridge = 0, doc = new Y.Doc(), connect = true } = {}) {
  const provider = new WebsocketProvider(BRIDGES[bridge], `tasks/${task}/description`, doc, {
    params: { access_token: TOKENS[user] },
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    maxBackoffTime: 200,
    connect,
  });
  provider.denied = [];
  const handler = provider.messageHandlers[2];
  provider.messageHandlers[2] = (encoder, decoder, p, emitSynced, type) => {
    const reason = new TextDecoder().decode(decoder.arr.subarray(decoder.pos + 2));
    provider.denied.push(reason);
    handler(encoder, decoder, p, emitSynced, type);
  };
  provider.closes = [];
  provider.on('connection-close', (event) => event && provider.closes.push(event.code));
  providers.push(provider);
  return { doc, provider, text: doc.getText('t') };
}

async function until(what, check, timeoutMs = 8000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const synced = (client) => until('sync', () => client.provider.synced);
/** The document's content: its text, map and array (a Y.Doc lists only the types it asked for). */
const content = (client) => JSON.stringify([
  client.doc.getText('t').toString(),
  client.doc.getMap('meta').toJSON(),
  client.doc.getArray('steps').toJSON(),
]);
const same = (a, b) => content(a) === content(b);

test('two clients converge, and a late joiner gets the whole document', async () => {
  const bob = open('bob', ANNOUNCE);
  const alice = open('alice', ANNOUNCE);
  await Promise.all([synced(bob), synced(alice)]);
  bob.text.insert(0, 'Hello');
  alice.text.insert(0, '[draft] ');
  bob.doc.getMap('meta').set('owner', 'bob');
  alice.doc.getArray('steps').push(['write', { done: false }]);
  await until('bob and alice to agree', () => same(bob, alice) && bob.text.toString().length === 13);
  const carol = open('carol', ANNOUNCE);
  await synced(carol);
  await until('carol, a late reader, to see it all', () => same(carol, bob));
  assert.match(carol.text.toString(), /Hello/);
  assert.deepEqual(carol.doc.getMap('meta').toJSON(), { owner: 'bob' });
});

test('two bridges converge, and a bridge that opens the document later loads it from Postgres', async () => {
  const bob = open('bob', SIGNUP, { bridge: 0 });
  const alice = open('alice', SIGNUP, { bridge: 1 });
  await Promise.all([synced(bob), synced(alice)]);
  bob.text.insert(0, 'from bridge A. ');
  alice.text.insert(0, 'from bridge B. ');
  await until('both bridges to agree', () => same(bob, alice) && bob.text.length === 30);
  bob.provider.destroy();
  alice.provider.destroy();
  // Nobody has it open now: bridge B loads what Postgres stored.
  await new Promise((r) => setTimeout(r, 300));
  const later = open('carol', SIGNUP, { bridge: 1 });
  await synced(later);
  await until('the stored document', () => later.text.length === 30);
  assert.ok(later.text.toString().includes('from bridge A. ') && later.text.toString().includes('from bridge B. '));
});

test('offline edits on both sides merge on reconnect', async () => {
  const bob = open('bob', VENUE);
  const alice = open('alice', VENUE, { bridge: 1 });
  await Promise.all([synced(bob), synced(alice)]);
  bob.text.insert(0, 'shared. ');
  await until('the shared start', () => alice.text.toString() === 'shared. ');
  bob.provider.disconnect();
  bob.text.insert(bob.text.length, 'bob offline. ');
  alice.text.insert(alice.text.length, 'alice online. ');
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(!alice.text.toString().includes('bob offline'));
  bob.provider.connect();
  await until('the offline edit to merge', () => same(bob, alice) && alice.text.toString().includes('bob offline. '));
  assert.ok(bob.text.toString().includes('alice online. '));
});

test('a user who may not read the row is refused, and learns nothing of it', async () => {
  const bob = open('bob', SECRET);
  let got = 0;
  bob.provider.on('sync', () => (got += 1));
  await until('the refusal', () => bob.provider.closes.includes(4404));
  assert.equal(got, 0);
  assert.equal(bob.text.toString(), '');
  assert.ok(bob.provider.denied.some((r) => r.includes('not found or not visible')), bob.provider.denied.join());
  // A row that does not exist reads the same.
  const ghost = open('bob', '00000000-0000-4000-8000-0000000000ff');
  await until('the same refusal', () => ghost.provider.closes.includes(4404));
  // No token, or a bad one.
  const anonymous = new WebsocketProvider(BRIDGES[0], `tasks/${ANNOUNCE}/description`, new Y.Doc(), {
    WebSocketPolyfill: WebSocket, disableBc: true, params: { access_token: 'not-a-token' },
  });
  providers.push(anonymous);
  const codes = [];
  anonymous.on('connection-close', (e) => e && codes.push(e.code));
  await until('the token refused', () => codes.includes(4401));
});

test('a reader may not edit: refused, and nobody else sees the edit', async () => {
  const bob = open('bob', MILK);
  await synced(bob);
  const milk = open('alice', MILK); // Bob's errands: alice is not a member
  await until('alice refused', () => milk.provider.closes.includes(4404));
  const carol = open('carol', ANNOUNCE);
  const alice = open('alice', ANNOUNCE);
  await Promise.all([synced(carol), synced(alice)]);
  const before = alice.text.toString();
  carol.text.insert(0, 'CAROL WAS HERE ');
  await until('the refusal', () => carol.provider.denied.some((r) => r.startsWith('read_only')));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(alice.text.toString(), before, 'not relayed');
  const fresh = open('alice', ANNOUNCE, { bridge: 1 });
  await synced(fresh);
  await until('the stored document', () => fresh.text.toString() === before);
});

test('corrupt input over a raw WebSocket is refused, and the document is unchanged', async () => {
  const watcher = open('alice', ANNOUNCE);
  await synced(watcher);
  const before = content(watcher);
  const raw = async (frames) => {
    const ws = new WebSocket(`${BRIDGES[0]}/tasks/${ANNOUNCE}/description?access_token=${TOKENS.bob}`);
    sockets.push(ws);
    ws.on('error', () => {});
    const heard = [];
    let closed = null;
    ws.on('message', (data) => heard.push(Buffer.from(data)));
    ws.on('close', (code) => (closed = code));
    await new Promise((resolve) => ws.on('open', resolve));
    await until('the server step 1', () => heard.length > 0);
    for (const frame of frames) ws.send(frame);
    return { heard, closed: () => closed, ws };
  };
  const varUint = (n) => {
    const out = [];
    while (n >= 0x80) {
      out.push((n & 0x7f) | 0x80);
      n = Math.floor(n / 128);
    }
    out.push(n);
    return Buffer.from(out);
  };
  const update = (bytes) => Buffer.concat([Buffer.from([0, 2]), varUint(bytes.length), Buffer.from(bytes)]);
  const hi = [1, 1, 7, 0, 4, 1, 1, 116, 2, 104, 105, 0];
  // One map value nested 20,000 arrays deep: Yjs's own decoder would recurse that far.
  const deep = update(Buffer.concat([
    Buffer.from([1, 1, 1, 0, 8 | 32, 1, 1, 109, 1, 107, 1]),
    Buffer.alloc(40000, Buffer.from([117, 1])),
    Buffer.from([126, 0]),
  ]));
  const garbage = await raw([
    Buffer.concat([Buffer.from([0, 2]), Buffer.from('not yjs at all')]),
    update(hi.slice(0, 11)),
    Buffer.concat([update(hi), Buffer.from([0])]),
  ]);
  await until('three refusals and the close', () => garbage.closed() === 4400);
  assert.ok(garbage.heard.filter((m) => m[0] === 2).length >= 2, 'told why');
  const nested = await raw([deep]);
  await until('the nesting refused', () => nested.heard.some((m) => m[0] === 2 && m.toString().includes('invalid_update')));
  nested.ws.close();
  const big = await raw([Buffer.alloc(MAX_MESSAGE + 1, 0)]);
  await until('the oversized frame closed', () => big.closed() === 1009);
  const flood = await raw(Array.from({ length: 500 }, () => Buffer.from([1, 1, 0])));
  await until('the flood closed', () => flood.closed() === 4102);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(content(watcher), before, 'nothing reached the watcher');
  const fresh = open('carol', ANNOUNCE, { bridge: 1 });
  await synced(fresh);
  await until('the stored document unchanged', () => content(fresh) === before);
});

test('awareness: cursors relay to others and leave with the connection; nobody moves another\'s', async () => {
  const bob = open('bob', ANNOUNCE);
  const alice = open('alice', ANNOUNCE);
  await Promise.all([synced(bob), synced(alice)]);
  bob.provider.awareness.setLocalStateField('user', { name: 'Bob', color: '#17bebb' });
  await until('bob\'s cursor at alice', () => [...alice.provider.awareness.getStates().values()].some((s) => s.user?.name === 'Bob'));
  const late = open('carol', ANNOUNCE);
  await synced(late);
  await until('a late joiner sees bob', () => [...late.provider.awareness.getStates().values()].some((s) => s.user?.name === 'Bob'));
  bob.provider.destroy();
  await until('bob gone at alice', () => ![...alice.provider.awareness.getStates().values()].some((s) => s.user?.name === 'Bob'));
});

test('losing access mid-session closes the connection', async () => {
  const carol = open('carol', ANNOUNCE);
  await synced(carol);
  const response = await fetch(`${HTTP[0]}/v1/transactions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKENS.alice}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ops: [{ type: 'delete', table: 'board_members', id: CAROL_MEMBERSHIP }] }),
  });
  assert.equal(response.status, 200, await response.text());
  await until('carol closed with 4404', () => carol.provider.closes.includes(4404));
});

test('differential: the document a bridge loads from Postgres equals Yjs\'s own merge of every update', async () => {
  let seed = 42;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  // A task of its own, so that every update of its description is in `raw`.
  const task = '00000000-0000-4000-8000-0000000000e7';
  const created = await fetch(`${HTTP[0]}/v1/transactions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKENS.alice}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ops: [{ type: 'create', table: 'tasks', id: task, value: { board_id: '00000000-0000-4000-8000-0000000000b1', title: 'differential' } }] }),
  });
  assert.equal(created.status, 200, await created.text());
  const writers = [open('alice', task, { bridge: 0 }), open('bob', task, { bridge: 1 })];
  await Promise.all(writers.map(synced));
  const raw = [];
  for (const w of writers) w.doc.on('update', (update, origin) => origin !== w.provider && raw.push(update));
  for (let step = 0; step < 120; step++) {
    const w = writers[Math.floor(random() * 2)];
    const text = w.doc.getText('t');
    const xml = w.doc.getXmlFragment('x');
    switch (Math.floor(random() * 6)) {
      // Whole code points: a lone surrogate stays in its writer's memory but reaches
      // everyone else as U+FFFD (UTF-8 cannot carry it), in Yjs with any server.
      case 0: text.insert(Math.floor(random() * (text.length + 1)), ['a', 'bc', '😀'][Math.floor(random() * 3)]); break;
      case 1: if (text.length > 2 && text.toString().codePointAt(0) < 0x10000) text.delete(0, 1); break;
      case 2: text.format(0, text.toString().startsWith('a') ? 1 : 0, { bold: random() > 0.5 ? true : null }); break;
      case 3: { const p = new Y.XmlElement('p'); p.insert(0, [new Y.XmlText(`para ${step}`)]); xml.insert(Math.floor(random() * (xml.length + 1)), [p]); break; }
      case 4: if (xml.length > 0) xml.delete(Math.floor(random() * xml.length), 1); break;
      default: w.doc.getMap('meta').set(`k${step % 5}`, { step, list: [step, null, 'x'] }); break;
    }
    if (step % 10 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  // Objects with their keys sorted: yrs, which merges on the bridge, keeps the keys of a
  // JSON object in a hash map, so their order (and only their order) can change.
  const sorted = (value) => Array.isArray(value) ? value.map(sorted)
    : value && typeof value === 'object' ? Object.fromEntries(Object.keys(value).sort().map((k) => [k, sorted(value[k])]))
    : value;
  const view = (doc) => JSON.stringify(sorted([
    doc.getText('t').toDelta(),
    doc.getXmlFragment('x').toString(),
    doc.getMap('meta').toJSON(),
  ]));
  await until('the writers to agree', () => view(writers[0].doc) === view(writers[1].doc));
  writers.forEach((w) => w.provider.destroy());
  await new Promise((r) => setTimeout(r, 300));
  const reference = new Y.Doc();
  Y.applyUpdate(reference, Y.mergeUpdates(raw));
  assert.equal(view(reference), view(writers[0].doc), 'the raw updates hold the whole document');
  for (const bridge of [0, 1]) {
    const loaded = open('alice', task, { bridge });
    await synced(loaded);
    await until(`bridge ${bridge}'s document`, () => view(loaded.doc) === view(reference));
  }
});

test('awareness crosses bridges, and leaves with its connection', async () => {
  const bob = open('bob', SIGNUP, { bridge: 0 });
  const alice = open('alice', SIGNUP, { bridge: 1 });
  await Promise.all([synced(bob), synced(alice)]);
  bob.provider.awareness.setLocalStateField('user', { name: 'Bob on A' });
  alice.provider.awareness.setLocalStateField('user', { name: 'Alice on B' });
  const names = (c) => [...c.provider.awareness.getStates().values()].map((s) => s.user?.name).filter(Boolean).sort();
  await until('each sees the other', () => names(bob).includes('Alice on B') && names(alice).includes('Bob on A'));
  bob.provider.destroy();
  await until('bob gone on bridge B', () => !names(alice).includes('Bob on A'));
});

test('another connection cannot set a client id\'s awareness, even with a later clock', async () => {
  const bob = open('bob', SIGNUP);
  const watcher = open('alice', SIGNUP);
  await Promise.all([synced(bob), synced(watcher)]);
  bob.provider.awareness.setLocalStateField('user', { name: 'Bob' });
  const id = bob.doc.clientID;
  await until('bob\'s state at the watcher', () => watcher.provider.awareness.getStates().get(id)?.user?.name === 'Bob');
  // Bob's client id, a state of mallory's, and a clock far ahead of bob's.
  const forged = new awarenessProtocol.Awareness(new Y.Doc());
  forged.clientID = id;
  forged.doc.clientID = id;
  forged.meta.set(id, { clock: 1000, lastUpdated: Date.now() });
  forged.states.set(id, { user: { name: 'Mallory' } });
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, 1);
  encoding.writeVarUint8Array(encoder, awarenessProtocol.encodeAwarenessUpdate(forged, [id]));
  const { ws, heard } = await rawClient(SIGNUP);
  ws.send(encoding.toUint8Array(encoder));
  await until('the refusal', () => heard.some((m) => m[0] === 2 && m.toString().includes('another connection')));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(watcher.provider.awareness.getStates().get(id)?.user?.name, 'Bob');
  forged.destroy();
});

test('awareness that is not JSON, or nested too deep, is refused and reaches nobody', async () => {
  const watcher = open('alice', SIGNUP);
  await synced(watcher);
  const { ws, heard } = await rawClient(SIGNUP);
  const awareness = (state) => {
    const json = Buffer.from(state);
    const entry = Buffer.concat([Buffer.from([1, 0x99, 0x02, 1]), Buffer.from([json.length & 0x7f | (json.length > 127 ? 0x80 : 0)]), json.length > 127 ? Buffer.from([json.length >> 7]) : Buffer.alloc(0), json]);
    return Buffer.concat([Buffer.from([1]), Buffer.from([entry.length & 0x7f | (entry.length > 127 ? 0x80 : 0)]), entry.length > 127 ? Buffer.from([entry.length >> 7]) : Buffer.alloc(0), entry]);
  };
  ws.send(awareness('{"user": '));
  ws.send(awareness('['.repeat(200) + ']'.repeat(200)));
  await until('both refused', () => heard.filter((m) => m[0] === 2 && m.toString().includes('awareness_invalid')).length === 2);
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(!watcher.provider.awareness.getStates().has(0x119), 'no state for client 281');
});

test('y-indexeddb: edits made offline, with the tab closed meanwhile, reach the server later', async () => {
  const first = new Y.Doc();
  const stored = new IndexeddbPersistence(`offline-${ANNOUNCE}`, first);
  await stored.whenSynced;
  const offline = open('bob', ANNOUNCE, { doc: first, connect: false });
  first.getText('t').insert(0, 'typed offline, tab closed. ');
  await new Promise((r) => setTimeout(r, 200));
  offline.provider.destroy();
  await stored.destroy();
  first.destroy();

  const second = new Y.Doc();
  const reopened = new IndexeddbPersistence(`offline-${ANNOUNCE}`, second);
  await reopened.whenSynced;
  assert.match(second.getText('t').toString(), /typed offline, tab closed/, 'kept in IndexedDB');
  const online = open('bob', ANNOUNCE, { doc: second });
  await synced(online);
  const elsewhere = open('alice', ANNOUNCE, { bridge: 1 });
  await synced(elsewhere);
  await until('the offline edit on the other bridge', () => elsewhere.text.toString().includes('typed offline, tab closed. '));
  await reopened.destroy();
});

test('an expired token closes with 4100; with a fresh one the client reconnects and syncs', async () => {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'bob', role: 'app_user', exp: Math.floor(Date.now() / 1000) + 2 })}`;
  TOKENS['bob-short'] = `${body}.${createHmac('sha256', process.env.ROWSYNC_JWT_SECRET).update(body).digest('base64url')}`;
  const bob = open('bob-short', MILK);
  await synced(bob);
  await until('the expiry close', () => bob.provider.closes.includes(4100), 10000);
  bob.provider.params.access_token = TOKENS.bob;
  await until('synced again', () => bob.provider.synced && bob.provider.wsconnected);
  bob.text.insert(0, 'after the refresh. ');
  const again = open('bob', MILK, { bridge: 1 });
  await synced(again);
  await until('the edit made after the refresh', () => again.text.toString().includes('after the refresh. '));
});

const CONTROL = process.env.ROWSYNC_CONTROL;

test('a bridge that dies before storing an edit loses nothing its writer holds', async () => {
  const writer = open('bob', VENUE, { bridge: 2 });
  await synced(writer);
  writer.text.insert(0, 'before the crash. ');
  await new Promise((r) => setTimeout(r, 200));
  // This bridge appends once an hour: the edit is only in its memory, and in bob's.
  assert.equal((await fetch(`${CONTROL}/restart-bridge`, { method: 'POST' })).status, 200);
  await until('bob reconnected', () => writer.provider.wsconnected && writer.provider.synced, 15000);
  const other = open('alice', VENUE, { bridge: 1 });
  await synced(other);
  await until('the edit, stored after all', () => other.text.toString().includes('before the crash. '), 15000);
});

test('Postgres restarting during edits loses nothing', async () => {
  const bob = open('bob', SIGNUP, { bridge: 0 });
  const alice = open('alice', SIGNUP, { bridge: 1 });
  await Promise.all([synced(bob), synced(alice)]);
  const restarted = fetch(`${CONTROL}/restart-postgres`, { method: 'POST' });
  for (let i = 0; i < 20; i++) {
    bob.text.insert(bob.text.length, ` e${i}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal((await restarted).status, 200);
  const all = Array.from({ length: 20 }, (_, i) => ` e${i}`).join('');
  await until('every edit at alice, through the feed', () => alice.text.toString().includes(all), 20000);
  bob.provider.destroy();
  alice.provider.destroy();
  await new Promise((r) => setTimeout(r, 500));
  const fresh = open('alice', SIGNUP, { bridge: 0 });
  await synced(fresh);
  await until('every edit stored', () => fresh.text.toString().includes(all), 15000);
});

test('deleting the row closes its document; undoing the delete brings the text back', async () => {
  const task = '00000000-0000-4000-8000-0000000000e8';
  const post = (body) => fetch(`${HTTP[0]}/v1/transactions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKENS.alice}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  }).then(async (r) => {
    const text = await r.text();
    assert.equal(r.status, 200, text);
    return JSON.parse(text);
  });
  await post({ ops: [{ type: 'create', table: 'tasks', id: task, value: { board_id: '00000000-0000-4000-8000-0000000000b1', title: 'doomed' } }] });
  const bob = open('bob', task, { bridge: 1 });
  await synced(bob);
  bob.text.insert(0, 'words worth keeping');
  await new Promise((r) => setTimeout(r, 300));
  const deleted = await post({ ops: [{ type: 'delete', table: 'tasks', id: task }] });
  await until('bob closed with 4404', () => bob.provider.closes.includes(4404));
  await post({ ops: deleted.inverse });
  const back = open('alice', task, { bridge: 0 });
  await synced(back);
  await until('the text, back with its row', () => back.text.toString() === 'words worth keeping');
});

test('one connection sets at most four client ids, sixteen entries a message', async () => {
  const watcher = open('alice', SIGNUP);
  await synced(watcher);
  const { ws, heard } = await rawClient(SIGNUP);
  // Twenty entries for twenty client ids (1000…1019), clock 1, state `{}`.
  const entries = Array.from({ length: 20 }, (_, i) => Buffer.from([0xe8 + i, 0x07, 1, 2, 0x7b, 0x7d]));
  const payload = Buffer.concat([Buffer.from([20]), ...entries]);
  ws.send(Buffer.concat([Buffer.from([1, payload.length]), payload]));
  await until('the refusal', () => heard.some((m) => m[0] === 2 && m.toString().includes('awareness')));
  await new Promise((r) => setTimeout(r, 200));
  const others = [...watcher.provider.awareness.getStates().keys()].filter((c) => c >= 1000 && c < 1020);
  assert.equal(others.length, 4, `client ids kept: ${others}`);
});

test('an edit past the document\'s max_bytes is refused before anyone else sees it', async () => {
  const limit = (margin) => fetch(`${CONTROL}/doc-max-bytes/${VENUE}/${margin}`, { method: 'POST' });
  assert.equal((await limit(400)).status, 200);
  try {
    const alice = open('alice', VENUE);
    const bob = open('bob', VENUE);
    await Promise.all([synced(alice), synced(bob)]);
    alice.text.insert(0, 'ok ');
    await until('a small edit, relayed', () => bob.text.toString().startsWith('ok '));
    const before = bob.text.toString();
    alice.text.insert(0, 'x'.repeat(2000));
    await until('the refusal', () => alice.provider.denied.some((r) => r.startsWith('document_too_large')));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(bob.text.toString(), before, 'not relayed');
    const fresh = open('bob', VENUE, { bridge: 1 });
    await synced(fresh);
    await until('the stored document', () => fresh.text.toString() === before);
  } finally {
    assert.equal((await limit('default')).status, 200);
  }
});
