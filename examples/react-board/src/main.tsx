// The board's entry: the token comes from ?token= (the main job prints links), ?ws=
// overrides the bridge's URL, ?board= picks the board. A service worker makes the page
// open offline; the client's IndexedDB cache brings its rows.
import { createRoot } from 'react-dom/client';
import { createClient, type RowsyncClient } from '@rowsync/client';
import { RowsyncProvider } from '@rowsync/client/react';
import { App } from './App.tsx';
import './style.css';

declare global {
  interface Window {
    /** The client, for the browser tests and for poking at in the console. */
    rowsync: RowsyncClient;
  }
}

const params = new URLSearchParams(location.search);
const token = params.get('token') ?? '';
const url = params.get('ws') ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
// Collaborative documents are served next to the feed, at /v1/yjs.
const yjsUrl = url.replace(/\/v1\/ws$/, '/v1/yjs');
const client = createClient({ url, getToken: () => token });
window.rowsync = client;

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('./sw.js').catch((error) => console.warn('no offline start:', error));
}

createRoot(document.getElementById('root')!).render(
  <RowsyncProvider client={client}>
    <App me={subjectOf(token)} token={token} yjsUrl={yjsUrl} initialBoard={params.get('board')} />
  </RowsyncProvider>,
);

function subjectOf(jwt: string): string {
  try {
    return JSON.parse(atob((jwt.split('.')[1] ?? '').replace(/-/g, '+').replace(/_/g, '/'))).sub ?? 'anonymous';
  } catch {
    return 'anonymous';
  }
}
