// Deliberate misuses: each line marked `error TSnnnn` must fail to compile with that code,
// and nothing else may fail (misuse.mjs checks both).
import { createClient } from '@rowsync/client';
import { RowsyncProvider, useRecord, useRecords, useWrite } from '@rowsync/client/react';

interface Task {
  id: string;
  title: string;
  rank: number;
}

function Misuse() {
  const task = useRecord<Task>('tasks', 't1');
  const title = task?.titel; // error TS2551
  const tasks = useRecords<Task>('tasks', { board_id: 'b1' }, (a: Task, b: Task) => a.title - b.rank); // error TS2362
  const write = useWrite();
  write([{ type: 'sett', table: 'tasks', id: 't1', key: 'title', value: 'x' }]); // error TS2820
  write([{ type: 'listInsert', table: 'tasks', id: 't1', key: 'tags' }]); // error TS2322
  return <p>{title}{tasks.length}</p>;
}

const client = createClient({ url: 'ws://localhost/v1/ws' }); // error TS2345
client.on('nosuch', () => {}); // error TS2345
export const app = <RowsyncProvider><Misuse /></RowsyncProvider>; // error TS2741
