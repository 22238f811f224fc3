// The React board in a real browser: two users collaborating through a real bridge and
// Postgres.
// Started by the Rust test suite (tests/browser.rs), which provides the bridge and tokens:
// ROWSYNC_BRIDGE, ROWSYNC_TOKENS (JSON by user), ROWSYNC_SCREENSHOTS (a folder).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { launch } from './browser.mjs';

const BRIDGE = process.env.ROWSYNC_BRIDGE;
const TOKENS = JSON.parse(process.env.ROWSYNC_TOKENS ?? '{}');
const SHOTS = process.env.ROWSYNC_SCREENSHOTS;
const DIST = process.env.ROWSYNC_BOARD_DIST;
const ORIGIN_PORT = Number(process.env.ROWSYNC_ORIGIN_PORT);
/** The bound we promise for an edit to reach the other page. */
const SYNC_BOUND_MS = 3000;

const ANNOUNCE = '00000000-0000-4000-8000-000000000001';
const SIGNUP = '00000000-0000-4000-8000-000000000002';
const VENUE = '00000000-0000-4000-8000-000000000003';
const SECRET = '00000000-0000-4000-8000-000000000004';
const LAUNCH = '00000000-0000-4000-8000-0000000000b1';

let browser;
const pages = {};

before(async () => {
  assert.ok(BRIDGE, 'ROWSYNC_BRIDGE is set by tests/browser.rs');
  browser = await launch();
  pages.alice = await open('alice');
  pages.bob = await open('bob');
});

after(() => browser?.close());

async function open(user, query = '') {
  const page = await browser.newPage();
  await page.goto(`${BRIDGE}/demo/?token=${TOKENS[user]}&board=${LAUNCH}${query}`);
  await page.waitFor(`document.querySelector('#status').textContent === 'online'`, `${user} online`);
  await page.waitFor(`document.querySelectorAll('.card').length > 0`, `${user}'s board`);
  return page;
}

const titleOf = (id) => `document.querySelector('.card[data-id="${id}"] input.title')?.value`;
const statusColumnOf = (id) => `document.querySelector('.card[data-id="${id}"]')?.closest('.column')?.dataset.status`;

/** Types a title and leaves the field, as a user does (React listens to focusout). */
function setTitle(page, id, title) {
  return page.eval(`(() => {
    const input = document.querySelector('.card[data-id="${id}"] input.title');
    input.value = ${JSON.stringify(title)};
    input.dispatchEvent(new FocusEvent('focusout', { bubbles: true }));
    return true;
  })()`);
}

/**
 * Cuts the page off: the browser's network emulation (which does not stop WebSockets to
 * this machine) and the client's connection, stopped as a lost network would.
 */
async function goOffline(page) {
  await page.offline(true);
  await page.eval(`(window.rowsync.connection.stop(), true)`);
  await page.waitFor(`document.querySelector('#status').textContent !== 'online'`, 'the offline badge');
}

async function goOnline(page) {
  await page.offline(false);
  await page.eval(`(window.rowsync.connection.start(), true)`);
}

const click = (page, selector) => page.eval(`(document.querySelector(${JSON.stringify(selector)}).click(), true)`);

