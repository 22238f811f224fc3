-- rowsync's tables. Users never write them directly: the change log is appended by the
-- capture trigger (SECURITY DEFINER), the rest through the functions below.

-- The JWT claims the caller's transaction carries (PostgREST's request.jwt.claims).
-- Policies call these for every row they check, so they are written to be inlined: no
-- SET clause (it would stop Postgres from inlining them), every name schema-qualified
-- instead, so a caller's search_path cannot redirect them. Write policies as
-- `(SELECT rowsync.user_id())` and Postgres evaluates it once per statement (docs/sql/row-level-security.md).
CREATE FUNCTION rowsync.claims() RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_catalog.current_setting('request.jwt.claims', true) OPERATOR(pg_catalog.<>) ''
                THEN pg_catalog.current_setting('request.jwt.claims', true)::pg_catalog.jsonb END
$$;

-- The user id (`sub` claim), for policies: USING (owner_id = (SELECT rowsync.user_id())).
CREATE FUNCTION rowsync.user_id() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_catalog.current_setting('request.jwt.claims', true) OPERATOR(pg_catalog.<>) ''
                THEN pg_catalog.current_setting('request.jwt.claims', true)::pg_catalog.jsonb
                     OPERATOR(pg_catalog.->>) 'sub' END
$$;

-- Anyone may call the functions; what each may do is decided by grants and policies.
GRANT USAGE ON SCHEMA rowsync TO PUBLIC;

CREATE TABLE rowsync.settings (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- How long the change log keeps a change; a client further behind is told to resync.
    change_retention  interval NOT NULL DEFAULT '7 days',
    -- Every feed position (tick) younger than this is kept; older ones are thinned to one
    -- per second, and past tick_seconds_for to one per minute. A token naming a thinned
    -- tick resumes from the kept one before it (a few changes arrive twice, none is lost).
    tick_keep_all     interval NOT NULL DEFAULT '5 minutes',
    tick_seconds_for  interval NOT NULL DEFAULT '1 hour',
    -- How long a transaction id is remembered, so that a retry returns the first result.
    applied_retention interval NOT NULL DEFAULT '1 day',
    -- A listener not heard from for this long is forgotten by rowsync.prune().
    listener_timeout  interval NOT NULL DEFAULT '1 minute',
    -- Most ops in one transaction, and most pointers in one rowsync.get call.
    max_ops           integer  NOT NULL DEFAULT 1000 CHECK (max_ops > 0),
    -- Largest payload of one rowsync.send event, in bytes of its JSON text (the bridge's
    -- default max_frame_bytes: an event must fit in one frame).
    max_event_bytes   integer  NOT NULL DEFAULT 65536 CHECK (max_event_bytes > 0),
    -- Largest Yjs update rowsync.doc_append stores (a whole document sent by a client that
    -- was offline is one update).
    doc_max_update_bytes integer NOT NULL DEFAULT 8388608 CHECK (doc_max_update_bytes > 0),
    -- A document is due for compaction (its log merged into its snapshot) when its log
    -- holds this many updates or bytes, or has been idle this long.
    doc_compact_updates integer NOT NULL DEFAULT 500 CHECK (doc_compact_updates > 0),
    doc_compact_bytes   bigint NOT NULL DEFAULT 1048576 CHECK (doc_compact_bytes > 0),
    doc_compact_idle    interval NOT NULL DEFAULT '1 minute',
    -- Updates younger than this stay in the log: bridges read new updates from it (through
    -- the feed), and a bridge that finds one compacted away reloads the whole document.
    doc_update_min_age  interval NOT NULL DEFAULT '1 minute',
    -- Names this change log in resume tokens: a token from another database or cluster
    -- (or from before rowsync.reset_feed()) resyncs instead of resuming in the wrong place.
    feed_id           uuid     NOT NULL DEFAULT pg_catalog.gen_random_uuid()
);
INSERT INTO rowsync.settings DEFAULT VALUES;
GRANT SELECT ON rowsync.settings TO PUBLIC;

