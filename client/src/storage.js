// What the client keeps across reloads: the writes the server does not have yet, so that
// writes made offline survive, and the rows last seen, so that a page opened offline shows
// them at once. IndexedDB in browsers, one database per user; memory elsewhere (and in
// tests).

/** @typedef {import('./ops.js').WriteOp} WriteOp */
/** @typedef {import('./ops.js').Row} Row */

/**
 * @typedef {object} PendingTx
 * @property {string} id       the transaction id (UUID): retries are idempotent
 * @property {WriteOp[]} ops
 * @property {string} [now]    when it was made (ISO 8601): `set-now` shows this until the server answers
 * @property {number} created  Date.now() when it was made; the queue's order
 */

/**
 * @typedef {object} Storage
 * @property {() => Promise<PendingTx[]>} load  the pending writes, oldest first
 * @property {(tx: PendingTx) => Promise<void>} put
 * @property {(id: string) => Promise<void>} remove
 * @property {() => Promise<Array<[string, Row]>>} loadRows  the cached rows, by "table:id"
 * @property {(rows: Array<[string, Row | null]>) => Promise<void>} putRows  null forgets a row;
 *   past the bound, the rows written longest ago go
 * @property {() => Promise<void>} clear  forgets every row and every pending write
 */

/** How many rows a cache keeps unless told otherwise. */
export const DEFAULT_CACHE_ROWS = 10000;

/**
 * @param {{maxRows?: number}} [options]
 * @returns {Storage}
 */
export function memoryStorage({ maxRows = DEFAULT_CACHE_ROWS } = {}) {
  /** @type {Map<string, PendingTx>} */
  const txs = new Map();
  /** @type {Map<string, Row>} insertion order is write order */
  const rows = new Map();
  return {
    async load() {
      return [...txs.values()].sort((a, b) => a.created - b.created);
    },
    async put(tx) {
      txs.set(tx.id, structuredClone(tx));
    },
    async remove(id) {
      txs.delete(id);
    },
    async loadRows() {
      return [...rows].map(([key, row]) => [key, structuredClone(row)]);
    },
    async putRows(entries) {
      for (const [key, row] of entries) {
        rows.delete(key);
        if (row !== null) rows.set(key, structuredClone(row));
      }
      for (const key of rows.keys()) {
        if (rows.size <= maxRows) break;
        rows.delete(key);
      }
    },
    async clear() {
      txs.clear();
      rows.clear();
    },
  };
}

/**
 * @param {string} name the IndexedDB database: one per user (the client names it `rowsync:<sub>`)
 * @param {{maxRows?: number}} [options]
 * @returns {Storage}
 */
export function indexedDbStorage(name, { maxRows = DEFAULT_CACHE_ROWS } = {}) {
  /** @type {Promise<IDBDatabase>} */
  const opened = new Promise((resolve, reject) => {
    const request = indexedDB.open(name, 2);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains('pending')) db.createObjectStore('pending', { keyPath: 'id' });
      if (!db.objectStoreNames.contains('rows')) {
        db.createObjectStore('rows', { keyPath: 'key' }).createIndex('written', 'written');
      }
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  /**
   * Runs `work` in one transaction and resolves with its result when the transaction commits.
   * @template T
   * @param {string[]} stores
   * @param {IDBTransactionMode} mode
   * @param {(tx: IDBTransaction) => T} work
   * @returns {Promise<T>}
   */
  const run = (stores, mode, work) =>
    opened.then(
      (db) =>
        new Promise((resolve, reject) => {
          const tx = db.transaction(stores, mode);
          const result = work(tx);
          tx.oncomplete = () => resolve(result);
          tx.onerror = () => reject(tx.error);
          tx.onabort = () => reject(tx.error);
        }),
    );
  /**
   * @template T
   * @param {IDBRequest<T>} request
   * @returns {{value: T | undefined}} filled in when the request succeeds
   */
  const resultOf = (request) => {
    /** @type {{value: T | undefined}} */
    const box = { value: undefined };
    request.onsuccess = () => {
      box.value = request.result;
    };
    return box;
  };
  let written = Date.now();
  return {
    async load() {
      const all = await run(['pending'], 'readonly', (tx) => resultOf(tx.objectStore('pending').getAll()));
      return /** @type {PendingTx[]} */ (all.value ?? []).sort((a, b) => a.created - b.created);
    },
    async put(tx) {
      await run(['pending'], 'readwrite', (t) => t.objectStore('pending').put(tx));
    },
    async remove(id) {
      await run(['pending'], 'readwrite', (t) => t.objectStore('pending').delete(id));
    },
    async loadRows() {
      const all = await run(['rows'], 'readonly', (tx) => resultOf(tx.objectStore('rows').getAll()));
      return (all.value ?? []).map((entry) => [entry.key, entry.row]);
    },
    async putRows(entries) {
      await run(['rows'], 'readwrite', (tx) => {
        const store = tx.objectStore('rows');
        for (const [key, row] of entries) {
          if (row === null) store.delete(key);
          else store.put({ key, row, written: (written += 1) });
        }
        // Past the bound, the rows written longest ago go, oldest first.
        const count = store.count();
        count.onsuccess = () => {
          let excess = count.result - maxRows;
          if (excess <= 0) return;
          const cursor = store.index('written').openCursor();
          cursor.onsuccess = () => {
            const at = cursor.result;
            if (!at || excess <= 0) return;
            at.delete();
            excess -= 1;
            at.continue();
          };
        };
      });
    },
    async clear() {
      await run(['pending', 'rows'], 'readwrite', (tx) => {
        tx.objectStore('pending').clear();
        tx.objectStore('rows').clear();
      });
    },
  };
}

/**
 * A storage that suits the environment: IndexedDB where there is one, else memory.
 * @param {string} name
 * @param {{maxRows?: number}} [options]
 * @returns {Storage}
 */
export function defaultStorage(name, options) {
  return typeof indexedDB === 'undefined' ? memoryStorage(options) : indexedDbStorage(name, options);
}