async function serverRow(user, id) {
  const response = await fetch(`${BRIDGE}/v1/records`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKENS[user]}`, 'content-type': 'application/json' },
    body: JSON.stringify([`tasks:${id}`]),
  });
  return (await response.json()).rows[0].row;
}

async function shot(page, name) {
  if (SHOTS) await page.screenshot(join(SHOTS, `${name}.png`));
}

test('two users see each other\'s edits within the bound', async () => {
  const started = Date.now();
  await setTitle(pages.bob, ANNOUNCE, 'Write the launch post');
  assert.equal(await pages.bob.eval(titleOf(ANNOUNCE)), 'Write the launch post', 'applied at once where it was made');
  await pages.alice.waitFor(`${titleOf(ANNOUNCE)} === 'Write the launch post'`, 'bob\'s edit in alice\'s page', SYNC_BOUND_MS);
  const elapsed = Date.now() - started;
  console.log(`edit reached the other page in ${elapsed} ms (bound ${SYNC_BOUND_MS} ms)`);
  const moved = Date.now();
  await click(pages.alice, `.card[data-id="${SIGNUP}"] button.right`);
  await pages.bob.waitFor(`${statusColumnOf(SIGNUP)} === 'done'`, 'alice\'s move in bob\'s page', SYNC_BOUND_MS);
  console.log(`move reached the other page in ${Date.now() - moved} ms (bound ${SYNC_BOUND_MS} ms)`);
  await shot(pages.alice, 'board-alice');
  await shot(pages.bob, 'board-bob');
});

test('presence shows who is here, typing shows in the other page', async () => {
  await pages.alice.waitFor(`!!document.querySelector('#presence .avatar[data-user="bob"]')`, 'bob\'s avatar for alice');
  await pages.bob.waitFor(`!!document.querySelector('#presence .avatar[data-user="alice"]')`, 'alice\'s avatar for bob');
  await click(pages.alice, `.card[data-id="${VENUE}"] button.talk`);
  await click(pages.bob, `.card[data-id="${VENUE}"] button.talk`);
  // Joining the thread's room goes through Postgres when bridges differ; here it is one.
  await pages.bob.waitFor(`window.rowsync.room('comments?task_id=${VENUE}').joined`, 'bob in the thread');
  await pages.alice.waitFor(`window.rowsync.room('comments?task_id=${VENUE}').getSnapshot().length === 2`, 'both in the thread');
  await pages.alice.eval(`(() => { const i = document.querySelector('#comment-input'); i.value = 'Booked for Friday'; i.dispatchEvent(new Event('input', { bubbles: true })); return true; })()`);
  await pages.bob.waitFor(`document.querySelector('#typing').textContent.includes('alice is typing')`, 'alice typing, in bob\'s page');
  await shot(pages.bob, 'typing');
  await pages.alice.eval(`(document.querySelector('#comment-form').requestSubmit(), true)`);
  await pages.bob.waitFor(`document.querySelector('#comments').textContent.includes('Booked for Friday')`, 'alice\'s comment in bob\'s page');
  await pages.bob.waitFor(`document.querySelector('#typing').textContent === ''`, 'typing to stop');
});

test('an edit made offline survives a reload and syncs when back online', async () => {
  const bob = pages.bob;
  await goOffline(bob);
  await setTitle(bob, VENUE, 'Venue (edited offline)');
  assert.equal(await bob.eval(titleOf(VENUE)), 'Venue (edited offline)');
  await shot(bob, 'offline');
  assert.equal((await serverRow('bob', VENUE)).title, 'Book the venue', 'not on the server yet');
  // Reload while the bridge stays out of reach: the write waits in IndexedDB.
  await bob.offline(false);
  await bob.goto(`${BRIDGE}/demo/?token=${TOKENS.bob}&board=${LAUNCH}&ws=ws://127.0.0.1:9/v1/ws`);
  await bob.waitFor(`window.rowsync.ready.then(() => window.rowsync.pending.length === 1)`, 'the queued write after the reload');
  assert.equal((await serverRow('bob', VENUE)).title, 'Book the venue');
  // Back online: the queued write goes through.
  await bob.goto(`${BRIDGE}/demo/?token=${TOKENS.bob}&board=${LAUNCH}`);
  await bob.waitFor(`document.querySelector('#status').textContent === 'online'`, 'bob online again');
  const deadline = Date.now() + 10000;
  while ((await serverRow('bob', VENUE)).title !== 'Venue (edited offline)') {
    assert.ok(Date.now() < deadline, 'the offline edit reached the server');
    await new Promise((r) => setTimeout(r, 50));
  }
  await pages.alice.waitFor(`${titleOf(VENUE)} === 'Venue (edited offline)'`, 'the offline edit in alice\'s page', SYNC_BOUND_MS);
});

test('a conflict rolls back visibly', async () => {
  const bob = pages.bob;
  await bob.waitFor(`${titleOf(ANNOUNCE)} && ${titleOf(SIGNUP)}`, 'bob\'s board');
  await goOffline(bob);
  await setTitle(bob, ANNOUNCE, 'Bob\'s stale title');
  await setTitle(pages.alice, ANNOUNCE, 'Alice\'s newer title');
  await pages.alice.waitFor(`window.rowsync.pending.length === 0`, 'alice\'s write acknowledged');
  await goOnline(bob);
  await bob.waitFor(`document.querySelector('#toast').textContent.includes('undone by the server')`, 'the rollback notice');
  await bob.waitFor(`${titleOf(ANNOUNCE)} === "Alice's newer title"`, 'bob\'s page showing the server\'s title');
  await shot(bob, 'conflict');
});