-- The key of the MAC that ends every resume token (bridge/src/token.rs). Only feed roles
-- read it (rowsync.grant_feed), so nobody else can make a token that a bridge accepts.
CREATE TABLE rowsync.token_key (
    key uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid()
);
INSERT INTO rowsync.token_key DEFAULT VALUES;

-- Whether `name` may name a table in keys (table:id, table?column=value): a name, or
-- schema.name, of letters, digits and _, so that it can never make a key mean something
-- else. Used by the registry's CHECK, rowsync.enable and rowsync.send.
CREATE FUNCTION rowsync._key_name(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT name OPERATOR(pg_catalog.~) '^[A-Za-z0-9_]{1,63}(\.[A-Za-z0-9_]{1,63})?$'
$$;

-- Synced tables. `name` is how ops name the table.
CREATE TABLE rowsync.synced (
    rel     regclass PRIMARY KEY,
    name    text NOT NULL UNIQUE CHECK (rowsync._key_name(name)),
    pk      name NOT NULL,
    pk_type regtype NOT NULL,
    scopes  name[] NOT NULL DEFAULT '{}',
    -- Its rows decide who may see other rows (board memberships): bridges check their
    -- connections' access again when it changes.
    access  boolean NOT NULL DEFAULT false,
    -- Who receives its changes: 'rls', each subscriber's policies, row by row; 'scope',
    -- whoever may follow the row's scope (a declaration the bridge checks by sampling).
    visibility text NOT NULL DEFAULT 'rls' CHECK (visibility IN ('rls', 'scope'))
);
-- Anyone may read the registry (it names tables and columns, like the catalog); only a
-- table's owner may register it or change its row. Updates are granted by column and
-- deletes not at all: a table-wide UPDATE or DELETE privilege would let any role LOCK the
-- registry, which every write to a synced table may read. rowsync._unregister deletes.
-- Whether the current role acts as the owner of `rel`: the registries' policies ask.
CREATE FUNCTION rowsync._owns(rel regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = rel), 'USAGE')
$$;
ALTER TABLE rowsync.synced ENABLE ROW LEVEL SECURITY;
CREATE POLICY synced_read ON rowsync.synced FOR SELECT USING (true);
CREATE POLICY synced_owner ON rowsync.synced FOR ALL
    USING (rowsync._owns(rel)) WITH CHECK (rowsync._owns(rel));
GRANT SELECT, INSERT ON rowsync.synced TO PUBLIC;
GRANT UPDATE (name, pk, pk_type, scopes, access, visibility) ON rowsync.synced TO PUBLIC;

