// The rowsync browser client: a record cache with live views, optimistic writes with the
// extension's exact semantics (ops.js runs the shared vectors), a durable queue, undo and
// redo from the server's inverse ops, presence and broadcast, and resume after reconnects.

import { Connection, RowsyncError } from './connection.js';
import { applyTransaction, deepEqual, parseTransaction } from './ops.js';
import { defaultStorage, DEFAULT_CACHE_ROWS } from './storage.js';
import { Presence } from './presence.js';

export { RowsyncError } from './connection.js';
export { memoryStorage, indexedDbStorage, DEFAULT_CACHE_ROWS } from './storage.js';
export { typing } from './presence.js';

/** @typedef {import('./ops.js').Row} Row */
/** @typedef {import('./ops.js').Json} Json */
/** @typedef {import('./ops.js').WriteOp} WriteOp */
/** @typedef {import('./ops.js').Position} Position */
/** @typedef {import('./ops.js').KeyInput} KeyInput */
/** @typedef {import('./storage.js').Storage} Storage */
/** @typedef {import('./storage.js').PendingTx} PendingTx */
/** @typedef {import('./connection.js').ConnectionState} ConnectionState */
/** @typedef {import('./presence.js').Room} Room */

/**
 * @typedef {object} ClientOptions
 * @property {string} url                          the bridge's ws(s)://…/v1/ws
 * @property {() => Promise<string>|string} getToken  called at connect and before expiry
 * @property {string} [user]  who is signed in; names the offline cache (default: the token's `sub`)
 * @property {Storage} [storage]  default: IndexedDB database `rowsync:<user>`, else memory
 * @property {number} [cacheMaxRows]  rows the default storage keeps for offline starts (10,000)
 * @property {typeof WebSocket} [WebSocket]        injectable, for tests
 * @property {number} [undoWindowMs]               writes closer than this undo together (500)
 * @property {number} [requestTimeoutMs]
 * @property {number} [minBackoffMs]
 * @property {number} [maxBackoffMs]
 */

/**
 * What `write` resolves with: the server's result (docs/sql/results-and-undo.md).
 * @typedef {object} TransactionResult
 * @property {string | null} id
 * @property {{table: string, id: string, version: number | null, row: Row | null}[]} rows
 * @property {WriteOp[]} inverse
 * @property {{index: number, table: string, id: string, key?: KeyInput, reason: 'changed' | 'gone' | 'exists'}[]} skipped
 * @property {number | null} cursor
 */

/**
 * A row the server pushed: `upsert`, with the row as this user may see it, or `remove`.
 * @typedef {{op: 'upsert', table: string, id: string, version: number, row: Row}
 *   | {op: 'remove', table: string, id: string}} ChangeItem
 */

/**
 * The client's events and what each listener receives.
 * @typedef {object} ClientEvents
 * @property {{state: ConnectionState | 'offline', reason: string}} state
 * @property {{tx: PendingTx, error: RowsyncError}} rejected  the server refused a write; it was rolled back
 * @property {{tx: PendingTx, skipped: TransactionResult['skipped']}} skipped  guarded ops (undo) left alone
 * @property {{item: ChangeItem}} change
 * @property {{keys: string[], reason?: string}} revoked  keys this user may no longer follow; their rows were dropped
 * @property {{topic: string, event: string, payload: Json, from: string | null}} event  a server event (`rowsync.send`)
 * @property {{}} history  the undo or redo stack changed
 * @property {{error: unknown, keys: string[]}} error  a subscription failed
 */

/**
 * One step of undo or redo: the inverses of the writes made within `undoWindowMs`.
 * @typedef {{parts: {txId: string, inverse: WriteOp[]}[], at: number}} HistoryEntry
 */

/**
 * A live value: `subscribe` and `getSnapshot`, as React's useSyncExternalStore takes them.
 * The snapshot is the same object until the value changes.
 * @template T
 * @typedef {object} View
 * @property {(listener: () => void) => () => void} subscribe
 * @property {() => T} getSnapshot
 */

/**
 * @param {ClientOptions} options
 * @returns {RowsyncClient}
 */
export function createClient(options) {
  return new RowsyncClient(options);
}

/** How long changed rows wait before they are written to the cache, so that a burst is one write. */
const CACHE_WRITE_DELAY_MS = 200;

