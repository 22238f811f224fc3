-- The example app: boards with members, tasks, comments. Row-level security decides who
-- sees and changes what, reading the JWT claims the PostgREST/Supabase way; rowsync adds
-- nothing to the permission model. Safe to run twice.
--
-- Users (the JWT `sub`): alice, bob, carol.
--   board "Launch" (…b1): alice owner, bob editor, carol viewer
--   board "Alice's notes" (…b2): alice only        board "Bob's errands" (…b3): bob only

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rowsync_authenticator') THEN
        -- The bridge logs in as this role and switches to the JWT's role per transaction.
        CREATE ROLE rowsync_authenticator LOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_user') THEN
        CREATE ROLE app_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_anon') THEN
        CREATE ROLE app_anon NOLOGIN;
    END IF;
END
$$;
GRANT app_user, app_anon TO rowsync_authenticator;

CREATE EXTENSION IF NOT EXISTS rowsync;
SELECT rowsync.grant_feed('rowsync_authenticator');

CREATE SCHEMA IF NOT EXISTS app;
GRANT USAGE ON SCHEMA app TO app_user, app_anon;

CREATE TABLE IF NOT EXISTS app.users (
    id      text PRIMARY KEY,
    name    text NOT NULL,
    color   text NOT NULL DEFAULT '#888888',
    version bigint NOT NULL DEFAULT 1
);

CREATE TABLE IF NOT EXISTS app.boards (
    id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name     text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    owner_id text NOT NULL DEFAULT rowsync.user_id() REFERENCES app.users,
    version  bigint NOT NULL DEFAULT 1
);

CREATE TABLE IF NOT EXISTS app.board_members (
    id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    board_id uuid NOT NULL REFERENCES app.boards ON DELETE CASCADE,
    user_id  text NOT NULL REFERENCES app.users,
    role     text NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    version  bigint NOT NULL DEFAULT 1,
    UNIQUE (board_id, user_id)
);

CREATE TABLE IF NOT EXISTS app.tasks (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    board_id   uuid NOT NULL REFERENCES app.boards ON DELETE CASCADE,
    title      text NOT NULL DEFAULT '' CHECK (length(title) <= 500),
    status     text NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'doing', 'done')),
    tags       text[] NOT NULL DEFAULT '{}',
    meta       jsonb NOT NULL DEFAULT '{}',
    rank       double precision NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    version    bigint NOT NULL DEFAULT 1
);
-- A task with private_to set is a private note on a shared board: only that user sees it.
ALTER TABLE app.tasks ADD COLUMN IF NOT EXISTS private_to text REFERENCES app.users;
-- The task's description is a collaborative document (rowsync.enable_doc below): its text
-- lives in rowsync's document tables; the column names it and its privileges govern it.
ALTER TABLE app.tasks ADD COLUMN IF NOT EXISTS description text;
CREATE INDEX IF NOT EXISTS tasks_board ON app.tasks (board_id);