test('undo in one page does not clobber the other user\'s later edit', async () => {
  const alice = pages.alice;
  await setTitle(alice, SIGNUP, 'Signup, fixed');
  await click(alice, `.card[data-id="${SIGNUP}"] button.left`);
  await alice.waitFor(`window.rowsync.pending.length === 0 && ${statusColumnOf(SIGNUP)} === 'doing'`, 'alice\'s two edits acknowledged');
  await pages.bob.waitFor(`${statusColumnOf(SIGNUP)} === 'doing'`, 'alice\'s move in bob\'s page');
  await click(pages.bob, `.card[data-id="${SIGNUP}"] button.left`);
  await alice.waitFor(`${statusColumnOf(SIGNUP)} === 'todo'`, 'bob\'s later move in alice\'s page');
  await alice.eval(`(window.dispatchEvent(new KeyboardEvent('keydown', {key: 'z', ctrlKey: true})), true)`);
  await alice.waitFor(`${titleOf(SIGNUP)} === 'Fix the signup form'`, 'alice\'s title undone');
  await alice.waitFor(`document.querySelector('#toast').textContent.includes('someone else edited')`, 'the skipped notice');
  assert.equal(await alice.eval(statusColumnOf(SIGNUP)), 'todo', 'bob\'s later move survives the undo');
  await pages.bob.waitFor(`${titleOf(SIGNUP)} === 'Fix the signup form' && ${statusColumnOf(SIGNUP)} === 'todo'`, 'the undo, in bob\'s page');
  await shot(alice, 'undo');
});

test('a user never sees another user\'s private board', async () => {
  const bob = pages.bob;
  const boards = await bob.eval(`[...document.querySelectorAll('#board-picker option')].map((o) => o.textContent)`);
  assert.ok(!boards.includes('Alice\'s notes'), `bob's boards: ${boards}`);
  assert.ok(!(await bob.eval(`document.body.textContent.includes('secret plan')`)));
  const fetched = await bob.eval(`window.rowsync.connection.request({type: 'fetch', keys: ['tasks:${SECRET}']}).then((r) => r.records[0].row)`);
  assert.equal(fetched, null);
  const alice = await pages.alice.eval(`[...document.querySelectorAll('#board-picker option')].map((o) => o.textContent)`);
  assert.ok(alice.includes('Alice\'s notes'), `alice's boards: ${alice}`);
  assert.deepEqual(pages.alice.consoleErrors, []);
  assert.deepEqual(pages.bob.consoleErrors, []);
});

/** Records in `page` every frame the server pushes, as JSON text, and every fetch the client sends. */
function record(page) {
  return page.eval(`(() => {
    const client = window.rowsync;
    window.received = [];
    window.fetches = 0;
    client.connection.onPush((frame) => window.received.push(JSON.stringify(frame)));
    const request = client.connection.request.bind(client.connection);
    client.connection.request = (frame) => { if (frame.type === 'fetch') window.fetches += 1; return request(frame); };
    return true;
  })()`);
}

test('edits arrive with their rows: no refetch', async () => {
  await record(pages.bob);
  await setTitle(pages.alice, VENUE, 'Book the big venue');
  await pages.bob.waitFor(`${titleOf(VENUE)} === 'Book the big venue'`, 'alice\'s edit in bob\'s page', SYNC_BOUND_MS);
  assert.equal(await pages.bob.eval('window.fetches'), 0, 'bob\'s page fetched nothing');
});

test('a private note on a shared board never reaches another member\'s page', async () => {
  await record(pages.bob);
  const note = '00000000-0000-4000-8000-0000000000d7';
  await pages.alice.eval(`window.rowsync.write([{ type: 'create', table: 'tasks', id: '${note}', value: { board_id: '${LAUNCH}', title: 'only for alice', private_to: 'alice', rank: 9 } }])`);
  await pages.alice.waitFor(`${titleOf(note)} === 'only for alice'`, 'the note in alice\'s page');
  await setTitle(pages.alice, note, 'still only for alice');
  await pages.alice.eval(`window.rowsync.write([{ type: 'delete', table: 'tasks', id: '${note}' }])`);
  await setTitle(pages.alice, ANNOUNCE, 'after the private note');
  await pages.bob.waitFor(`${titleOf(ANNOUNCE)} === 'after the private note'`, 'the marker in bob\'s page', SYNC_BOUND_MS);
  const received = await pages.bob.eval('window.received');
  assert.ok(received.length > 0);
  for (const frame of received) assert.ok(!frame.includes(note), `bob received ${frame}`);
});

