// The rowsync browser client: a record cache with live views, optimistic writes with the
// extension's exact semantics (ops.js runs the shared vectors), a durable queue, undo and
// redo from the server's inverse ops, presence and broadcast, and resume after reconnects.

import { Connection, RowsyncError } from './connection.js';
import { applyTransaction, parseTransaction } from './ops.js';
import { defaultStorage } from './queue.js';
import { Presence } from './presence.js';

export { RowsyncError } from './connection.js';
export { memoryStorage, indexedDbStorage } from './queue.js';
export { typing } from './presence.js';

/**
 * @typedef {object} ClientOptions
 * @property {string} url                          the bridge's ws(s)://…/v1/ws
 * @property {() => Promise<string>|string} getToken  called at connect and before expiry
 * @property {import('./queue.js').Storage} [storage]  default: IndexedDB, else memory
 * @property {typeof WebSocket} [WebSocket]        injectable, for tests
 * @property {number} [undoWindowMs]               writes closer than this undo together (500)
 * @property {number} [requestTimeoutMs]
 * @property {number} [minBackoffMs]
 * @property {number} [maxBackoffMs]
 */

/** @param {ClientOptions} options */
export function createClient(options) {
  return new RowsyncClient(options);
}

/**
 * @template T
 * @typedef {object} View
 * @property {(listener: () => void) => () => void} subscribe
 * @property {() => T} getSnapshot
 */

