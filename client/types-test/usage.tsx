// How an app written in TypeScript uses the package: this must compile (npm run check).
// It imports the package by its name, so it checks the published declarations.
import { createClient, type RowsyncClient, type TransactionResult, type WriteOp } from '@rowsync/client';
import {
  RowsyncProvider,
  useConnectionState,
  usePresence,
  useRecord,
  useRecords,
  useUndoRedo,
  useWrite,
} from '@rowsync/client/react';

interface Task {
  id: string;
  board_id: string;
  title: string;
  status: 'todo' | 'doing' | 'done';
  rank: number;
  tags: string[];
  version: number;
}

const byRank = (a: Task, b: Task) => a.rank - b.rank;

function TaskTitle({ id }: { id: string }) {
  const task = useRecord<Task>('tasks', id);
  if (task === undefined) return <span>loading</span>;
  if (task === null) return <span>gone</span>;
  const title: string = task.title;
  return <span>{title}</span>;
}

function Board({ boardId }: { boardId: string }) {
  const tasks = useRecords<Task>('tasks', { board_id: boardId }, byRank);
  const write = useWrite();
  const { undo, redo, canUndo, canRedo } = useUndoRedo({ keyboard: true });
  const { state, reason } = useConnectionState();
  const here = usePresence(`boards:${boardId}`, { editing: null });
  const move = (task: Task): Promise<TransactionResult> =>
    write([{ type: 'set', table: 'tasks', id: task.id, key: 'status', value: 'done' }]);
  const ops: WriteOp[] = [
    { type: 'listInsert', table: 'tasks', id: 'x', key: 'tags', value: 'urgent', position: { after: 'bug' } },
    { type: 'set-now', table: 'tasks', id: 'x', key: ['meta', 'seen.at'] },
    { type: 'delete', table: 'tasks', id: 'x', expect_version: 3 },
  ];
  return (
    <section title={`${state}: ${reason}`}>
      {tasks.map((task) => (
        <button key={task.id} onClick={() => move(task)} disabled={!canUndo && !canRedo}>
          <TaskTitle id={task.id} />
        </button>
      ))}
      <button onClick={() => undo()}>undo</button>
      <button onClick={() => redo()}>redo</button>
      <button onClick={() => write(ops)}>{here.length} here</button>
    </section>
  );
}

export function App({ client }: { client: RowsyncClient }) {
  return (
    <RowsyncProvider client={client}>
      <Board boardId="b1" />
    </RowsyncProvider>
  );
}

const client = createClient({ url: 'ws://localhost/v1/ws', getToken: async () => 'token', cacheMaxRows: 500 });
client.on('rejected', ({ error }) => console.warn(error.code, error.message));
client.on('event', ({ topic, event, payload }) => console.log(topic, event, payload));
const view = client.query<Task>('tasks', { board_id: 'b1' });
const firstTitle: string | undefined = view.getSnapshot()[0]?.title;
void firstTitle;
void client.signOut();
