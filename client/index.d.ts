// Types of @rowsync/client (the modules are plain ES modules with JSDoc).

export type Row = Record<string, unknown>;
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'offline' | 'closed';

export type Op =
  | { type: 'set'; table: string; id: string; key: string | string[]; value?: unknown; remove?: boolean; expect?: unknown; version?: number }
  | { type: 'set-now'; table: string; id: string; key: string | string[]; version?: number }
  | { type: 'listInsert'; table: string; id: string; key: string | string[]; value: unknown; position?: 'append' | 'prepend' | { before: unknown } | { after: unknown }; version?: number }
  | { type: 'listRemove'; table: string; id: string; key: string | string[]; value: unknown; version?: number }
  | { type: 'create'; table: string; id: string; value: Row; expect_absent?: boolean }
  | { type: 'delete'; table: string; id: string; expect_version?: number; version?: number };

export interface TransactionResult {
  id: string | null;
  rows: { table: string; id: string; version: number | null; row: Row | null }[];
  inverse: Op[];
  skipped: { index: number; table: string; id: string; key?: string | string[]; reason: 'changed' | 'gone' | 'exists' }[];
  cursor: number | null;
}

export interface Storage {
  load(): Promise<{ id: string; ops: Op[]; created: number }[]>;
  put(tx: { id: string; ops: Op[]; created: number }): Promise<void>;
  remove(id: string): Promise<void>;
}

export interface ClientOptions {
  url: string;
  getToken: () => Promise<string> | string;
  storage?: Storage;
  WebSocket?: typeof WebSocket;
  undoWindowMs?: number;
  requestTimeoutMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface View<T> {
  subscribe(listener: () => void): () => void;
  getSnapshot(): T;
}

export declare class RowsyncError extends Error {
  code: string;
  temporary: boolean;
  sqlstate?: string;
  detail?: string;
  hint?: string;
}

export interface Member { id: string; user: string | null; state: unknown }

export interface Room {
  join(state?: unknown): Promise<unknown>;
  update(state: unknown): Promise<unknown>;
  leave(): Promise<unknown>;
  broadcast(event: string, payload?: unknown): boolean;
  onEvent(listener: (event: { event: string; payload: unknown; from: { id: string; user: string | null } }) => void): () => void;
  subscribe(listener: () => void): () => void;
  getSnapshot(): Member[];
}

export interface RowsyncClient {
  readonly state: ConnectionState;
  readonly ready: Promise<void>;
  readonly canUndo: boolean;
  readonly canRedo: boolean;
  on(event: 'state', listener: (e: { state: ConnectionState; reason: string }) => void): () => void;
  on(event: 'rejected', listener: (e: { tx: { id: string; ops: Op[] }; error: RowsyncError }) => void): () => void;
  on(event: 'skipped', listener: (e: { tx: { id: string; ops: Op[] }; skipped: TransactionResult['skipped'] }) => void): () => void;
  /** A server event (`rowsync.send`): for a subscribed key, a joined room, or `user:<sub>`. */
  on(event: 'event', listener: (e: { topic: string; event: string; payload: unknown; from: string | null }) => void): () => void;
  /** A row the server pushed: `upsert` (with the row as this user may see it) or `remove`. */
  on(event: 'change', listener: (e: { item: { op: 'upsert' | 'remove'; table: string; id: string; version?: number; row?: Row; keys: string[] } }) => void): () => void;
  /** Keys this user may no longer follow; their rows were dropped. */
  on(event: 'revoked', listener: (e: { keys: string[]; reason?: string }) => void): () => void;
  on(event: 'history' | 'error', listener: (e: any) => void): () => void;
  record(table: string, id: string): View<Row | null | undefined>;
  /** The rows of a scope, or with no scope (`{}` or omitted) every row of the table the user may see. */
  query(table: string, scope?: Record<string, string>, order?: (a: Row, b: Row) => number): View<Row[]>;
  write(ops: Op[]): Promise<TransactionResult>;
  undo(): Promise<TransactionResult | null>;
  redo(): Promise<TransactionResult | null>;
  room(name: string): Room;
  close(): void;
}

export declare function createClient(options: ClientOptions): RowsyncClient;
/** The digest of held rows `[[id, version], …]` a resuming subscribe sends (docs/protocol.md). */
export declare function membersDigest(rows: [string, number][]): string;
export declare function memoryStorage(): Storage;
export declare function indexedDbStorage(name?: string): Storage;
export declare function bindUndoKeys(client: RowsyncClient, target?: EventTarget): () => void;
export declare function typing(room: Room, options?: { idleMs?: number }): {
  start(): void;
  stop(): void;
  subscribe(listener: () => void): () => void;
  getSnapshot(): string[];
};
