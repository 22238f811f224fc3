// The board: boards I am a member of, their tasks in three columns, a comment thread per
// task with typing indicators and reactions, who is here, undo and redo, and an offline
// badge. Every piece of data comes from a hook; every change is one `write`.
import { memo, useCallback, useEffect, useRef, useState } from 'react';
import {
  useClient,
  useConnectionState,
  usePresence,
  useRecord,
  useRecords,
  useTyping,
  useUndoRedo,
  useWrite,
} from '@rowsync/client/react';
import { Description } from './Description.tsx';
import { COLORS, EMOJI, LABELS, STATUSES, type Board, type BoardMember, type Comment, type Status, type Task } from './model.ts';

const byRank = (a: Task, b: Task) => a.rank - b.rank || a.id.localeCompare(b.id);
const byBoard = (a: BoardMember, b: BoardMember) => a.board_id.localeCompare(b.board_id);
const byCreated = (a: Comment, b: Comment) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id);
const ignore = () => {};

export function App({ me, token, yjsUrl, initialBoard }: { me: string; token: string; yjsUrl: string; initialBoard: string | null }) {
  const memberships = useRecords<BoardMember>('board_members', { user_id: me }, byBoard);
  const [chosen, setChosen] = useState(initialBoard);
  const [thread, setThread] = useState<string | null>(null);
  const boardId = chosen ?? memberships[0]?.board_id ?? null;
  const { undo, redo, canUndo, canRedo } = useUndoRedo({ keyboard: true });
  const toast = useToast();
  return (
    <>
      <header>
        <h1 id="board-name">{boardId ? <BoardName id={boardId} /> : 'Board'}</h1>
        <select id="board-picker" aria-label="board" value={boardId ?? ''} onChange={(e) => setChosen(e.target.value)}>
          {memberships.map((m) => (
            <option key={m.board_id} value={m.board_id}>
              <BoardName id={m.board_id} />
            </option>
          ))}
        </select>
        {boardId && <Presence boardId={boardId} me={me} />}
        <StatusBadge />
        <button id="undo" title="Undo (Ctrl+Z)" disabled={!canUndo} onClick={() => undo().catch(ignore)}>
          Undo
        </button>
        <button id="redo" title="Redo (Shift+Ctrl+Z)" disabled={!canRedo} onClick={() => redo().catch(ignore)}>
          Redo
        </button>
        <span id="me">signed in as {me}</span>
      </header>
      <main>
        <section id="columns">{boardId && <Columns boardId={boardId} onTalk={setThread} />}</section>
        {thread && <Thread key={thread} taskId={thread} me={me} token={token} yjsUrl={yjsUrl} />}
      </main>
      <div id="toast" role="status" className={toast ? 'show' : ''}>
        {toast}
      </div>
    </>
  );
}

function BoardName({ id }: { id: string }) {
  const board = useRecord<Board>('boards', id);
  return <>{board?.name ?? id.slice(-2)}</>;
}

/** The last notice about writes the server refused or left alone, for four seconds. */
function useToast(): string {
  const client = useClient();
  const [text, setText] = useState('');
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const show = (message: string) => {
      setText(message);
      clearTimeout(timer);
      timer = setTimeout(() => setText(''), 4000);
    };
    const stops = [
      client.on('rejected', ({ error }) => show(`Change undone by the server: ${error.message}`)),
      client.on('skipped', ({ skipped }) => show(`${skipped.length} change(s) kept: someone else edited them since`)),
    ];
    return () => {
      stops.forEach((stop) => stop());
      clearTimeout(timer);
    };
  }, [client]);
  return text;
}

function StatusBadge() {
  const { state, reason } = useConnectionState();
  const label = state === 'open' ? 'online' : state === 'connecting' ? 'connecting' : 'offline';
  return (
    <span id="status" className={`badge ${state === 'open' ? '' : state}`} title={reason}>
      {label}
    </span>
  );
}

function Presence({ boardId, me }: { boardId: string; me: string }) {
  const members = usePresence(`tasks?board_id=${boardId}`, { color: COLORS[me] ?? '#888' });
  const users = [...new Map(members.map((m) => [m.user, m])).values()];
  return (
    <div id="presence" aria-label="people here">
      {users.map((m) => (
        <span
          key={m.user ?? m.id}
          className="avatar"
          data-user={m.user ?? ''}
          title={m.user ?? ''}
          style={{ background: (m.state as { color?: string } | null)?.color ?? '#888' }}
        >
          {(m.user ?? '?')[0].toUpperCase()}
        </span>
      ))}
    </div>
  );
}

function Columns({ boardId, onTalk }: { boardId: string; onTalk: (taskId: string) => void }) {
  const client = useClient();
  const tasks = useRecords<Task>('tasks', { board_id: boardId }, byRank);
  const pending = new Set(client.pending.flatMap((tx) => tx.ops.map((op) => String(op.id))));
  const nextRank = Math.max(0, ...tasks.map((t) => t.rank)) + 1;
  return (
    <>
      {STATUSES.map((status) => (
        <div key={status} className="column" data-status={status}>
          <h2>{LABELS[status]}</h2>
          {tasks
            .filter((t) => t.status === status)
            .map((t) => (
              <Card key={t.id} task={t} pending={pending.has(t.id)} onTalk={onTalk} />
            ))}
          <NewTask boardId={boardId} status={status} rank={nextRank} />
        </div>
      ))}
    </>
  );
}