test('a member removed from a board sees it empty', async () => {
  const carol = await open('carol');
  // Loaded into alice's client first: a write applies to the rows the client holds.
  await pages.alice.eval(`window.rowsync.load(['board_members?board_id=${LAUNCH}']).then(() => true)`);
  const membership = await pages.alice.eval(`[...window.rowsync.server.values()].find((r) => r?.user_id === 'carol' && r.board_id === '${LAUNCH}')`);
  assert.ok(membership, 'carol is a member');
  await pages.alice.eval(`window.rowsync.write([{ type: 'delete', table: 'board_members', id: '${membership.id}' }])`);
  await carol.waitFor(`document.querySelectorAll('.card').length === 0`, 'carol\'s board empties', SYNC_BOUND_MS);
  assert.ok(!(await carol.eval(`document.body.textContent.includes('Write')`)));
  await shot(carol, 'revoked');
  assert.deepEqual(carol.consoleErrors, []);
});

test('two people reacting at once both count', async () => {
  const COMMENT = '00000000-0000-4000-8000-0000000000c1';
  const thumbs = (page) => page.eval(`document.querySelector('#comments li[data-id="${COMMENT}"] .reaction[data-emoji="👍"]')?.dataset.count`);
  await click(pages.alice, `.card[data-id="${SIGNUP}"] button.talk`);
  await click(pages.bob, `.card[data-id="${SIGNUP}"] button.talk`);
  for (const page of [pages.alice, pages.bob]) {
    await page.waitFor(`!!document.querySelector('#comments li[data-id="${COMMENT}"]')`, 'the comment');
  }
  const button = `#comments li[data-id="${COMMENT}"] .reaction[data-emoji="👍"]`;
  await Promise.all([click(pages.alice, button), click(pages.bob, button)]);
  for (const page of [pages.alice, pages.bob]) {
    await page.waitFor(`document.querySelector('${button}').dataset.count === '2'`, 'both reactions', SYNC_BOUND_MS);
  }
  assert.equal(await thumbs(pages.alice), '2');
  await shot(pages.bob, 'reactions');
  await click(pages.bob, button);
  await pages.alice.waitFor(`document.querySelector('${button}').dataset.count === '1'`, 'bob takes his back', SYNC_BOUND_MS);
});

test('a card renders again only when its own task changes', async () => {
  const renders = (page) => page.eval(`Object.fromEntries([...document.querySelectorAll('.card')].map((c) => [c.dataset.id, Number(c.dataset.renders)]))`);
  const before = await renders(pages.alice);
  await setTitle(pages.bob, ANNOUNCE, 'Rendered once more');
  await pages.alice.waitFor(`${titleOf(ANNOUNCE)} === 'Rendered once more'`, 'the edit in alice\'s page', SYNC_BOUND_MS);
  const after = await renders(pages.alice);
  assert.ok(after[ANNOUNCE] > before[ANNOUNCE], 'the edited card rendered');
  for (const id of Object.keys(before).filter((id) => id !== ANNOUNCE)) {
    assert.equal(after[id], before[id], `card ${id} rendered again for another task's change`);
  }
});

