-- The change feed: ticks, the one reader of the log, server events and retention. Only
-- feed roles (rowsync.grant_feed, grants.sql) call these, rowsync.send aside.

-- ── Ticks ─────────────────────────────────────────────────────────────────────────────
-- Takes a tick when something committed since the last one, and returns the newest
-- tick: it covers every transaction that committed before the call. One ticker at a
-- time: the others wait for it (a lock on rowsync.ticks, released when its tick commits,
-- which only rowsync's owner may take: an advisory lock could be taken by any role), then
-- find its tick, taken after their call began, or take their own. Waiting matters: a
-- listener's last read before it sleeps must see every transaction that ended before it;
-- a tick older than the call would not. The lock is taken before the snapshot and
-- released only after the tick commits, so each tick's snapshot sees everything the one
-- before saw: ticks are monotone. Call it in a transaction of its own (autocommit): a
-- tick taken in an older snapshot would not be monotone, and an open transaction would
-- hold the lock.
CREATE FUNCTION rowsync.tick() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Plans for these bounds' actual values: a generic plan guesses that xid >= $1 matches a
-- third of the log, and scans it (13 ms a poll at 200k changes, against 0.3 ms).
SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    last rowsync.ticks;
    running xid8[];
    waited text;
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION USING ERRCODE = 'RS006', MESSAGE = 'rowsync.tick() runs on the primary only',
            DETAIL = 'a snapshot taken on a standby lists no running transactions',
            HINT = 'let a bridge on the primary tick';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'RS006', MESSAGE = 'rowsync.tick() needs READ COMMITTED',
            DETAIL = format('this transaction is %s: its snapshot may be older than the last tick',
                            current_setting('transaction_isolation')),
            HINT = 'call it (or rowsync.advance) in a transaction of its own';
    END IF;
    -- A ticker that holds the lock for long is a bug or a crash in the making: fail
    -- loudly (55P03) rather than stall every reader behind it.
    waited := current_setting('lock_timeout');
    PERFORM set_config('lock_timeout', '5s', true);
    LOCK TABLE rowsync.ticks IN SHARE ROW EXCLUSIVE MODE;
    PERFORM set_config('lock_timeout', waited, true);
    SELECT * INTO last FROM rowsync.ticks t ORDER BY t.id DESC LIMIT 1;
    -- Running at the last tick: a value, so that the plan probes the index for each.
    running := ARRAY(SELECT pg_snapshot_xip(last.snap));
    -- max(), not EXISTS: it is always one probe at the index's end, where an EXISTS over
    -- a log without fresh statistics is planned as a sequential scan that stops at the
    -- first match, and an idle poll has none.
    IF (SELECT max(c.xid) FROM rowsync.changes c) >= pg_snapshot_xmax(last.snap)
       OR EXISTS (SELECT 1 FROM rowsync.changes c WHERE c.xid = ANY (running)) THEN
        -- Asynchronous commit for the tick alone (SET LOCAL: a SET clause would be undone
        -- before the commit). A tick lost in a crash is caught by the token's check.
        PERFORM set_config('synchronous_commit', 'off', true);
        INSERT INTO rowsync.ticks (snap) VALUES (pg_current_snapshot()) RETURNING id INTO last.id;
    END IF;
    RETURN last.id;
END
$$;

-- A tick as resume tokens carry it: a check of its snapshot, and when it was taken in
-- milliseconds since the epoch. The one definition, for rowsync.advance and the bridge.
CREATE VIEW rowsync.tick_marks AS
    SELECT t.id, pg_catalog.hashtext(t.snap::pg_catalog.text) AS snap_check,
           (pg_catalog.date_part('epoch', t.at) OPERATOR(pg_catalog.*) 1000)::bigint AS at_ms
      FROM rowsync.ticks t;
REVOKE ALL ON rowsync.tick_marks FROM PUBLIC;

-- ── Reading ───────────────────────────────────────────────────────────────────────────
-- The changes visible at tick `upto` and not at tick `since`, after the key
-- (after_xid, after_cursor), in (xid, cursor) order, at most max_rows of them: the one
-- reader of the log, for the live feed and for catch-up alike. A transaction's changes
-- share an xid, so they are in one batch and next to each other.
--
-- `since` may name a tick that thinning removed: the newest kept tick before it stands
-- in, and some changes are read twice (never skipped). A `since` older than every kept
-- tick, or an `upto` that is not kept, is RS410: the reader resyncs.
--
-- Cost (PgQ's method): one index range over the xids that began after tick `since`, and
-- one index probe per xid that was running at `since`; a transaction open for hours, in
-- this database or another, costs one probe and holds back nothing.
CREATE FUNCTION rowsync.read_changes(since bigint, upto bigint, after_xid xid8 DEFAULT '0',
                                     after_cursor bigint DEFAULT 0, max_rows integer DEFAULT 1000)
RETURNS TABLE (xid xid8, cursor bigint, tx_id uuid, tbl text, row_id text, version bigint,
               kind text, old_scopes jsonb, new_scopes jsonb, topic text, payload jsonb,
               at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    lo pg_snapshot;
    hi pg_snapshot;
    fresh xid8[];
    -- Where the range branch starts: one row comparison, so that the index scan starts
    -- there (with a second lower bound on xid, the btree would start at the lower of them).
    start_xid xid8;
    start_cursor bigint;
BEGIN
    IF max_rows < 1 OR since > upto THEN
        RAISE EXCEPTION USING ERRCODE = 'RS001',
            MESSAGE = 'rowsync.read_changes: needs since <= upto and max_rows >= 1',
            DETAIL = format('since = %s, upto = %s, max_rows = %s', since, upto, max_rows),
            HINT = 'read from a tick to a newer one, such as rowsync.head()';
    END IF;
    SELECT t.snap INTO lo FROM rowsync.ticks t WHERE t.id <= since ORDER BY t.id DESC LIMIT 1;
    SELECT t.snap INTO hi FROM rowsync.ticks t WHERE t.id = upto;
    IF lo IS NULL OR hi IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'RS410',
            MESSAGE = format('position %s..%s is not in the change log', since, upto),
            DETAIL = 'it is older than the retention window, or was never issued',
            HINT = 'resync: read the rows again, then follow the feed from rowsync.head()';
    END IF;
    -- Running at `since`, finished by `upto`.
    SELECT coalesce(array_agg(x), '{}') INTO fresh
      FROM pg_snapshot_xip(lo) x WHERE pg_visible_in_snapshot(x, hi);
    -- Cursors are at least 1, so (x, 0) < (x, c) for every change of transaction x.
    IF after_xid >= pg_snapshot_xmax(lo) THEN
        start_xid := after_xid;
        start_cursor := after_cursor;
    ELSE
        start_xid := pg_snapshot_xmax(lo);
        start_cursor := 0;
    END IF;
    -- NOT visible(x, lo) ⇔ x >= xmax(lo) ∨ x ∈ xip(lo), and xip(lo) lies below xmax(lo):
    -- the two branches are disjoint, and together are exactly the batch. The explicit
    -- visible(x, hi) matters: this statement's own snapshot is newer than tick `upto`.
    RETURN QUERY
        SELECT c.xid, c.cursor, c.tx_id, c.tbl, c.row_id, c.version, c.kind, c.old_scopes,
               c.new_scopes, c.topic, c.payload, c.at
          FROM (SELECT * FROM rowsync.changes c
                 WHERE (c.xid, c.cursor) > (start_xid, start_cursor)
                   AND c.xid < pg_snapshot_xmax(hi)
                   AND pg_visible_in_snapshot(c.xid, hi)
                UNION ALL
                SELECT * FROM rowsync.changes c
                 WHERE c.xid = ANY (fresh) AND (c.xid, c.cursor) > (after_xid, after_cursor)) c
         ORDER BY c.xid, c.cursor
         LIMIT max_rows;
END
$$;

-- The awake feed's poll in one round trip: tick, then the first page of (since, newest],
-- each row with the new tick, its check (the hash of its snapshot) and when it was taken
-- (milliseconds since the epoch), which resume tokens carry. No rows when nothing
-- committed since `since`.
CREATE FUNCTION rowsync.advance(since bigint, max_rows integer DEFAULT 1000)
RETURNS TABLE (upto bigint, upto_check integer, upto_at bigint, xid xid8, cursor bigint, tx_id uuid, tbl text,
               row_id text, version bigint, kind text, old_scopes jsonb, new_scopes jsonb,
               topic text, payload jsonb, at timestamptz)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    newest bigint := rowsync.tick();
    newest_check integer;
    newest_at bigint;
BEGIN
    IF newest > since THEN
        SELECT m.snap_check, m.at_ms INTO newest_check, newest_at
          FROM rowsync.tick_marks m WHERE m.id = newest;
        RETURN QUERY SELECT newest, newest_check, newest_at, r.*
                       FROM rowsync.read_changes(since, newest, '0', 0, max_rows) r;
    END IF;
END
$$;

-- The newest tick: where a new reader starts, after reading its rows.
CREATE FUNCTION rowsync.head() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT max(t.id) FROM rowsync.ticks t
$$;

-- Starts the feed over, after a logical restore (whose xids mean nothing to the new
-- cluster) or to drop the log: every stored token resyncs.
CREATE FUNCTION rowsync.reset_feed() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    LOCK TABLE rowsync.ticks IN EXCLUSIVE MODE;
    TRUNCATE rowsync.changes;
    DELETE FROM rowsync.ticks;
    INSERT INTO rowsync.ticks (snap) VALUES (pg_current_snapshot());
    UPDATE rowsync.settings SET feed_id = gen_random_uuid();
    UPDATE rowsync.token_key SET key = gen_random_uuid();
END
$$;

-- ── Server events ─────────────────────────────────────────────────────────────────────
-- Delivers `event` with `payload` to the connections following `topic`, after the calling
-- transaction commits, in order with that transaction's row changes; nothing if it rolls
-- back. It rides the change log, so a client that resumes from a token gets the events it
-- missed. Topics: a record key `table:id`, a scope key `table?column=value` (the
-- connections subscribed to the key, or in the presence room of that name), or
-- `user:<sub>`, every connection of that user. Only roles granted rowsync.grant_send call
-- it. Returns the event's cursor in the log.
CREATE FUNCTION rowsync.send(topic text, event text, payload jsonb DEFAULT 'null')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts text[];
    canonical text;
    size integer := octet_length(coalesce(payload, 'null')::text);
    limit_bytes integer := (SELECT s.max_event_bytes FROM rowsync.settings s);
    logged bigint;
BEGIN
    -- A uuid in a key is spelled in lower case, as Postgres prints it (docs/protocol.md).
    parts := regexp_match(topic, '^([^:?]+)(:|\?[A-Za-z0-9_]{1,63}=)(.+)$');
    IF topic LIKE 'user:_%' AND octet_length(topic) <= 512 THEN
        canonical := topic;
    ELSIF parts IS NOT NULL AND rowsync._key_name(parts[1]) AND octet_length(topic) <= 512 THEN
        IF NOT EXISTS (SELECT 1 FROM rowsync.synced WHERE name = parts[1]) THEN
            RAISE EXCEPTION USING ERRCODE = 'RS002', MESSAGE = format('table "%s" is not synced', parts[1]),
                DETAIL = format('topic %s names it', topic), HINT = 'call rowsync.enable(table) first';
        END IF;
        canonical := parts[1] || parts[2] || CASE
            WHEN parts[3] ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN lower(parts[3])
            ELSE parts[3] END;
    ELSE
        RAISE EXCEPTION USING ERRCODE = 'RS001', MESSAGE = format('rowsync.send: %s is not a topic', left(topic, 80)),
            DETAIL = 'topics are table:id, table?column=value or user:<sub>, at most 512 bytes',
            HINT = 'name a record, a scope or a user';
    END IF;
    IF event IS NULL OR length(event) NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION USING ERRCODE = 'RS001', MESSAGE = 'rowsync.send: the event name needs 1 to 100 characters',
            DETAIL = format('got %s characters', coalesce(length(event), 0)), HINT = 'name the event, such as task_done';
    END IF;
    IF size > limit_bytes THEN
        RAISE EXCEPTION USING ERRCODE = 'RS413', MESSAGE = format('rowsync.send: the payload is %s bytes', size),
            DETAIL = format('rowsync.settings.max_event_bytes is %s', limit_bytes),
            HINT = 'send an id and let clients fetch the rest';
    END IF;
    INSERT INTO rowsync.changes (kind, topic, payload)
    VALUES ('event', canonical, jsonb_build_object('event', event, 'data', coalesce(payload, 'null'),
                                                   'from', rowsync.user_id()))
    RETURNING cursor INTO logged;
    PERFORM rowsync._changed();
    RETURN logged;
END
$$;
REVOKE ALL ON FUNCTION rowsync.send(text, text, jsonb) FROM PUBLIC;

-- Lets `role` send events: a backend, a worker, the owner of a trigger that calls send.
CREATE FUNCTION rowsync.grant_send(role regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION rowsync.send(text, text, jsonb) TO %s', role);
END
$$;
REVOKE ALL ON FUNCTION rowsync.grant_send(regrole) FROM PUBLIC;

-- ── Retention ─────────────────────────────────────────────────────────────────────────
-- Deletes changes and ticks past change_retention, thins old ticks, and forgets applied
-- transaction ids, bus events and silent listeners past theirs (rowsync.settings).
-- Run it periodically: the bridge does, or pg_cron.
--
-- The floor is the newest tick older than change_retention. Every change visible at it
-- was delivered in a batch at or before it, so it may go, however old its transaction:
-- one that stayed open for days is kept until a tick has seen it commit.
CREATE FUNCTION rowsync.prune() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s rowsync.settings;
    floor rowsync.ticks;
    changes bigint := 0;
    ticks bigint := 0;
    thinned bigint;
    applied bigint;
    listeners bigint;
BEGIN
    SELECT * INTO s FROM rowsync.settings;
    SELECT * INTO floor FROM rowsync.ticks t
     WHERE t.at < now() - s.change_retention ORDER BY t.id DESC LIMIT 1;
    IF FOUND THEN
        DELETE FROM rowsync.changes c
         WHERE c.xid < pg_snapshot_xmax(floor.snap) AND pg_visible_in_snapshot(c.xid, floor.snap);
        GET DIAGNOSTICS changes = ROW_COUNT;
        DELETE FROM rowsync.ticks t WHERE t.id < floor.id;
        GET DIAGNOSTICS ticks = ROW_COUNT;
    END IF;
    -- Removing tick b between a and c merges two batches: (a,b] ∪ (b,c] = (a,c].
    DELETE FROM rowsync.ticks t USING (
        SELECT k.id, max(k.id) OVER (PARTITION BY date_trunc(
                   CASE WHEN k.at > now() - s.tick_seconds_for THEN 'second' ELSE 'minute' END, k.at)) AS keep
          FROM rowsync.ticks k
         WHERE k.at < now() - s.tick_keep_all) old
     WHERE t.id = old.id AND old.id <> old.keep AND t.id > coalesce(floor.id, 0);
    GET DIAGNOSTICS thinned = ROW_COUNT;
    DELETE FROM rowsync.applied WHERE at < now() - s.applied_retention;
    GET DIAGNOSTICS applied = ROW_COUNT;
    -- Documents whose row was deleted and not re-created by its deleter in time.
    DELETE FROM rowsync.docs WHERE retired_at < now() - s.applied_retention;
    DELETE FROM rowsync.bus WHERE at < now() - s.listener_timeout;
    LOCK TABLE rowsync.listeners IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM rowsync.listeners WHERE seen_at < now() - s.listener_timeout;
    GET DIAGNOSTICS listeners = ROW_COUNT;
    PERFORM setval('rowsync.sleepers', (SELECT count(*) FROM rowsync.listeners WHERE NOT awake), true);
    RETURN jsonb_build_object('changes', changes, 'ticks', ticks + thinned, 'applied', applied,
                              'listeners', listeners);
END
$$;
