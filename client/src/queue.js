// Where pending transactions wait until the server has them: IndexedDB in browsers, so
// that writes made offline survive reloads; memory elsewhere (and in tests).

/**
 * @typedef {object} PendingTx
 * @property {string} id       the transaction id (UUID): retries are idempotent
 * @property {any[]} ops
 * @property {number} created
 */

/**
 * @typedef {object} Storage
 * @property {() => Promise<PendingTx[]>} load   oldest first
 * @property {(tx: PendingTx) => Promise<void>} put
 * @property {(id: string) => Promise<void>} remove
 */

/** @returns {Storage} */
export function memoryStorage() {
  const txs = new Map();
  return {
    async load() { return [...txs.values()].sort((a, b) => a.created - b.created); },
    async put(tx) { txs.set(tx.id, structuredClone(tx)); },
    async remove(id) { txs.delete(id); },
  };
}

/** @param {string} name @returns {Storage} */
export function indexedDbStorage(name = 'rowsync') {
  const opened = new Promise((resolve, reject) => {
    const request = indexedDB.open(name, 1);
    request.onupgradeneeded = () => request.result.createObjectStore('pending', { keyPath: 'id' });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  const run = (mode, work) => opened.then((db) => new Promise((resolve, reject) => {
    const tx = db.transaction('pending', mode);
    const result = work(tx.objectStore('pending'));
    tx.oncomplete = () => resolve(result?.result);
    tx.onerror = () => reject(tx.error);
  }));
  return {
    async load() {
      const all = await run('readonly', (store) => store.getAll());
      return (all ?? []).sort((a, b) => a.created - b.created);
    },
    async put(tx) { await run('readwrite', (store) => store.put(tx)); },
    async remove(id) { await run('readwrite', (store) => store.delete(id)); },
  };
}

/** A storage that suits the environment. @param {string} [name] */
export function defaultStorage(name) {
  return typeof indexedDB === 'undefined' ? memoryStorage() : indexedDbStorage(name);
}