export class RowsyncClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    this.options = options;
    this.connection = new Connection(options);
    /** @type {Storage | null} opened once the user is known */
    this.storage = options.storage ?? null;
    /** @type {Map<string, Row | null>} rows as the server last said, by "table:id"; null: gone or hidden */
    this.server = new Map();
    /** @type {PendingTx[]} */
    this.pending = [];
    /** @type {Map<string, Row | null>} server rows with the pending transactions applied on top */
    this.visible = new Map();
    /** @type {Map<string, number>} subscribed keys with how many views use each */
    this.watched = new Map();
    /** @type {string|null} the resume token of the last frame received: opaque, sent back as is */
    this.cursor = null;
    /** @type {Set<{key: string, refresh: () => void}>} */
    this.views = new Set();
    /** @type {Map<string, {resolve: (result: TransactionResult) => void, reject: (error: unknown) => void}>} */
    this.waiters = new Map();
    /** @type {HistoryEntry[]} */
    this.undoStack = [];
    /** @type {HistoryEntry[]} */
    this.redoStack = [];
    /** @type {Map<string, Set<(payload: any) => void>>} */
    this.events = new Map();
    this.presence = new Presence(this.connection);
    this.flushing = false;
    this.subscribing = 0;
    /** @type {Map<string, Row | null>} server rows changed since the cache was last written */
    this.unsaved = new Map();
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.saveTimer = undefined;
    this.connection.onState((state, reason) => this.emit('state', { state, reason }));
    this.connection.onOpen(() => this.resume());
    this.connection.onPush((frame) => this.onPush(frame));
    this.closed = false;
    /**
     * Resolves once the cache is loaded: cached rows and pending writes are in the views.
     * The connection starts after it, so that the server's answers revalidate the cache
     * instead of racing it.
     * @type {Promise<void>}
     */
    this.ready = this.open().finally(() => {
      if (!this.closed) this.connection.start();
    });
    if (typeof window !== 'undefined') {
      window.addEventListener('online', () => this.connection.wake('the network is back'));
      window.addEventListener('offline', () => this.emit('state', { state: 'offline', reason: 'the browser is offline' }));
      document.addEventListener('visibilitychange', () => {
        if (!document.hidden) this.connection.wake('the page is visible again');
      });
    }
  }

  /** Opens the user's storage and shows what it holds. */
  async open() {
    try {
      if (this.storage === null) {
        const user = this.options.user ?? subjectOf(await this.options.getToken());
        this.storage = defaultStorage(`rowsync:${user}`, { maxRows: this.options.cacheMaxRows ?? DEFAULT_CACHE_ROWS });
      }
      const [txs, rows] = await Promise.all([this.storage.load(), this.storage.loadRows()]);
      this.pending = [...txs, ...this.pending.filter((tx) => !txs.some((t) => t.id === tx.id))];
      for (const [key, row] of rows) if (!this.server.has(key)) this.server.set(key, row);
      this.recompute();
    } catch (error) {
      // No cache (private mode, no token offline): the client works, without offline starts.
      this.emit('error', { error, keys: [] });
    }
  }

  /** @returns {ConnectionState} */
  get state() { return this.connection.state; }

  /** @returns {string} why the connection is in its state, for people */
  get stateReason() { return this.connection.reason; }

  /**
   * Listens to one of the client's events (ClientEvents); returns the unsubscribe.
   * @template {keyof ClientEvents} E
   * @param {E} event
   * @param {(payload: ClientEvents[E]) => void} listener
   * @returns {() => void}
   */
  on(event, listener) {
    let listeners = this.events.get(event);
    if (!listeners) this.events.set(event, (listeners = new Set()));
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
    };
  }

  /**
   * @template {keyof ClientEvents} E
   * @param {E} event
   * @param {ClientEvents[E]} payload
   */
  emit(event, payload) {
    for (const listener of this.events.get(event) ?? []) listener(payload);
  }

  /** Closes the connection; the cache stays for the next start. */
  close() {
    this.closed = true;
    clearTimeout(this.saveTimer);
    this.saveCache();
    this.connection.stop();
  }

  /**
   * For sign-out: closes the connection and forgets this user's cached rows and unsent
   * writes, on this device.
   * @returns {Promise<void>}
   */
  async signOut() {
    this.closed = true;
    clearTimeout(this.saveTimer);
    this.unsaved.clear();
    this.connection.stop();
    await this.ready;
    this.server.clear();
    this.pending = [];
    this.undoStack = [];
    this.redoStack = [];
    this.recompute();
    await this.storage?.clear();
  }

  /**
   * A live view of one record: undefined until loaded, null when gone or hidden.
   * @template {object} [T=Row]
   * @param {string} table
   * @param {string | number} id
   * @returns {View<T | null | undefined>}
   */
  record(table, id) {
    const key = `${table}:${id}`;
    return this.view(key, () => /** @type {T | null | undefined} */ (this.visible.get(key)));
  }

  /**
   * A live view of the rows of a scope, e.g. query('tasks', {board_id: b}), or of every row
   * of a table the user may see, query('tasks').
   * @template {object} [T=Row]
   * @param {string} table
   * @param {Record<string, string | number>} [scope] one column and its value
   * @param {(a: T, b: T) => number} [order]
   * @returns {View<T[]>}
   */
  query(table, scope = {}, order) {
    const entries = Object.entries(scope);
    if (entries.length > 1) throw new TypeError('query: one scope column at a time');
    const key = entries.length === 0 ? table : `${table}?${entries[0][0]}=${entries[0][1]}`;
    return this.view(key, () => {
      const rows = this.heldIn(key, this.visible).map(([, row]) => /** @type {T} */ (row));
      return order ? rows.sort(order) : rows;
    });
  }

  /**
   * @template T
   * @param {string} key
   * @param {() => T} compute
   * @returns {View<T>}
   */
  view(key, compute) {
    let snapshot = compute();
    /** @type {Set<() => void>} */
    const listeners = new Set();
    const view = {
      key,
      refresh: () => {
        const next = compute();
        if (!sameSnapshot(snapshot, next)) {
          snapshot = keepUnchangedRows(snapshot, next);
          for (const listener of listeners) listener();
        }
      },
      subscribe: (/** @type {() => void} */ listener) => {
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

  /** @param {string} key */
  watch(key) {
    const count = this.watched.get(key) ?? 0;
    this.watched.set(key, count + 1);
    if (count === 0 && this.state === 'open') this.follow([key], null);
  }

  /** @param {string} key */
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
   * @param {string[]} keys
   * @param {string | null} cursor
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

  /**
   * Fetches keys and replaces what is held for them: rows gone or hidden meanwhile go.
   * @param {string[]} keys
   */
  async load(keys) {
    if (keys.length === 0 || this.state !== 'open') return;
    const reply = await this.connection.request({ type: 'fetch', keys });
    for (const record of reply.records ?? []) this.store(record.table, record.id, record.row);
    for (const scope of reply.scopes ?? []) {
      const { table } = parseScope(scope.key);
      const listed = new Set(scope.rows.map((/** @type {Row} */ row) => `${table}:${row.id}`));
      this.forgetScope(scope.key, (key) => !listed.has(key));
      for (const row of scope.rows) this.store(table, String(row.id), row);
    }
    this.recompute();
  }

  /**
   * Rows of scope `key` (table?column=value, or a whole table) in `rows`, by "table:id".
   * @param {string} key
   * @param {Map<string, Row | null>} [rows]
   * @returns {[string, Row][]}
   */
  heldIn(key, rows = this.server) {
    const { table, column, value } = parseScope(key);
    /** @type {[string, Row][]} */
    const held = [];
    for (const [k, row] of rows) {
      if (row && k.startsWith(`${table}:`) && (column === null || String(row[column]) === value)) held.push([k, row]);
    }
    return held;
  }

  /**
   * Drops the rows of scope `key` that `drop` picks (by "table:id").
   * @param {string} key
   * @param {(key: string) => boolean} [drop]
   */
  forgetScope(key, drop = () => true) {
    for (const [k] of this.heldIn(key)) if (drop(k)) this.setServer(k, null);
  }

  /**
   * Per scope or table key, the digest of the rows held in it (docs/protocol.md, "Resume").
   * @param {string[]} keys
   * @returns {Record<string, string>}
   */
  digests(keys) {
    /** @type {Record<string, string>} */
    const digests = {};
    for (const key of keys) {
      if (isRecordKey(key)) continue;
      const { table } = parseScope(key);
      digests[key] = membersDigest(this.heldIn(key).map(([k, row]) => [k.slice(table.length + 1), Number(row.version)]));
    }
    return digests;
  }

  /**
   * Keeps the newer of what we have and what the server sent.
   * @param {string} table
   * @param {string | number} id
   * @param {Row | null | undefined} row
   */
  store(table, id, row) {
    const key = `${table}:${id}`;
    const known = this.server.get(key);
    if (row && known && typeof known.version === 'number' && Number(row.version) < known.version) return;
    this.setServer(key, row ?? null);
  }

  /**
   * What the server says of a row, kept for offline starts too.
   * @param {string} key "table:id"
   * @param {Row | null} row null: gone or hidden
   */
  setServer(key, row) {
    this.server.set(key, row);
    this.unsaved.set(key, row);
    if (this.saveTimer === undefined && !this.closed) {
      this.saveTimer = setTimeout(() => this.saveCache(), CACHE_WRITE_DELAY_MS);
    }
  }

  saveCache() {
    this.saveTimer = undefined;
    if (this.unsaved.size === 0 || !this.storage) return;
    const rows = [...this.unsaved];
    this.unsaved.clear();
    this.storage.putRows(rows).catch((error) => this.emit('error', { error, keys: [] }));
  }

  async resume() {
    this.presence.rejoin();
    const keys = [...this.watched.keys()];
    if (keys.length > 0) await this.follow(keys, this.cursor);
    this.flush();
  }

  /** @param {Record<string, any>} frame */
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
          if (isRecordKey(key)) this.setServer(key, null);
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

  /**
   * One row of a `changes` message: the row as this user may see it now, or its removal.
   * @param {Record<string, any>} item
   */
  onItem(item) {
    switch (item.op) {
      case 'upsert':
        this.store(item.table, item.id, item.row);
        this.emit('change', { item: /** @type {ChangeItem} */ (item) });
        break;
      case 'remove':
        this.setServer(`${item.table}:${item.id}`, null);
        this.emit('change', { item: /** @type {ChangeItem} */ (item) });
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
   * @param {string} key
   * @param {[string, number][]} rows
   */
  onMembers(key, rows) {
    const { table } = parseScope(key);
    const versions = new Map(rows.map(([id, version]) => [`${table}:${id}`, version]));
    this.forgetScope(key, (k) => !versions.has(k));
    const stale = [...versions].filter(([k, version]) => !(Number(this.server.get(k)?.version) >= version)).map(([k]) => k);
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
   * @param {WriteOp[]} ops
   * @returns {Promise<TransactionResult>}
   */
  write(ops) {
    return this.submit(ops, 'undo').promise;
  }

  /**
   * @param {WriteOp[]} ops
   * @param {'undo' | 'redo' | 'undo-from-redo'} record which history the inverse joins
   * @returns {{id: string, promise: Promise<TransactionResult>}}
   */
  submit(ops, record) {
    const now = new Date().toISOString();
    const parsed = parseTransaction({ ops });
    const local = applyTransaction(this.visible, parsed.ops, now);
    const tx = { id: uuid(), ops, now, created: Date.now() };
    this.pending.push(tx);
    this.recompute();
    /** @type {Promise<TransactionResult>} */
    const promise = new Promise((resolve, reject) => this.waiters.set(tx.id, { resolve, reject }));
    promise.catch(() => {});
    const inverse = /** @type {WriteOp[]} */ (/** @type {unknown} */ (local.inverse));
    if (record === 'undo') this.pushUndo(this.undoStack, tx.id, inverse, true);
    if (record === 'redo') this.pushUndo(this.redoStack, tx.id, inverse, false);
    if (record === 'undo-from-redo') this.pushUndo(this.undoStack, tx.id, inverse, false);
    this.ready
      .then(() => this.storage?.put(tx))
      .catch((error) => this.emit('error', { error, keys: [] }))
      .then(() => this.flush());
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
        } catch (caught) {
          const error = /** @type {RowsyncError} */ (caught);
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

  /**
   * @param {PendingTx} tx
   * @param {TransactionResult | null} result
   * @param {RowsyncError | null} error
   */
  finish(tx, result, error) {
    this.pending = this.pending.filter((t) => t.id !== tx.id);
    this.storage?.remove(tx.id).catch(() => {});
    if (result) {
      for (const r of result.rows) this.store(r.table, r.id, r.row);
      this.updateInverse(tx.id, result.inverse);
      if (result.skipped?.length) this.emit('skipped', { tx, skipped: result.skipped });
    } else if (error) {
      this.dropInverse(tx.id);
      this.emit('rejected', { tx, error });
    }
    this.recompute();
    const waiter = this.waiters.get(tx.id);
    this.waiters.delete(tx.id);
    if (waiter) result ? waiter.resolve(result) : waiter.reject(error);
  }

  /**
   * @param {HistoryEntry[]} stack
   * @param {string} txId
   * @param {WriteOp[]} inverse
   * @param {boolean} group join the last entry when it is recent (a new write, not a replay)
   */
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

  /** @param {string} txId @param {WriteOp[]} inverse */
  updateInverse(txId, inverse) {
    for (const entry of [...this.undoStack, ...this.redoStack]) {
      for (const part of entry.parts) if (part.txId === txId) part.inverse = inverse;
    }
  }

  /** @param {string} txId */
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

  /**
   * Undoes the last group of writes, skipping (and reporting) fields others changed since.
   * @returns {Promise<TransactionResult | null>} null when there was nothing to undo
   */
  undo() { return this.replay(this.undoStack, 'redo'); }

  /** @returns {Promise<TransactionResult | null>} */
  redo() { return this.replay(this.redoStack, 'undo-from-redo'); }

  /**
   * @param {HistoryEntry[]} stack
   * @param {'redo' | 'undo-from-redo'} record
   * @returns {Promise<TransactionResult | null>}
   */
  replay(stack, record) {
    const entry = stack.pop();
    if (!entry) return Promise.resolve(null);
    const ops = [...entry.parts].reverse().flatMap((p) => p.inverse);
    this.emit('history', {});
    if (ops.length === 0) return Promise.resolve(null);
    return this.submit(ops, record).promise;
  }

  /**
   * A presence room: who is here, with a small state each, and ephemeral events.
   * @param {string} name a key the user may follow (table:id, table?column=value)
   * @returns {Room}
   */
  room(name) {
    return this.presence.room(name);
  }
}

/**
 * A scope key's table, column and value; a table key's table, with column null.
 * @param {string} key
 * @returns {{table: string, column: string | null, value: string | null}}
 */
function parseScope(key) {
  const [table, rest] = key.split('?');
  if (rest === undefined) return { table, column: null, value: null };
  const at = rest.indexOf('=');
  return { table, column: rest.slice(0, at), value: rest.slice(at + 1) };
}

/** @param {string} key */
function isRecordKey(key) {
  return !key.includes('?') && key.includes(':');
}

/**
 * The digest of held rows, `[[id, version], …]`, as the bridge computes it: the sum,
 * wrapping at 64 bits, of the FNV-1a hash of each `id\nversion`, in decimal.
 * @param {[string, number][]} rows
 * @returns {string}
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

/**
 * A new list snapshot whose rows equal to rows of the old one are the old objects, so that
 * a memoised component of an unchanged row does not re-render when another row changes.
 * @template T
 * @param {T} old
 * @param {T} next
 * @returns {T}
 */
function keepUnchangedRows(old, next) {
  if (!Array.isArray(old) || !Array.isArray(next)) return next;
  const byId = new Map(old.map((row) => [row?.id, row]));
  return /** @type {T} */ (
    next.map((row) => {
      const before = byId.get(row?.id);
      return before !== undefined && (before === row || deepEqual(before, row)) ? before : row;
    })
  );
}

/**
 * Whether a view's new value is its old one: then it keeps the old snapshot, so that its
 * components do not re-render. Rows are compared by content, because every recompute
 * builds new objects for the rows a pending write touches.
 * @param {unknown} a
 * @param {unknown} b
 */
function sameSnapshot(a, b) {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((row, i) => row === b[i] || deepEqual(row, b[i]));
  }
  return a != null && b != null && deepEqual(/** @type {Json} */ (a), /** @type {Json} */ (b));
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

/**
 * The `sub` of a JWT, unverified: it only names this user's cache on this device.
 * @param {string} token
 * @returns {string}
 */
function subjectOf(token) {
  const payload = token.split('.')[1];
  if (!payload) throw new TypeError('the token is not a JWT: pass `user` to name the cache');
  const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
  const sub = JSON.parse(json).sub;
  if (typeof sub !== 'string' || sub === '') throw new TypeError('the token has no sub: pass `user` to name the cache');
  return sub;
}

/**
 * Ctrl/Cmd+Z undoes, Shift+Ctrl/Cmd+Z and Ctrl+Y redo; text fields keep their own undo.
 * @param {RowsyncClient} client
 * @param {EventTarget} [target] default: the window
 * @returns {() => void} removes the keys again
 */
export function bindUndoKeys(client, target = globalThis.window) {
  /** @param {Event} e */
  const handler = (e) => {
    const event = /** @type {KeyboardEvent} */ (e);
    const editable = /** @type {Element | null} */ (event.target)?.closest?.('input, textarea, [contenteditable="true"]');
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
