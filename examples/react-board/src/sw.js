// The board's service worker: the page and its files come from the cache when the network
// cannot serve them, so the board opens offline (its rows come from the client's IndexedDB
// cache). Built by vite.config.js, which fills in the file list and the version.
const PRECACHE = self.__PRECACHE__;
const CACHE = `rowsync-board-${self.__VERSION__}`;

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(PRECACHE)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('rowsync-board-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// Network first, so that a deployed change shows at once; the cache when offline. The page
// is cached without its query (the token and board are in it).
self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(
    fetch(request).catch(async () => {
      const cached = await caches.match(request, { ignoreSearch: true });
      return cached ?? Response.error();
    }),
  );
});
