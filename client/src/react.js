// React bindings: a provider at the root of the app, and hooks that read the client from
// it. Every hook reads through useSyncExternalStore with snapshots that keep their identity
// until their own data changes, so a component re-renders only for its own rows. React is
// a peer dependency: import this module only with it.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useSyncExternalStore,
} from 'react';
import { bindUndoKeys, typing } from './index.js';

/** @typedef {import('./index.js').RowsyncClient} RowsyncClient */
/** @typedef {import('./index.js').Row} Row */
/** @typedef {import('./index.js').WriteOp} WriteOp */
/** @typedef {import('./index.js').TransactionResult} TransactionResult */
/** @typedef {import('./connection.js').ConnectionState} ConnectionState */
/** @typedef {import('./presence.js').Member} Member */

/** @type {import('react').Context<RowsyncClient | null>} */
const ClientContext = createContext(/** @type {RowsyncClient | null} */ (null));

/**
 * Makes `client` available to the hooks below it.
 * @param {{client: RowsyncClient, children?: import('react').ReactNode}} props
 * @returns {import('react').ReactElement}
 */
export function RowsyncProvider({ client, children }) {
  return createElement(ClientContext.Provider, { value: client }, children);
}

/**
 * The client of the nearest RowsyncProvider.
 * @returns {RowsyncClient}
 */
export function useClient() {
  const client = useContext(ClientContext);
  if (client === null) throw new Error('rowsync: a hook was used outside <RowsyncProvider client={…}>');
  return client;
}

/**
 * The live row `table:id`: undefined while loading, null when gone or hidden.
 * @template {object} [T=Row]
 * @param {string} table
 * @param {string | number} id
 * @returns {T | null | undefined}
 */
export function useRecord(table, id) {
  const client = useClient();
  const view = useMemo(() => client.record(table, id), [client, table, id]);
  return /** @type {T | null | undefined} */ (useSyncExternalStore(view.subscribe, view.getSnapshot));
}

/**
 * The live rows of a scope, `useRecords('tasks', {board_id: id})`, or with no scope every
 * row of the table the user may see. Pass a stable `order` (defined outside the component,
 * or with useCallback) for a stable array.
 * @template {object} [T=Row]
 * @param {string} table
 * @param {Record<string, string | number>} [scope] one column and its value
 * @param {(a: T, b: T) => number} [order]
 * @returns {T[]}
 */
export function useRecords(table, scope, order) {
  const client = useClient();
  const entries = Object.entries(scope ?? {});
  if (entries.length > 1) throw new TypeError('useRecords: one scope column at a time');
  const [column, value] = entries[0] ?? [null, null];
  const view = useMemo(
    () => client.query(table, column === null ? {} : { [column]: value ?? '' }),
    [client, table, column, value],
  );
  const rows = /** @type {T[]} */ (useSyncExternalStore(view.subscribe, view.getSnapshot));
  return useMemo(() => (order ? [...rows].sort(order) : rows), [rows, order]);
}

/**
 * `write(ops)`: applies at once, syncs, and resolves with the server's result. Stable.
 * @returns {(ops: WriteOp[]) => Promise<TransactionResult>}
 */
export function useWrite() {
  const client = useClient();
  return useCallback((ops) => client.write(ops), [client]);
}

/**
 * Undo and redo of this client's writes; with `keyboard`, Cmd/Ctrl+Z and
 * Cmd/Ctrl+Shift+Z (and Ctrl+Y) while mounted, leaving text fields their own undo.
 * @param {{keyboard?: boolean}} [options]
 * @returns {{undo: () => Promise<TransactionResult | null>, redo: () => Promise<TransactionResult | null>, canUndo: boolean, canRedo: boolean}}
 */
export function useUndoRedo({ keyboard = false } = {}) {
  const client = useClient();
  /** @type {import('react').MutableRefObject<{canUndo: boolean, canRedo: boolean}>} */
  const last = useRef({ canUndo: client.canUndo, canRedo: client.canRedo });
  const subscribe = useCallback((/** @type {() => void} */ listener) => client.on('history', listener), [client]);
  const getSnapshot = useCallback(() => {
    const { canUndo, canRedo } = client;
    if (last.current.canUndo !== canUndo || last.current.canRedo !== canRedo) last.current = { canUndo, canRedo };
    return last.current;
  }, [client]);
  const { canUndo, canRedo } = useSyncExternalStore(subscribe, getSnapshot);
  useEffect(() => (keyboard ? bindUndoKeys(client) : undefined), [client, keyboard]);
  const undo = useCallback(() => client.undo(), [client]);
  const redo = useCallback(() => client.redo(), [client]);
  return useMemo(() => ({ undo, redo, canUndo, canRedo }), [undo, redo, canUndo, canRedo]);
}

/**
 * The members of presence room `name`, this client joined with `state` while mounted (a
 * changed state is sent as an update).
 * @param {string} name a key the user may follow, such as `boards:<id>`
 * @param {import('./index.js').Json} [state]
 * @returns {Member[]}
 */
export function usePresence(name, state) {
  const client = useClient();
  const room = useMemo(() => client.room(name), [client, name]);
  const json = JSON.stringify(state ?? {});
  useEffect(() => {
    room.join(JSON.parse(json)).catch(() => {});
  }, [room, json]);
  useEffect(
    () => () => {
      room.leave();
    },
    [room],
  );
  return useSyncExternalStore(
    useCallback((/** @type {() => void} */ listener) => room.subscribe(listener), [room]),
    useCallback(() => room.getSnapshot(), [room]),
  );
}

/**
 * The connection's state and why, for an online/offline badge.
 * @returns {{state: ConnectionState, reason: string}}
 */
export function useConnectionState() {
  const client = useClient();
  /** @type {import('react').MutableRefObject<{state: ConnectionState, reason: string}>} */
  const last = useRef({ state: client.state, reason: client.stateReason });
  const subscribe = useCallback((/** @type {() => void} */ listener) => client.on('state', listener), [client]);
  const getSnapshot = useCallback(() => {
    const { state, stateReason: reason } = client;
    if (last.current.state !== state || last.current.reason !== reason) last.current = { state, reason };
    return last.current;
  }, [client]);
  return useSyncExternalStore(subscribe, getSnapshot);
}

/**
 * Who is typing in room `name` (others and this client), and `start`/`stop` to say this
 * client is: call `start` on each keystroke (it is sent at most once a second) and `stop`
 * when the text is sent. The room must be joined (usePresence) for events to flow.
 * @param {string} name
 * @param {{idleMs?: number}} [options] how long a user shows as typing after their last event (3000)
 * @returns {{typing: string[], start: () => void, stop: () => void}}
 */
export function useTyping(name, options) {
  const client = useClient();
  const idleMs = options?.idleMs;
  const typers = useMemo(() => typing(client.room(name), { idleMs }), [client, name, idleMs]);
  useEffect(() => () => typers.close(), [typers]);
  const who = useSyncExternalStore(typers.subscribe, typers.getSnapshot);
  return useMemo(() => ({ typing: who, start: typers.start, stop: typers.stop }), [who, typers]);
}