export class RowsyncClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    this.options = options;
    this.connection = new Connection(options);
    this.storage = options.storage ?? defaultStorage();
    /** Rows as the server last said, by "table:id"; null: gone or hidden. */
    this.server = new Map();
    /** @type {import('./queue.js').PendingTx[]} */
    this.pending = [];
    /** Server rows with the pending transactions applied on top. */
    this.visible = new Map();
    /** Subscribed keys with how many views use each. */
    this.watched = new Map();
    /** @type {string|null} the resume token of the last frame received: opaque, sent back as is */
    this.cursor = null;
    this.views = new Set();
    this.waiters = new Map();
    this.undoStack = [];
    this.redoStack = [];
    this.events = new Map();
    this.presence = new Presence(this.connection);
    this.flushing = false;
    this.subscribing = 0;
    this.connection.onState((state, reason) => this.emit('state', { state, reason }));
    this.connection.onOpen(() => this.resume());
    this.connection.onPush((frame) => this.onPush(frame));
    this.ready = this.storage.load().then((txs) => {
      this.pending = txs;
      this.recompute();
      this.flush();
    });
    if (typeof window !== 'undefined') {
      window.addEventListener('online', () => this.connection.wake('the network is back'));
      window.addEventListener('offline', () => this.emit('state', { state: 'offline', reason: 'the browser is offline' }));
      document.addEventListener('visibilitychange', () => {
        if (!document.hidden) this.connection.wake('the page is visible again');
      });
    }
    this.connection.start();
  }

  get state() { return this.connection.state; }

  /**
   * Events: state, rejected ({tx, error}), skipped ({skipped}), change ({item}: an
   * upsert or remove the server pushed), revoked ({keys, reason}), event ({topic, event,
   * payload, from}: a server event, `rowsync.send` in the database).
   */
  on(event, listener) {
    if (!this.events.has(event)) this.events.set(event, new Set());
    this.events.get(event).add(listener);
    return () => this.events.get(event).delete(listener);
  }

  emit(event, payload) {
    for (const listener of this.events.get(event) ?? []) listener(payload);
  }

  close() {
    this.connection.stop();
  }

  /** A live view of one record (undefined until loaded, null when gone or hidden). */
  record(table, id) {
    const key = `${table}:${id}`;
    return this.view(key, () => this.visible.get(key));
  }

  /**
   * A live view of the rows of a scope, e.g. query('tasks', {board_id: b}), or of every row
   * of a table the user may see, query('tasks').
   * @param {string} table @param {Record<string, string>} [scope]
   * @param {(a: any, b: any) => number} [order]
   */
  query(table, scope = {}, order) {
    const entries = Object.entries(scope);
    if (entries.length > 1) throw new TypeError('query: one scope column at a time');
    const key = entries.length === 0 ? table : `${table}?${entries[0][0]}=${entries[0][1]}`;
    return this.view(key, () => {
      const rows = this.heldIn(key, this.visible).map(([, row]) => row);
      return order ? rows.sort(order) : rows;
    });
  }

  view(key, compute) {
    let snapshot = compute();
    const listeners = new Set();
    const view = {
      key,
      refresh: () => {
        const next = compute();
        if (!sameSnapshot(snapshot, next)) {
          snapshot = next;
          for (const listener of listeners) listener();
        }
      },
      subscribe: (listener) => {
        if (listeners.size === 0) {
          this.views.add(view);
          this.watch(key);
        }
        listeners.add(listener);
        return () => {
          listeners.delete(listener);
          if (listeners.size === 0) {
            this.views.delete(view);
            this.unwatch(key);
          }
        };
      },
      getSnapshot: () => snapshot,
    };
    return view;
  }

  watch(key) {
    const count = this.watched.get(key) ?? 0;
    this.watched.set(key, count + 1);
    if (count === 0 && this.state === 'open') this.follow([key], null);
  }

  unwatch(key) {
    const count = (this.watched.get(key) ?? 1) - 1;
    if (count > 0) {
      this.watched.set(key, count);
      return;
    }
    this.watched.delete(key);
    if (this.state === 'open') this.connection.request({ type: 'unsubscribe', keys: [key] }).catch(() => {});
  }

  /**
   * Subscribes to keys and loads their rows; after a reconnect, from the cursor, with a
   * digest of the rows held per scope (the server answers a differing one with `members`).
   */
  async follow(keys, cursor) {
    // While a subscribe is under way, catch-up frames and queued frames of other keys
    // interleave out of feed order: only the ack's cursor is safe to resume from.
    this.subscribing += 1;
    try {
      const resume = cursor !== null ? { cursor, held: this.digests(keys) } : {};
      const ack = await this.connection.request({ type: 'subscribe', keys, ...resume });
      this.cursor = ack.cursor;
      if (cursor === null) await this.load(keys);
    } catch (error) {
      this.emit('error', { error, keys });
    } finally {
      this.subscribing -= 1;
    }
  }

  async load(keys) {
    if (keys.length === 0 || this.state !== 'open') return;
    const reply = await this.connection.request({ type: 'fetch', keys });
    for (const record of reply.records ?? []) this.store(record.table, record.id, record.row);
    for (const scope of reply.scopes ?? []) {
      const { table } = parseScope(scope.key);
      const listed = new Set(scope.rows.map((row) => `${table}:${row.id}`));
      this.forgetScope(scope.key, (key) => !listed.has(key));
      for (const row of scope.rows) this.store(table, String(row.id), row);
    }
    this.recompute();
  }

  /** Rows of scope `key` (table?column=value, or a whole table) in `rows`, by "table:id". */
  heldIn(key, rows = this.server) {
    const { table, column, value } = parseScope(key);
    const held = [];
    for (const [k, row] of rows) {
      if (row && k.startsWith(`${table}:`) && (column === null || String(row[column]) === value)) held.push([k, row]);
    }
    return held;
  }

  /** Drops the rows of scope `key` that `drop` picks (by "table:id"). */
  forgetScope(key, drop = () => true) {
    for (const [k] of this.heldIn(key)) if (drop(k)) this.server.set(k, null);
  }

  /** Per scope or table key, the digest of the rows held in it (docs/protocol.md, "Resume"). */
  digests(keys) {
    const digests = {};
    for (const key of keys) {
      if (isRecordKey(key)) continue;
      const { table } = parseScope(key);
      digests[key] = membersDigest(this.heldIn(key).map(([k, row]) => [k.slice(table.length + 1), row.version]));
    }
    return digests;
  }

  /** Keeps the newer of what we have and what the server sent. */
  store(table, id, row) {
    const key = `${table}:${id}`;
    const known = this.server.get(key);
    if (row && known && typeof known.version === 'number' && row.version < known.version) return;
    this.server.set(key, row ?? null);
  }

  async resume() {
    this.presence.rejoin();
    const keys = [...this.watched.keys()];
    if (keys.length > 0) await this.follow(keys, this.cursor);
    this.flush();
  }

  onPush(frame) {
    switch (frame.type) {
      case 'changes':
        if (this.subscribing === 0) this.cursor = frame.cursor;
        for (const item of frame.rows) this.onItem(item);
        this.recompute();
        break;
      case 'members':
        this.onMembers(frame.key, frame.rows);
        break;
      case 'revoked':
        for (const key of frame.keys) {
          if (isRecordKey(key)) this.server.set(key, null);
          else this.forgetScope(key);
        }
        this.recompute();
        this.emit('revoked', { keys: frame.keys, reason: frame.reason });
        break;
      case 'resync':
        this.load(frame.keys).catch(() => {});
        break;
      case 'presence':
      case 'broadcast':
        this.presence.onFrame(frame);
        break;
      default:
        break;
    }
  }

  /** One row of a `changes` message: the row as this user may see it now, or its removal. */
  onItem(item) {
    switch (item.op) {
      case 'upsert':
        this.store(item.table, item.id, item.row);
        this.emit('change', { item });
        break;
      case 'remove':
        this.server.set(`${item.table}:${item.id}`, null);
        this.emit('change', { item });
        break;
      case 'event':
        this.emit('event', { topic: item.topic, event: item.event, payload: item.payload, from: item.from });
        break;
      default:
        break;
    }
  }

  /**
   * The complete list of rows this user may see in scope `key` now: drops every other row
   * held there, and loads those missing or newer than held.
   */
  onMembers(key, rows) {
    const { table } = parseScope(key);
    const versions = new Map(rows.map(([id, version]) => [`${table}:${id}`, version]));
    this.forgetScope(key, (k) => !versions.has(k));
    const stale = [...versions].filter(([k, version]) => !(this.server.get(k)?.version >= version)).map(([k]) => k);
    this.recompute();
    if (stale.length > 0) this.load(stale).catch(() => {});
  }

  /** Server rows, then every pending transaction on top, then tell the views. */
  recompute() {
    let rows = new Map(this.server);
    for (const tx of this.pending) {
      try {
        rows = applyTransaction(rows, parseTransaction({ ops: tx.ops }).ops, tx.now ?? null).rows;
      } catch {
        // The server will refuse it too; until then it is not shown.
      }
    }
    this.visible = rows;
    for (const view of this.views) view.refresh();
  }

  /**
   * Applies `ops` at once, queues them durably and sends them. Resolves with the server's
   * result; rejects (and rolls back, with a `rejected` event) when the server refuses.
   */
  write(ops) {
    return this.submit(ops, 'undo').promise;
  }

  submit(ops, record) {
    const now = new Date().toISOString();
    const parsed = parseTransaction({ ops });
    const local = applyTransaction(this.visible, parsed.ops, now);
    const tx = { id: uuid(), ops, now, created: Date.now() };
    this.pending.push(tx);
    this.recompute();
    const promise = new Promise((resolve, reject) => this.waiters.set(tx.id, { resolve, reject }));
    promise.catch(() => {});
    if (record === 'undo') this.pushUndo(this.undoStack, tx.id, local.inverse, true);
    if (record === 'redo') this.pushUndo(this.redoStack, tx.id, local.inverse, false);
    if (record === 'undo-from-redo') this.pushUndo(this.undoStack, tx.id, local.inverse, false);
    this.storage.put(tx).then(() => this.flush());
    return { id: tx.id, promise };
  }

  async flush() {
    if (this.flushing || this.state !== 'open') return;
    this.flushing = true;
    try {
      while (this.pending.length > 0 && this.state === 'open') {
        const tx = this.pending[0];
        let reply;
        try {
          reply = await this.connection.request({ type: 'write', tx: { id: tx.id, ops: tx.ops } });
        } catch (error) {
          if (error.temporary) {
            if (this.state === 'open') setTimeout(() => this.flush(), 1000);
            return;
          }
          this.finish(tx, null, error);
          continue;
        }
        this.finish(tx, reply.result, null);
      }
    } finally {
      this.flushing = false;
    }
  }

  finish(tx, result, error) {
    this.pending = this.pending.filter((t) => t.id !== tx.id);
    this.storage.remove(tx.id);
    if (result) {
      for (const r of result.rows) this.store(r.table, r.id, r.row);
      this.updateInverse(tx.id, result.inverse);
      if (result.skipped?.length) this.emit('skipped', { tx, skipped: result.skipped });
    } else {
      this.dropInverse(tx.id);
      this.emit('rejected', { tx, error });
    }
    this.recompute();
    const waiter = this.waiters.get(tx.id);
    this.waiters.delete(tx.id);
    if (waiter) result ? waiter.resolve(result) : waiter.reject(error);
  }

  pushUndo(stack, txId, inverse, group) {
    const last = stack[stack.length - 1];
    const now = Date.now();
    if (group && last && now - last.at < (this.options.undoWindowMs ?? 500)) {
      last.parts.push({ txId, inverse });
      last.at = now;
    } else {
      stack.push({ parts: [{ txId, inverse }], at: now });
    }
    if (group) this.redoStack = [];
    this.emit('history', {});
  }

  updateInverse(txId, inverse) {
    for (const entry of [...this.undoStack, ...this.redoStack]) {
      for (const part of entry.parts) if (part.txId === txId) part.inverse = inverse;
    }
  }

  dropInverse(txId) {
    for (const stack of [this.undoStack, this.redoStack]) {
      for (const entry of stack) entry.parts = entry.parts.filter((p) => p.txId !== txId);
    }
    this.undoStack = this.undoStack.filter((e) => e.parts.length > 0);
    this.redoStack = this.redoStack.filter((e) => e.parts.length > 0);
    this.emit('history', {});
  }

  get canUndo() { return this.undoStack.length > 0; }
  get canRedo() { return this.redoStack.length > 0; }

  /** Undoes the last group of writes, skipping (and reporting) fields others changed since. */
  undo() { return this.replay(this.undoStack, 'redo'); }

  redo() { return this.replay(this.redoStack, 'undo-from-redo'); }

  replay(stack, record) {
    const entry = stack.pop();
    if (!entry) return Promise.resolve(null);
    const ops = [...entry.parts].reverse().flatMap((p) => p.inverse);
    this.emit('history', {});
    if (ops.length === 0) return Promise.resolve(null);
    return this.submit(ops, record).promise;
  }

  /** A presence room: who is here, with a small state each, and ephemeral events. */
  room(name) {
    return this.presence.room(name);
  }
}

