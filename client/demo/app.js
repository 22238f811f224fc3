// The demo: a task board for the example app. Plain modules, no build step. The token
// comes from ?token= (the main job prints links); ?ws= overrides the bridge URL.

import { bindUndoKeys, createClient, typing } from '../src/index.js';

const params = new URLSearchParams(location.search);
const token = params.get('token') ?? '';
const me = JSON.parse(atob((token.split('.')[1] ?? 'e30').replace(/-/g, '+').replace(/_/g, '/'))).sub ?? 'anonymous';
const url = params.get('ws') ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
const client = createClient({ url, getToken: () => token });
window.rowsync = client;
bindUndoKeys(client);

const $ = (id) => document.getElementById(id);
const el = (tag, { dataset = {}, ...props } = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  Object.assign(node.dataset, dataset);
  node.append(...children);
  return node;
};
const STATUSES = ['todo', 'doing', 'done'];
const LABELS = { todo: 'To do', doing: 'Doing', done: 'Done' };
const COLORS = { alice: '#e4572e', bob: '#17bebb', carol: '#76b041' };

$('me').textContent = `signed in as ${me}`;
client.on('state', ({ state, reason }) => {
  $('status').textContent = state === 'open' ? 'online' : state === 'connecting' ? 'connecting' : 'offline';
  $('status').className = `badge ${state === 'open' ? '' : state}`;
  $('status').title = reason;
});
client.on('rejected', ({ error }) => toast(`Change undone by the server: ${error.message}`));
client.on('skipped', ({ skipped }) => toast(`${skipped.length} change(s) kept: someone else edited them since`));
client.on('history', () => {
  $('undo').disabled = !client.canUndo;
  $('redo').disabled = !client.canRedo;
});
$('undo').onclick = () => client.undo();
$('redo').onclick = () => client.redo();

function toast(text) {
  $('toast').textContent = text;
  $('toast').classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => $('toast').classList.remove('show'), 4000);
}

// Boards: the ones I am a member of.
const memberships = client.query('board_members', { user_id: me });
let boardId = params.get('board');
let unsubscribeBoard = () => {};
memberships.subscribe(renderPicker);
function renderPicker() {
  const rows = [...memberships.getSnapshot()].sort((a, b) => a.board_id.localeCompare(b.board_id));
  const picker = $('board-picker');
  picker.replaceChildren(...rows.map((m) => el('option', { value: m.board_id, textContent: m.board_id.slice(-2) })));
  for (const m of rows) {
    const board = client.record('boards', m.board_id);
    const name = () => {
      const option = [...picker.options].find((o) => o.value === m.board_id);
      if (option && board.getSnapshot()) option.textContent = board.getSnapshot().name;
    };
    board.subscribe(name);
    name();
  }
  if (!boardId && rows.length) boardId = rows[0].board_id;
  if (boardId) picker.value = boardId;
  openBoard(boardId);
}
$('board-picker').onchange = (e) => { boardId = e.target.value; openBoard(boardId); };

let openedBoard = null;
function openBoard(id) {
  if (!id || id === openedBoard) return;
  openedBoard = id;
  unsubscribeBoard();
  const board = client.record('boards', id);
  const tasks = client.query('tasks', { board_id: id }, (a, b) => a.rank - b.rank || String(a.id).localeCompare(b.id));
  const room = client.room(`tasks?board_id=${id}`);
  room.join({ color: COLORS[me] ?? '#888' }).catch(() => {});
  const stops = [
    board.subscribe(() => { $('board-name').textContent = board.getSnapshot()?.name ?? 'Board'; }),
    tasks.subscribe(() => renderBoard(tasks.getSnapshot())),
    room.subscribe(() => renderPresence(room.getSnapshot())),
  ];
  unsubscribeBoard = () => { stops.forEach((s) => s()); room.leave(); };
  renderBoard(tasks.getSnapshot());
}

function renderPresence(members) {
  const users = [...new Map(members.map((m) => [m.user, m])).values()];
  $('presence').replaceChildren(...users.map((m) => el('span', {
    className: 'avatar', textContent: (m.user ?? '?')[0].toUpperCase(), title: m.user ?? '', style: `background:${m.state?.color ?? '#888'}`,
    dataset: { user: m.user ?? '' },
  })));
}