/** Serves the built board on an origin of its own, to take it away later. */
async function serveBoard() {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
  const server = createServer(async (request, response) => {
    const path = normalize(decodeURIComponent(new URL(request.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    const file = join(DIST, path.endsWith('/') ? `${path}index.html` : path);
    try {
      const body = await readFile(file);
      response.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(ORIGIN_PORT, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${ORIGIN_PORT}`,
    stop: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(resolve);
    }),
  };
}

const WS = `${BRIDGE?.replace(/^http/, 'ws')}/v1/ws`;
const UNREACHABLE = 'ws://127.0.0.1:9/v1/ws';
/** The client has written every row it holds to IndexedDB. */
const cached = `window.rowsync.unsaved.size === 0 && window.rowsync.saveTimer === undefined`;

test('the board opens with no network at all, and an edit made then syncs', async () => {
  const origin = await serveBoard();
  const page = await browser.newPage();
  const at = (ws) => `${origin.url}/demo/?token=${TOKENS.bob}&board=${LAUNCH}&ws=${ws}`;
  await page.goto(at(WS));
  await page.waitFor(`document.querySelector('#status').textContent === 'online'`, 'online');
  await page.waitFor(`document.querySelectorAll('.card').length > 0 && ${cached}`, 'the board, cached');
  await page.waitFor(`navigator.serviceWorker.ready.then(() => !!navigator.serviceWorker.controller)`, 'the service worker');
  const titles = await page.eval(`[...document.querySelectorAll('.card input.title')].map((i) => i.value).sort()`);

  // No server for the page, none for the data.
  await origin.stop();
  assert.equal(await fetch(`${origin.url}/demo/`).then(() => 'served', () => 'unreachable'), 'unreachable');
  await page.goto(at(UNREACHABLE));
  await page.waitFor(`document.querySelectorAll('.card').length === ${titles.length}`, 'the board from the cache');
  assert.deepEqual(await page.eval(`[...document.querySelectorAll('.card input.title')].map((i) => i.value).sort()`), titles);
  // Between attempts the badge says offline, during one connecting: never online.
  assert.notEqual(await page.eval(`document.querySelector('#status').textContent`), 'online');
  await setTitle(page, VENUE, 'Edited with no network');
  await page.waitFor(`window.rowsync.pending.length === 1`, 'the queued edit');
  await shot(page, 'offline-start');

  // The page still comes from the service worker; the bridge is back.
  await page.goto(at(WS));
  await page.waitFor(`document.querySelector('#status').textContent === 'online'`, 'online again');
  const deadline = Date.now() + 10000;
  while ((await serverRow('bob', VENUE)).title !== 'Edited with no network') {
    assert.ok(Date.now() < deadline, 'the edit made offline reached the server');
    await new Promise((r) => setTimeout(r, 50));
  }
  await pages.alice.waitFor(`${titleOf(VENUE)} === 'Edited with no network'`, 'and alice\'s page', SYNC_BOUND_MS);
  assert.deepEqual(page.consoleErrors, []);
});

test('a row hidden from the user while offline is gone after revalidation', async () => {
  const NOTE = '00000000-0000-4000-8000-0000000000d8';
  await pages.alice.eval(`window.rowsync.write([{ type: 'create', table: 'tasks', id: '${NOTE}', value: { board_id: '${LAUNCH}', title: 'shared, for now', rank: 20 } }])`);
  const bob = await open('bob');
  await bob.waitFor(`${titleOf(NOTE)} === 'shared, for now' && ${cached}`, 'the task, cached in bob\'s page');
  await goOffline(bob);
  await pages.alice.eval(`window.rowsync.write([{ type: 'set', table: 'tasks', id: '${NOTE}', key: 'private_to', value: 'alice' }])`);
  // Still cut off from the bridge, the cache shows what bob saw.
  await bob.offline(false);
  await bob.goto(`${BRIDGE}/demo/?token=${TOKENS.bob}&board=${LAUNCH}&ws=${UNREACHABLE}`);
  await bob.waitFor(`${titleOf(NOTE)} === 'shared, for now'`, 'the cached task while offline');
  // Online: revalidation takes it away, from the page and from the cache.
  await bob.goto(`${BRIDGE}/demo/?token=${TOKENS.bob}&board=${LAUNCH}`);
  await bob.waitFor(`document.querySelector('#status').textContent === 'online'`, 'online');
  await bob.waitFor(`!document.querySelector('.card[data-id="${NOTE}"]')`, 'the hidden task gone', SYNC_BOUND_MS);
  await bob.waitFor(`${cached} && window.rowsync.storage.loadRows().then((rows) => !rows.some(([key]) => key.endsWith('${NOTE}')))`, 'and gone from the cache');
  assert.ok(!(await bob.eval(`document.body.textContent.includes('shared, for now')`)));
  await shot(bob, 'revalidated');
});

/** Focuses the end of a task's description editor. */
const focusDescription = (page, id) => page.eval(`(() => {
  const { view } = window.descriptions['${id}'];
  view.focus();
  view.dispatch({ selection: { anchor: view.state.doc.length } });
  return true;
})()`);
const description = (id) => `window.descriptions['${id}']?.view.state.doc.toString()`;

test('two browser contexts co-edit a description, each seeing the other\'s cursor and name', async () => {
  const [alice, bob] = [pages.alice, pages.bob];
  await click(alice, `.card[data-id="${ANNOUNCE}"] button.talk`);
  await click(bob, `.card[data-id="${ANNOUNCE}"] button.talk`);
  for (const page of [alice, bob]) {
    await page.waitFor(`document.querySelector('#description')?.dataset.status === 'connected'`, 'the description connected');
  }
  await focusDescription(alice, ANNOUNCE);
  await alice.type('Alice writes the intro. ');
  await focusDescription(bob, ANNOUNCE);
  await bob.type('Bob adds the dates. ');
  for (const page of [alice, bob]) {
    await page.waitFor(`${description(ANNOUNCE)}.includes('Alice writes the intro. ') && ${description(ANNOUNCE)}.includes('Bob adds the dates. ')`, 'both edits', SYNC_BOUND_MS);
  }
  assert.equal(await alice.eval(description(ANNOUNCE)), await bob.eval(description(ANNOUNCE)));
  await alice.waitFor(`[...document.querySelectorAll('#description .cm-ySelectionInfo')].some((e) => e.textContent === 'bob')`, 'bob\'s cursor, named', SYNC_BOUND_MS);
  await bob.waitFor(`[...document.querySelectorAll('#description .cm-ySelectionInfo')].some((e) => e.textContent === 'alice')`, 'alice\'s cursor, named', SYNC_BOUND_MS);
  await shot(alice, 'description-alice');
  await shot(bob, 'description-bob');
});

test('a description edited offline survives a reload and syncs on return', async () => {
  const bob = pages.bob;
  await bob.eval(`(window.descriptions['${ANNOUNCE}'].provider.disconnect(), true)`);
  await focusDescription(bob, ANNOUNCE);
  await bob.type('Written offline. ');
  await bob.waitFor(`document.querySelector('#description').dataset.status !== 'connected'`, 'offline');
  // Reload with the bridge out of reach: the text comes from y-indexeddb.
  await bob.goto(`${BRIDGE}/demo/?token=${TOKENS.bob}&board=${LAUNCH}&ws=ws://127.0.0.1:9/v1/ws`);
  await bob.waitFor(`document.querySelectorAll('.card').length > 0`, 'the board, from the cache');
  await click(bob, `.card[data-id="${ANNOUNCE}"] button.talk`);
  await bob.waitFor(`${description(ANNOUNCE)}?.includes('Written offline. ')`, 'the offline text after the reload');
  assert.ok(!(await pages.alice.eval(`${description(ANNOUNCE)}.includes('Written offline. ')`)), 'not sent yet');
  await shot(bob, 'description-offline');
  // Back online: the provider's first exchange sends what the bridge lacks.
  await bob.goto(`${BRIDGE}/demo/?token=${TOKENS.bob}&board=${LAUNCH}`);
  await bob.waitFor(`document.querySelectorAll('.card').length > 0`, 'the board');
  await click(bob, `.card[data-id="${ANNOUNCE}"] button.talk`);
  await pages.alice.waitFor(`${description(ANNOUNCE)}.includes('Written offline. ')`, 'the offline text at alice', SYNC_BOUND_MS);
});

test('a viewer reads the description live but cannot change it', async () => {
  // Carol was removed from the board above: alice makes her a viewer again.
  await pages.alice.eval(`window.rowsync.write([{ type: 'create', table: 'board_members', id: crypto.randomUUID(), value: { board_id: '${LAUNCH}', user_id: 'carol', role: 'viewer' } }])`);
  const carol = await open('carol');
  await click(carol, `.card[data-id="${SIGNUP}"] button.talk`);
  await click(pages.alice, `.card[data-id="${SIGNUP}"] button.talk`);
  await carol.waitFor(`document.querySelector('#description')?.dataset.status === 'connected'`, 'carol connected');
  await pages.alice.waitFor(`document.querySelector('#description')?.dataset.status === 'connected'`, 'alice connected');
  await focusDescription(pages.alice, SIGNUP);
  await pages.alice.type('Steps to reproduce. ');
  await carol.waitFor(`${description(SIGNUP)}.includes('Steps to reproduce. ')`, 'alice\'s text at carol', SYNC_BOUND_MS);
  await focusDescription(carol, SIGNUP);
  await carol.type('carol was here');
  await carol.waitFor(`document.querySelector('#description .doc-status').textContent === 'read only'`, 'the read-only notice');
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(!(await pages.alice.eval(`${description(SIGNUP)}.includes('carol was here')`)), 'not relayed');
  assert.deepEqual(carol.consoleErrors, []);
});