/** A scope key's table, column and value; a table key's table, with column null. */
function parseScope(key) {
  const [table, rest] = key.split('?');
  if (rest === undefined) return { table, column: null, value: null };
  const at = rest.indexOf('=');
  return { table, column: rest.slice(0, at), value: rest.slice(at + 1) };
}

function isRecordKey(key) {
  return !key.includes('?') && key.includes(':');
}

/**
 * The digest of held rows, `[[id, version], …]`, as the bridge computes it: the sum,
 * wrapping at 64 bits, of the FNV-1a hash of each `id\nversion`, in decimal.
 */
export function membersDigest(rows) {
  const mask = (1n << 64n) - 1n;
  const encoder = new TextEncoder();
  let sum = 0n;
  for (const [id, version] of rows) {
    let hash = 0xcbf29ce484222325n;
    for (const byte of encoder.encode(`${id}\n${version}`)) {
      hash ^= BigInt(byte);
      hash = (hash * 0x100000001b3n) & mask;
    }
    sum = (sum + hash) & mask;
  }
  return sum.toString();
}

function sameSnapshot(a, b) {
  if (a === b) return true;
  if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
  return a.every((row, i) => row === b[i]);
}

function uuid() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Ctrl/Cmd+Z undoes, Shift+Ctrl/Cmd+Z and Ctrl+Y redo; text fields keep their own undo. */
export function bindUndoKeys(client, target = globalThis.window) {
  const handler = (event) => {
    const editable = event.target?.closest?.('input, textarea, [contenteditable="true"]');
    if (editable || !(event.ctrlKey || event.metaKey)) return;
    const key = event.key.toLowerCase();
    if (key === 'z' && !event.shiftKey) {
      event.preventDefault();
      client.undo();
    } else if ((key === 'z' && event.shiftKey) || key === 'y') {
      event.preventDefault();
      client.redo();
    }
  };
  target.addEventListener('keydown', handler);
  return () => target.removeEventListener('keydown', handler);
}
