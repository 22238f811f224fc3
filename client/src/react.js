// Optional React bindings (React is a peer dependency; import this module only with it).

import { useCallback, useEffect, useMemo, useState, useSyncExternalStore } from 'react';

/** The live row `table:id`: undefined while loading, null when gone or hidden. */
export function useRecord(client, table, id) {
  const view = useMemo(() => client.record(table, id), [client, table, id]);
  return useSyncExternalStore(view.subscribe, view.getSnapshot);
}

/** The live rows of a scope, e.g. useRecords(client, 'tasks', {board_id}). */
export function useRecords(client, table, scope, order) {
  const [[column, value]] = Object.entries(scope);
  const view = useMemo(() => client.query(table, { [column]: value }, order), [client, table, column, value, order]);
  return useSyncExternalStore(view.subscribe, view.getSnapshot);
}

/** `write(ops)`, stable across renders. */
export function useWrite(client) {
  return useCallback((ops) => client.write(ops), [client]);
}

/** {undo, redo, canUndo, canRedo}, re-rendering when the history changes. */
export function useUndoRedo(client) {
  const [, bump] = useState(0);
  useEffect(() => client.on('history', () => bump((n) => n + 1)), [client]);
  return {
    undo: () => client.undo(),
    redo: () => client.redo(),
    canUndo: client.canUndo,
    canRedo: client.canRedo,
  };
}

/** The members of a presence room, joined with `state` while mounted. */
export function usePresence(client, roomName, state) {
  const room = useMemo(() => client.room(roomName), [client, roomName]);
  const json = JSON.stringify(state ?? {});
  useEffect(() => {
    room.join(JSON.parse(json)).catch(() => {});
  }, [room, json]);
  useEffect(() => () => { room.leave(); }, [room]);
  return useSyncExternalStore((l) => room.subscribe(l), () => room.getSnapshot());
}