function renderBoard(tasks) {
  const pendingIds = new Set(client.pending.flatMap((tx) => tx.ops.map((op) => op.id)));
  $('columns').replaceChildren(...STATUSES.map((status) => {
    const newTask = el('input', { className: 'new-task', placeholder: '+ Add a task' });
    newTask.onkeydown = (e) => {
      if (e.key !== 'Enter' || !newTask.value.trim()) return;
      const rank = Math.max(0, ...tasks.map((t) => t.rank)) + 1;
      client.write([{ type: 'create', table: 'tasks', id: crypto.randomUUID(), value: { board_id: openedBoard, title: newTask.value.trim(), status, rank } }]).catch(() => {});
      newTask.value = '';
    };
    return el('div', { className: 'column', dataset: { status } },
      el('h2', { textContent: LABELS[status] }),
      ...tasks.filter((t) => t.status === status).map((t) => card(t, pendingIds.has(t.id))),
      newTask);
  }));
}

function card(task, pending) {
  const title = el('input', { className: 'title', value: task.title, ariaLabel: 'title' });
  const save = () => {
    if (title.value !== task.title) {
      client.write([{ type: 'set', table: 'tasks', id: task.id, key: 'title', value: title.value, version: task.version }]).catch(() => {});
    }
  };
  title.onkeydown = (e) => { if (e.key === 'Enter') title.blur(); };
  title.onblur = save;
  const move = (delta) => {
    const next = STATUSES[STATUSES.indexOf(task.status) + delta];
    if (next) client.write([{ type: 'set', table: 'tasks', id: task.id, key: 'status', value: next }, { type: 'set-now', table: 'tasks', id: task.id, key: 'updated_at' }]).catch(() => {});
  };
  const tagInput = el('input', { placeholder: '+tag', size: 5, className: 'tag-input' });
  tagInput.onkeydown = (e) => {
    if (e.key === 'Enter' && tagInput.value.trim()) {
      client.write([{ type: 'listInsert', table: 'tasks', id: task.id, key: 'tags', value: tagInput.value.trim() }]).catch(() => {});
      tagInput.value = '';
    }
  };
  const tags = (task.tags ?? []).map((tag) => {
    const chip = el('span', { className: 'tag', textContent: tag, title: 'remove' });
    chip.onclick = () => client.write([{ type: 'listRemove', table: 'tasks', id: task.id, key: 'tags', value: tag }]).catch(() => {});
    return chip;
  });
  const left = el('button', { textContent: '←', className: 'left', disabled: task.status === 'todo' });
  const right = el('button', { textContent: '→', className: 'right', disabled: task.status === 'done' });
  const talk = el('button', { textContent: 'Comments', className: 'talk' });
  left.onclick = () => move(-1);
  right.onclick = () => move(1);
  talk.onclick = () => openThread(task);
  return el('div', { className: `card${pending ? ' pending' : ''}`, dataset: { id: task.id } },
    title, el('div', { className: 'tags' }, ...tags, tagInput), el('div', { className: 'actions' }, left, right, talk));
}

let closeThread = () => {};
function openThread(task) {
  closeThread();
  $('thread').hidden = false;
  $('thread-title').textContent = task.title;
  const comments = client.query('comments', { task_id: task.id }, (a, b) => String(a.created_at).localeCompare(String(b.created_at)));
  const room = client.room(`comments?task_id=${task.id}`);
  room.join({}).catch(() => {});
  const typers = typing(room);
  const render = () => {
    $('comments').replaceChildren(...comments.getSnapshot().map((c) => el('li', {}, el('b', { textContent: `${c.author_id}: ` }), c.body)));
  };
  const renderTyping = () => {
    const who = typers.getSnapshot().filter((u) => u !== me);
    $('typing').textContent = who.length ? `${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} typing…` : '';
  };
  const stops = [comments.subscribe(render), typers.subscribe(renderTyping)];
  render();
  $('comment-input').oninput = () => typers.start();
  $('comment-form').onsubmit = (e) => {
    e.preventDefault();
    const body = $('comment-input').value.trim();
    if (!body) return;
    client.write([{ type: 'create', table: 'comments', id: crypto.randomUUID(), value: { task_id: task.id, author_id: me, body } }]).catch(() => {});
    $('comment-input').value = '';
    typers.stop();
  };
  closeThread = () => { stops.forEach((s) => s()); room.leave(); };
}