CREATE TABLE IF NOT EXISTS app.comments (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id    uuid NOT NULL REFERENCES app.tasks ON DELETE CASCADE,
    author_id  text NOT NULL DEFAULT rowsync.user_id() REFERENCES app.users,
    body       text NOT NULL CHECK (length(body) BETWEEN 1 AND 5000),
    created_at timestamptz NOT NULL DEFAULT now(),
    version    bigint NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS comments_task ON app.comments (task_id);
-- Emoji reactions: {"👍": ["alice", "bob"]}, an ordered set of users per emoji, so that two
-- people reacting at once both count (each is a listInsert of their own id).
ALTER TABLE app.comments ADD COLUMN IF NOT EXISTS reactions jsonb NOT NULL DEFAULT '{}';

-- The boards where the caller holds one of `roles`. Read with the owner's rights, so that
-- the policies on board_members itself do not recurse. Policies ask
-- `board_id IN (SELECT app.boards_of(…))`: a sub-select that does not refer to the row
-- runs once per statement (a hashed subplan), not once per row (docs/sql/row-level-security.md, "Policies
-- that stay cheap").
CREATE OR REPLACE FUNCTION app.boards_of(roles text[]) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.board_id FROM app.board_members m
     WHERE m.user_id = rowsync.user_id() AND m.role = ANY (roles)
$$;

-- Whoever creates a board owns it.
CREATE OR REPLACE FUNCTION app.add_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO app.board_members (board_id, user_id, role) VALUES (NEW.id, NEW.owner_id, 'owner')
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS add_owner ON app.boards;
CREATE TRIGGER add_owner AFTER INSERT ON app.boards FOR EACH ROW EXECUTE FUNCTION app.add_owner();

-- Whoever sees a comment may react to it, so the update policy lets them change the row;
-- this trigger narrows that to what is theirs: only the author changes anything but the
-- reactions, and a user adds or removes only their own reactions. Writers without claims
-- (backends, as postgres) are not app users and are not checked.
CREATE OR REPLACE FUNCTION app.comments_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me text := rowsync.user_id();
BEGIN
    IF me IS NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.author_id IS DISTINCT FROM me
       AND (NEW.task_id, NEW.author_id, NEW.body, NEW.created_at)
           IS DISTINCT FROM (OLD.task_id, OLD.author_id, OLD.body, OLD.created_at) THEN
        RAISE EXCEPTION 'only its author may edit a comment' USING ERRCODE = '42501';
    END IF;
    IF jsonb_typeof(NEW.reactions) <> 'object' OR EXISTS (
        SELECT FROM jsonb_each(NEW.reactions) e WHERE jsonb_typeof(e.value) <> 'array'
    ) THEN
        RAISE EXCEPTION 'reactions are {"emoji": ["user", …]}' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (
        WITH old AS (SELECT e.key, u.value FROM jsonb_each(OLD.reactions) e, jsonb_array_elements(e.value) u),
             new AS (SELECT e.key, u.value FROM jsonb_each(NEW.reactions) e, jsonb_array_elements(e.value) u),
             changed AS ((SELECT * FROM new EXCEPT ALL SELECT * FROM old)
                         UNION ALL (SELECT * FROM old EXCEPT ALL SELECT * FROM new))
        SELECT FROM changed WHERE value IS DISTINCT FROM to_jsonb(me)
    ) THEN
        RAISE EXCEPTION 'a user adds and removes only their own reactions' USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS comments_guard ON app.comments;
CREATE TRIGGER comments_guard BEFORE UPDATE ON app.comments FOR EACH ROW EXECUTE FUNCTION app.comments_guard();

ALTER TABLE app.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.boards ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.board_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.comments ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS users_read ON app.users;
DROP POLICY IF EXISTS users_self ON app.users;
CREATE POLICY users_read ON app.users FOR SELECT TO app_user USING (true);
CREATE POLICY users_self ON app.users FOR UPDATE TO app_user
    USING (id = (SELECT rowsync.user_id())) WITH CHECK (id = (SELECT rowsync.user_id()));

DROP POLICY IF EXISTS boards_read ON app.boards;
DROP POLICY IF EXISTS boards_create ON app.boards;
DROP POLICY IF EXISTS boards_edit ON app.boards;
DROP POLICY IF EXISTS boards_delete ON app.boards;
CREATE POLICY boards_read ON app.boards FOR SELECT TO app_user
    USING (id IN (SELECT app.boards_of('{owner,editor,viewer}')));
CREATE POLICY boards_create ON app.boards FOR INSERT TO app_user
    WITH CHECK (owner_id = (SELECT rowsync.user_id()));
CREATE POLICY boards_edit ON app.boards FOR UPDATE TO app_user
    USING (id IN (SELECT app.boards_of('{owner,editor}')))
    WITH CHECK (id IN (SELECT app.boards_of('{owner,editor}')));
CREATE POLICY boards_delete ON app.boards FOR DELETE TO app_user
    USING (owner_id = (SELECT rowsync.user_id()));

DROP POLICY IF EXISTS members_read ON app.board_members;
DROP POLICY IF EXISTS members_manage ON app.board_members;
CREATE POLICY members_read ON app.board_members FOR SELECT TO app_user
    USING (user_id = (SELECT rowsync.user_id())
           OR board_id IN (SELECT app.boards_of('{owner,editor,viewer}')));
CREATE POLICY members_manage ON app.board_members FOR ALL TO app_user
    USING (board_id IN (SELECT app.boards_of('{owner}')))
    WITH CHECK (board_id IN (SELECT app.boards_of('{owner}')));

DROP POLICY IF EXISTS tasks_read ON app.tasks;
DROP POLICY IF EXISTS tasks_create ON app.tasks;
DROP POLICY IF EXISTS tasks_edit ON app.tasks;
DROP POLICY IF EXISTS tasks_delete ON app.tasks;
CREATE POLICY tasks_read ON app.tasks FOR SELECT TO app_user
    USING (board_id IN (SELECT app.boards_of('{owner,editor,viewer}'))
           AND (private_to IS NULL OR private_to = (SELECT rowsync.user_id())));
CREATE POLICY tasks_create ON app.tasks FOR INSERT TO app_user
    WITH CHECK (board_id IN (SELECT app.boards_of('{owner,editor}'))
                AND (private_to IS NULL OR private_to = (SELECT rowsync.user_id())));
CREATE POLICY tasks_edit ON app.tasks FOR UPDATE TO app_user
    USING (board_id IN (SELECT app.boards_of('{owner,editor}'))
           AND (private_to IS NULL OR private_to = (SELECT rowsync.user_id())))
    WITH CHECK (board_id IN (SELECT app.boards_of('{owner,editor}'))
                AND (private_to IS NULL OR private_to = (SELECT rowsync.user_id())));
CREATE POLICY tasks_delete ON app.tasks FOR DELETE TO app_user
    USING (board_id IN (SELECT app.boards_of('{owner,editor}'))
           AND (private_to IS NULL OR private_to = (SELECT rowsync.user_id())));

-- Comments follow their task: whoever can see the task sees its comments.
DROP POLICY IF EXISTS comments_read ON app.comments;
DROP POLICY IF EXISTS comments_create ON app.comments;
DROP POLICY IF EXISTS comments_own ON app.comments;
DROP POLICY IF EXISTS comments_update ON app.comments;
DROP POLICY IF EXISTS comments_delete ON app.comments;
CREATE POLICY comments_read ON app.comments FOR SELECT TO app_user
    USING (EXISTS (SELECT 1 FROM app.tasks t WHERE t.id = task_id));
CREATE POLICY comments_create ON app.comments FOR INSERT TO app_user
    WITH CHECK (author_id = (SELECT rowsync.user_id()) AND EXISTS (SELECT 1 FROM app.tasks t WHERE t.id = task_id));
-- Anyone who sees a comment may react to it; app.comments_guard keeps the rest the author's.
CREATE POLICY comments_update ON app.comments FOR UPDATE TO app_user
    USING (EXISTS (SELECT 1 FROM app.tasks t WHERE t.id = task_id))
    WITH CHECK (EXISTS (SELECT 1 FROM app.tasks t WHERE t.id = task_id));
CREATE POLICY comments_delete ON app.comments FOR DELETE TO app_user
    USING (author_id = (SELECT rowsync.user_id()));

GRANT SELECT ON app.users TO app_user, app_anon;
GRANT UPDATE (name, color) ON app.users TO app_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON app.boards, app.board_members, app.tasks, app.comments TO app_user;

SELECT rowsync.enable('app.users');
SELECT rowsync.enable('app.boards');
SELECT rowsync.enable('app.board_members', '{board_id,user_id}', access => true);
SELECT rowsync.enable('app.tasks', '{board_id}');
SELECT rowsync.enable('app.comments', '{task_id}');
SELECT rowsync.enable_doc('app.tasks', 'description');

INSERT INTO app.users (id, name, color) VALUES
    ('alice', 'Alice', '#e4572e'), ('bob', 'Bob', '#17bebb'), ('carol', 'Carol', '#76b041')
ON CONFLICT DO NOTHING;
INSERT INTO app.boards (id, name, owner_id) VALUES
    ('00000000-0000-4000-8000-0000000000b1', 'Launch', 'alice'),
    ('00000000-0000-4000-8000-0000000000b2', 'Alice''s notes', 'alice'),
    ('00000000-0000-4000-8000-0000000000b3', 'Bob''s errands', 'bob')
ON CONFLICT DO NOTHING;
INSERT INTO app.board_members (board_id, user_id, role) VALUES
    ('00000000-0000-4000-8000-0000000000b1', 'bob', 'editor'),
    ('00000000-0000-4000-8000-0000000000b1', 'carol', 'viewer')
ON CONFLICT DO NOTHING;
INSERT INTO app.tasks (id, board_id, title, status, tags, rank) VALUES
    ('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000b1', 'Write the announcement', 'todo', '{writing}', 1),
    ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-0000000000b1', 'Fix the signup form', 'doing', '{bug,web}', 2),
    ('00000000-0000-4000-8000-000000000003', '00000000-0000-4000-8000-0000000000b1', 'Book the venue', 'done', '{}', 3),
    ('00000000-0000-4000-8000-000000000004', '00000000-0000-4000-8000-0000000000b2', 'Alice''s secret plan', 'todo', '{private}', 1),
    ('00000000-0000-4000-8000-000000000005', '00000000-0000-4000-8000-0000000000b3', 'Buy milk', 'todo', '{}', 1)
ON CONFLICT DO NOTHING;
INSERT INTO app.comments (id, task_id, author_id, body) VALUES
    ('00000000-0000-4000-8000-0000000000c1', '00000000-0000-4000-8000-000000000002', 'bob', 'Repro: submit twice.')
ON CONFLICT DO NOTHING;
