// The example app's rows (sql/demo.sql), as the client hands them out.
export interface Board {
  id: string;
  name: string;
  owner_id: string;
  version: number;
}

export interface BoardMember {
  id: string;
  board_id: string;
  user_id: string;
  role: 'owner' | 'editor' | 'viewer';
  version: number;
}

export type Status = 'todo' | 'doing' | 'done';

export interface Task {
  id: string;
  board_id: string;
  title: string;
  status: Status;
  tags: string[];
  rank: number;
  private_to: string | null;
  updated_at: string;
  version: number;
}

export interface Comment {
  id: string;
  task_id: string;
  author_id: string;
  body: string;
  created_at: string;
  /** An ordered set of users per emoji: each user adds and removes only their own. */
  reactions: Record<string, string[]>;
  version: number;
}

export const STATUSES: Status[] = ['todo', 'doing', 'done'];
export const LABELS: Record<Status, string> = { todo: 'To do', doing: 'Doing', done: 'Done' };
export const COLORS: Record<string, string> = { alice: '#e4572e', bob: '#17bebb', carol: '#76b041' };
export const EMOJI = ['👍', '🎉', '❤️'];