function NewTask({ boardId, status, rank }: { boardId: string; status: Status; rank: number }) {
  const write = useWrite();
  return (
    <input
      className="new-task"
      placeholder="+ Add a task"
      onKeyDown={(e) => {
        const title = e.currentTarget.value.trim();
        if (e.key !== 'Enter' || !title) return;
        write([{ type: 'create', table: 'tasks', id: crypto.randomUUID(), value: { board_id: boardId, title, status, rank } }]).catch(ignore);
        e.currentTarget.value = '';
      }}
    />
  );
}

/** One task. Memoised: it renders again only when its own row changes (data-renders counts). */
const Card = memo(function Card({ task, pending, onTalk }: { task: Task; pending: boolean; onTalk: (id: string) => void }) {
  const write = useWrite();
  const renders = useRef(0);
  renders.current += 1;
  const title = useRef<HTMLInputElement>(null);
  // The title is the user's while they type in it; otherwise it follows the row.
  useEffect(() => {
    const input = title.current;
    if (input && document.activeElement !== input) input.value = task.title;
  }, [task.title]);
  const save = () => {
    const value = title.current?.value ?? task.title;
    if (value !== task.title) {
      write([{ type: 'set', table: 'tasks', id: task.id, key: 'title', value, version: task.version }]).catch(ignore);
    }
  };
  const move = (delta: number) => {
    const next = STATUSES[STATUSES.indexOf(task.status) + delta];
    if (!next) return;
    write([
      { type: 'set', table: 'tasks', id: task.id, key: 'status', value: next },
      { type: 'set-now', table: 'tasks', id: task.id, key: 'updated_at' },
    ]).catch(ignore);
  };
  return (
    <div className={`card${pending ? ' pending' : ''}`} data-id={task.id} data-renders={renders.current}>
      <input
        ref={title}
        className="title"
        aria-label="title"
        defaultValue={task.title}
        onBlur={save}
        onKeyDown={(e) => e.key === 'Enter' && e.currentTarget.blur()}
      />
      <div className="tags">
        {(task.tags ?? []).map((tag) => (
          <span
            key={tag}
            className="tag"
            title="remove"
            onClick={() => write([{ type: 'listRemove', table: 'tasks', id: task.id, key: 'tags', value: tag }]).catch(ignore)}
          >
            {tag}
          </span>
        ))}
        <input
          className="tag-input"
          placeholder="+tag"
          size={5}
          onKeyDown={(e) => {
            const tag = e.currentTarget.value.trim();
            if (e.key !== 'Enter' || !tag) return;
            write([{ type: 'listInsert', table: 'tasks', id: task.id, key: 'tags', value: tag }]).catch(ignore);
            e.currentTarget.value = '';
          }}
        />
      </div>
      <div className="actions">
        <button className="left" disabled={task.status === 'todo'} onClick={() => move(-1)}>
          ←
        </button>
        <button className="right" disabled={task.status === 'done'} onClick={() => move(1)}>
          →
        </button>
        <button className="talk" onClick={() => onTalk(task.id)}>
          Comments
        </button>
      </div>
    </div>
  );
});

function Thread({ taskId, me, token, yjsUrl }: { taskId: string; me: string; token: string; yjsUrl: string }) {
  const task = useRecord<Task>('tasks', taskId);
  const comments = useRecords<Comment>('comments', { task_id: taskId }, byCreated);
  const room = `comments?task_id=${taskId}`;
  usePresence(room);
  const { typing, start, stop } = useTyping(room);
  const write = useWrite();
  const input = useRef<HTMLInputElement>(null);
  const others = typing.filter((user) => user !== me);
  const send = (e: React.FormEvent) => {
    e.preventDefault();
    const body = input.current?.value.trim();
    if (!body || !input.current) return;
    write([{ type: 'create', table: 'comments', id: crypto.randomUUID(), value: { task_id: taskId, author_id: me, body } }]).catch(ignore);
    input.current.value = '';
    stop();
  };
  return (
    <aside id="thread">
      <h2 id="thread-title">{task?.title ?? ''}</h2>
      <Description taskId={taskId} me={me} token={token} yjsUrl={yjsUrl} />
      <ul id="comments">
        {comments.map((c) => (
          <CommentItem key={c.id} comment={c} me={me} />
        ))}
      </ul>
      <p id="typing" className="typing">
        {others.length ? `${others.join(', ')} ${others.length > 1 ? 'are' : 'is'} typing…` : ''}
      </p>
      <form id="comment-form" onSubmit={send}>
        <input id="comment-input" ref={input} placeholder="Write a comment" autoComplete="off" onInput={start} />
        <button>Send</button>
      </form>
    </aside>
  );
}

const CommentItem = memo(function CommentItem({ comment, me }: { comment: Comment; me: string }) {
  const write = useWrite();
  const toggle = useCallback(
    (emoji: string, mine: boolean) =>
      write([
        { type: mine ? 'listRemove' : 'listInsert', table: 'comments', id: comment.id, key: ['reactions', emoji], value: me },
      ]).catch(ignore),
    [write, comment.id, me],
  );
  return (
    <li data-id={comment.id}>
      <b>{comment.author_id}: </b>
      {comment.body}
      <div className="reactions">
        {EMOJI.map((emoji) => {
          const users = comment.reactions?.[emoji] ?? [];
          const mine = users.includes(me);
          return (
            <button
              key={emoji}
              type="button"
              className={`reaction${mine ? ' mine' : ''}`}
              data-emoji={emoji}
              data-count={users.length}
              title={users.join(', ')}
              onClick={() => toggle(emoji, mine)}
            >
              {emoji} {users.length || ''}
            </button>
          );
        })}
      </div>
    </li>
  );
});