-- The change log: one row per changed row, ids only, and one per rowsync.send event.
-- Written only by the capture triggers and rowsync.send (SECURITY DEFINER, both checked
-- against the registry). Readers go by ticks (rowsync.ticks), never by cursor alone: see
-- rowsync.read_changes.
CREATE TABLE rowsync.changes (
    -- The writer's top-level transaction: its changes become readable together, at the
    -- first tick whose snapshot sees it committed.
    xid        xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    -- Order within a transaction (and a tie-break between them).
    cursor     bigint GENERATED ALWAYS AS IDENTITY,
    -- The relation the capture trigger fired on (NULL for events): the log says which
    -- table changed by what Postgres reports, not by anything a caller passed.
    rel        oid,
    tx_id      uuid,
    tbl        text,
    row_id     text,
    version    bigint,
    -- insert, update, delete, truncate, event, or doc (updates of a document: tbl and
    -- row_id name its row, topic its column, rowsync.doc_updates holds them). No CHECK: only rowsync's own functions
    -- write here, and a CHECK's expression is rebuilt from its stored text at every insert.
    kind       text NOT NULL,
    old_scopes jsonb,
    new_scopes jsonb,
    -- Events (rowsync.send): the canonical topic and {"event", "data", "from"}.
    topic      text,
    payload    jsonb,
    -- When the row was written (close to commit): the delivery latency metric reads it.
    at         timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
-- The one index: every read is a range or a probe by xid, and retention deletes by xid.
-- Each index more is paid by every synced write (docs/benchmarks.md, write path).
CREATE UNIQUE INDEX changes_order ON rowsync.changes (xid, cursor);
-- Only roles granted the feed (the bridge's authenticator) read it.
REVOKE ALL ON rowsync.changes FROM PUBLIC;

-- Feed positions. A tick is a snapshot taken on the primary; the changes of batch N are
-- those whose transaction is visible at tick N and not at tick N-1. A transaction open
-- for hours holds back nothing but itself: it lands in the batch of the tick after it
-- commits (PgQ's design).
CREATE TABLE rowsync.ticks (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    snap pg_catalog.pg_snapshot NOT NULL,
    at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
REVOKE ALL ON rowsync.ticks FROM PUBLIC;
-- The origin: nothing was logged before the extension existed.
INSERT INTO rowsync.ticks (snap) VALUES (pg_catalog.pg_current_snapshot());

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
-- apply claims an id with a 'null' result before its writes, and stores the result on
-- the claim after them (extension/src/apply.rs); a failed call releases its claim. A
-- stored result is written once: only a claim may be updated or deleted, and only by
-- its own user.
CREATE POLICY applied_read ON rowsync.applied FOR SELECT
    USING (owner = current_user AND sub IS NOT DISTINCT FROM rowsync.user_id());
CREATE POLICY applied_claim ON rowsync.applied FOR INSERT
    WITH CHECK (owner = current_user AND sub IS NOT DISTINCT FROM rowsync.user_id());
CREATE POLICY applied_store ON rowsync.applied FOR UPDATE
    USING (owner = current_user AND sub IS NOT DISTINCT FROM rowsync.user_id()
           AND result OPERATOR(pg_catalog.=) 'null'::jsonb)
    WITH CHECK (owner = current_user AND sub IS NOT DISTINCT FROM rowsync.user_id());
CREATE POLICY applied_release ON rowsync.applied FOR DELETE
    USING (owner = current_user AND sub IS NOT DISTINCT FROM rowsync.user_id()
           AND result OPERATOR(pg_catalog.=) 'null'::jsonb);
GRANT SELECT, INSERT, DELETE ON rowsync.applied TO PUBLIC;
GRANT UPDATE (result) ON rowsync.applied TO PUBLIC;

-- Change-feed listeners (bridges). Writers NOTIFY only while some listener sleeps.
CREATE TABLE rowsync.listeners (
    id      text PRIMARY KEY,
    awake   boolean NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON rowsync.listeners FROM PUBLIC;
-- How many listeners sleep. A sequence, because its value is read in place, outside any
-- snapshot: a committing writer sees a listener fall asleep at once, whatever its
-- isolation level. Every writer reads it once, at commit, as itself: reading tells no
-- more than that some bridge sleeps; only rowsync's functions change it.
CREATE SEQUENCE rowsync.sleepers MINVALUE 0 START 0;
REVOKE ALL ON rowsync.sleepers FROM PUBLIC;
GRANT SELECT ON rowsync.sleepers TO PUBLIC;
-- Counted, so that reading it never finds it unset.
SELECT pg_catalog.setval('rowsync.sleepers', 0, true);

-- The bus between bridges: presence and broadcast events, which are not stored changes.
-- Only feed roles read or write it (rowsync.bus_publish, rowsync.bus_read); a NOTIFY on
-- `rowsync_bus` is only a doorbell with no payload, so any role ringing it costs a read
-- and learns nothing. Unlogged: presence re-announces itself after a crash.
CREATE UNLOGGED TABLE rowsync.bus (
    xid    xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    seq    bigint GENERATED ALWAYS AS IDENTITY,
    bridge text NOT NULL,
    events jsonb NOT NULL,
    at     timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
CREATE INDEX bus_order ON rowsync.bus (xid, seq);
REVOKE ALL ON rowsync.bus FROM PUBLIC;
