-- rowsync's tables. Users never write them directly: the change log is appended by the
-- capture trigger (SECURITY DEFINER), the rest through the functions below.

-- The JWT claims the caller's transaction carries (PostgREST's request.jwt.claims).
CREATE FUNCTION rowsync.claims() RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb
$$;

-- The user id (`sub` claim), for policies: USING (owner_id = rowsync.user_id()).
CREATE FUNCTION rowsync.user_id() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
$$;

-- Anyone may call the functions; what each may do is decided by grants and policies.
GRANT USAGE ON SCHEMA rowsync TO PUBLIC;

CREATE TABLE rowsync.settings (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- How long the change log keeps a change; a client further behind is told to resync.
    change_retention  interval NOT NULL DEFAULT '7 days',
    -- How long a transaction id is remembered, so that a retry returns the first result.
    applied_retention interval NOT NULL DEFAULT '1 day',
    -- A listener not heard from for this long is forgotten by rowsync.prune().
    listener_timeout  interval NOT NULL DEFAULT '1 minute',
    -- Most ops in one transaction, and most pointers in one rowsync.get call.
    max_ops           integer  NOT NULL DEFAULT 1000 CHECK (max_ops > 0)
);
INSERT INTO rowsync.settings DEFAULT VALUES;
GRANT SELECT ON rowsync.settings TO PUBLIC;

-- Synced tables. `name` is how ops name the table.
CREATE TABLE rowsync.synced (
    rel     regclass PRIMARY KEY,
    name    text NOT NULL UNIQUE,
    pk      name NOT NULL,
    pk_type regtype NOT NULL,
    scopes  name[] NOT NULL DEFAULT '{}'
);
-- Anyone may read the registry (it names tables and columns, like the catalog); only a
-- table's owner may register or unregister it.
ALTER TABLE rowsync.synced ENABLE ROW LEVEL SECURITY;
CREATE POLICY synced_read ON rowsync.synced FOR SELECT USING (true);
CREATE POLICY synced_owner ON rowsync.synced FOR ALL
    USING (pg_catalog.pg_has_role(current_user,
        (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = rel), 'USAGE'))
    WITH CHECK (pg_catalog.pg_has_role(current_user,
        (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = rel), 'USAGE'));
GRANT SELECT, INSERT, UPDATE, DELETE ON rowsync.synced TO PUBLIC;

-- The change log: one row per changed row, ids only. Readers order it by (xid, cursor):
-- see rowsync.read_changes for why the cursor alone is not a safe order.
CREATE TABLE rowsync.changes (
    cursor     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    tx_id      uuid,
    tbl        text NOT NULL,
    row_id     text,
    version    bigint,
    -- insert, update, delete or truncate. No CHECK: only the capture triggers write here,
    -- and a CHECK's expression is rebuilt from its stored text at every insert.
    kind       text NOT NULL,
    old_scopes jsonb,
    new_scopes jsonb,
    -- When the row was written (close to commit, for delivery latency); retention reads it.
    at         timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
CREATE INDEX changes_order ON rowsync.changes (xid, cursor);
-- BRIN: `at` grows with the log, and only retention (rowsync.prune) reads it by range;
-- a B-tree here would be a third index insert on every write.
CREATE INDEX changes_at ON rowsync.changes USING brin (at);
-- Only roles granted SELECT (the bridge's authenticator) read the feed.
REVOKE ALL ON rowsync.changes FROM PUBLIC;
-- currval() tells apply the cursor of its own last change.
GRANT SELECT ON SEQUENCE rowsync.changes_cursor_seq TO PUBLIC;

-- Transaction ids already applied, with their result. Each user sees only their own.
CREATE TABLE rowsync.applied (
    tx_id  uuid PRIMARY KEY,
    owner  name NOT NULL DEFAULT current_user,
    sub    text DEFAULT rowsync.user_id(),
    result jsonb NOT NULL,
    at     timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX applied_at ON rowsync.applied (at);
ALTER TABLE rowsync.applied ENABLE ROW LEVEL SECURITY;
CREATE POLICY applied_own ON rowsync.applied
    USING (owner = current_user AND sub IS NOT DISTINCT FROM rowsync.user_id())
    WITH CHECK (owner = current_user AND sub IS NOT DISTINCT FROM rowsync.user_id());
GRANT SELECT, INSERT ON rowsync.applied TO PUBLIC;

-- Change-feed listeners (bridges). Writers NOTIFY only while some listener sleeps.
CREATE TABLE rowsync.listeners (
    id      text PRIMARY KEY,
    awake   boolean NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON rowsync.listeners FROM PUBLIC;
-- How many listeners sleep. A sequence, because its value is read in place, outside any
-- snapshot: a writer sees a listener fall asleep at once, whatever its isolation level.
CREATE SEQUENCE rowsync.sleepers MINVALUE 0 START 0;
REVOKE ALL ON rowsync.sleepers FROM PUBLIC;
