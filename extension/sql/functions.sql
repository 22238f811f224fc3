-- rowsync's SQL surface. Every function pins its search_path, except the hot path's
-- wrappers, apply and get: a SET clause stops Postgres from inlining a SQL function and
-- costs a settings save and restore per call. They name everything by schema instead,
-- and they run with the caller's rights, so a caller's search_path can only mislead the
-- caller. Only the capture trigger and the feed's housekeeping run with the owner's
-- rights, and they are narrow.

-- Raises a `{"error": …}` value from _apply/_get with its own SQLSTATE.
CREATE FUNCTION rowsync._raise_if_error(result jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF result OPERATOR(pg_catalog.?) 'error' THEN
        RAISE EXCEPTION USING
            ERRCODE = result OPERATOR(pg_catalog.#>>) '{error,sqlstate}',
            MESSAGE = result OPERATOR(pg_catalog.#>>) '{error,message}',
            DETAIL = result OPERATOR(pg_catalog.#>>) '{error,detail}',
            HINT = result OPERATOR(pg_catalog.#>>) '{error,hint}';
    END IF;
    RETURN result;
END
$$;

CREATE FUNCTION rowsync.apply(tx jsonb) RETURNS jsonb
LANGUAGE sql VOLATILE AS $$
    SELECT rowsync._raise_if_error(rowsync._apply(coalesce(tx, 'null')))
$$;

CREATE FUNCTION rowsync.get(pointers jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT rowsync._raise_if_error(rowsync._get(coalesce(pointers, 'null')))
$$;

-- The capture trigger (extension/src/capture.rs): bumps version and appends to the
-- change log, in the writer's transaction. Arguments: the table's name in ops, its key
-- column, its scope columns. It fires last among BEFORE triggers (by name), after any
-- trigger that might skip the row. No pinned search_path: its one statement names
-- everything by schema.
CREATE FUNCTION rowsync._capture() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', '_capture_wrapper';

-- TRUNCATE has no rows to log: it logs one 'truncate' change, and subscribers resync.
CREATE FUNCTION rowsync._capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO rowsync.changes (tx_id, tbl, kind)
    VALUES (nullif(current_setting('rowsync.tx_id', true), '')::uuid, TG_ARGV[0], 'truncate');
    IF pg_sequence_last_value('rowsync.sleepers') > 0 THEN
        PERFORM pg_notify('rowsync', pg_current_xact_id()::text);
    END IF;
    RETURN NULL;
END
$$;
-- EXECUTE stays granted: CREATE TRIGGER needs it, and Postgres refuses to call a trigger
-- function other than as a trigger.

CREATE FUNCTION rowsync.enable(tbl regclass, scopes text[] DEFAULT '{}') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    key_columns name[];
    key_type regtype;
    version_type regtype;
    table_name text;
    scope text;
    trigger_args text;
BEGIN
    SELECT array_agg(a.attname), min(a.atttypid::regtype::text)::regtype
      INTO key_columns, key_type
      FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = tbl AND i.indisprimary;
    IF coalesce(array_length(key_columns, 1), 0) <> 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'RS005',
            MESSAGE = format('%s cannot be synced: it needs a single-column primary key', tbl),
            DETAIL = format('primary key columns: %s', coalesce(key_columns::text, 'none')),
            HINT = 'add a primary key of type uuid, text, varchar, integer or bigint';
    END IF;
    IF key_type NOT IN ('uuid'::regtype, 'text'::regtype, 'bigint'::regtype,
                        'integer'::regtype, 'character varying'::regtype) THEN
        RAISE EXCEPTION USING ERRCODE = 'RS005',
            MESSAGE = format('%s cannot be synced: its primary key is of type %s', tbl, key_type),
            DETAIL = 'rowsync keys rows by uuid, text, varchar, integer or bigint',
            HINT = 'use a uuid key: clients create rows with ids they generate';
    END IF;
    SELECT a.atttypid::regtype INTO version_type
      FROM pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = 'version' AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN version bigint NOT NULL DEFAULT 1', tbl);
    ELSIF version_type <> 'bigint'::regtype THEN
        RAISE EXCEPTION USING ERRCODE = 'RS005',
            MESSAGE = format('%s cannot be synced: its version column is %s, not bigint', tbl, version_type),
            DETAIL = 'rowsync counts versions in a bigint column named version',
            HINT = format('ALTER TABLE %s ALTER COLUMN version TYPE bigint', tbl);
    END IF;
    FOREACH scope IN ARRAY coalesce(scopes, '{}') LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = scope
                       AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION USING ERRCODE = 'RS003',
                MESSAGE = format('%s has no column %I to use as a scope', tbl, scope),
                DETAIL = 'scopes are columns that group rows, such as board_id',
                HINT = 'check the column name';
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = tbl AND c.relrowsecurity) THEN
        RAISE NOTICE '% has no row-level security: every role with privileges on it sees every row', tbl;
    END IF;

    -- Ops name a table by its own name, or schema.name when that is taken.
    SELECT s.name INTO table_name FROM rowsync.synced s WHERE s.rel = tbl;
    IF table_name IS NULL THEN
        SELECT CASE WHEN EXISTS (SELECT 1 FROM rowsync.synced s WHERE s.name = c.relname)
                    THEN n.nspname || '.' || c.relname ELSE c.relname::text END
          INTO table_name
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = tbl;
    END IF;

    SELECT string_agg(quote_literal(arg), ', ')
      INTO trigger_args
      FROM unnest(ARRAY[table_name, key_columns[1]::text] || coalesce(scopes, '{}')) AS arg;
    EXECUTE format('CREATE OR REPLACE TRIGGER zzz_rowsync_capture BEFORE INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION rowsync._capture(%s)', tbl, trigger_args);
    EXECUTE format('CREATE OR REPLACE TRIGGER zzz_rowsync_truncate BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION rowsync._capture_truncate(%L)', tbl, table_name);
    INSERT INTO rowsync.synced (rel, name, pk, pk_type, scopes)
    VALUES (tbl, table_name, key_columns[1], key_type, coalesce(scopes, '{}')::name[])
    ON CONFLICT (rel) DO UPDATE SET pk = EXCLUDED.pk, pk_type = EXCLUDED.pk_type, scopes = EXCLUDED.scopes;
END
$$;

CREATE FUNCTION rowsync.disable(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS zzz_rowsync_capture ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS zzz_rowsync_truncate ON %s', tbl);
    DELETE FROM rowsync.synced WHERE rel = tbl;
END
$$;

-- The change feed after `after` (0: from the start of the log), in feed order.
--
-- Cursors come from a sequence, so a transaction can take a lower cursor and commit after
-- one with a higher cursor; reading "cursor > n" would skip it. Rows are read only from
-- transactions older than every running one (xid below the snapshot's xmin), whose
-- changes are all final, in (xid, cursor) order. A cursor stands for its position in
-- that order, so a reader resumes exactly where it stopped.
CREATE FUNCTION rowsync.read_changes(after bigint, max_rows integer DEFAULT 1000)
RETURNS TABLE (cursor bigint, tx_id uuid, tbl text, row_id text, version bigint, kind text,
               old_scopes jsonb, new_scopes jsonb, at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    start_xid xid8;
    horizon xid8 := pg_snapshot_xmin(pg_current_snapshot());
BEGIN
    IF after < 0 OR max_rows < 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'RS001',
            MESSAGE = 'rowsync.read_changes: after must be >= 0 and max_rows >= 1',
            DETAIL = format('after = %s, max_rows = %s', after, max_rows),
            HINT = 'start from 0 or from rowsync.head()';
    END IF;
    IF after > 0 THEN
        SELECT c.xid INTO start_xid FROM rowsync.changes c WHERE c.cursor = after;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'RS410',
                MESSAGE = format('cursor %s is not in the change log', after),
                DETAIL = 'it is older than the retention window, or was never issued',
                HINT = 'resync: take rowsync.head() first, then read the rows again, then follow the feed from that head';
        END IF;
        RETURN QUERY
            SELECT c.cursor, c.tx_id, c.tbl, c.row_id, c.version, c.kind, c.old_scopes, c.new_scopes, c.at
              FROM rowsync.changes c
             WHERE (c.xid, c.cursor) > (start_xid, after) AND c.xid < horizon
             ORDER BY c.xid, c.cursor
             LIMIT max_rows;
    ELSE
        RETURN QUERY
            SELECT c.cursor, c.tx_id, c.tbl, c.row_id, c.version, c.kind, c.old_scopes, c.new_scopes, c.at
              FROM rowsync.changes c
             WHERE c.xid < horizon
             ORDER BY c.xid, c.cursor
             LIMIT max_rows;
    END IF;
END
$$;

-- The cursor of the last change a reader can see now (0 for an empty log): where a new
-- subscriber starts after reading its rows.
CREATE FUNCTION rowsync.head() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((
        SELECT c.cursor FROM rowsync.changes c
         WHERE c.xid < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY c.xid DESC, c.cursor DESC LIMIT 1), 0)
$$;

-- Listener protocol (docs/sql.md): a listener LISTENs on channel `rowsync`, then
--   awake:  rowsync.listener_awake(id)  -- writers stop notifying; it polls read_changes
--   asleep: rowsync.listener_sleep(id), committed; then w := rowsync.listener_watermark()
--           in a transaction of its own; wait until rowsync.listener_settled(w); read
--           once more; then wait for a notification.
-- A writer checks rowsync.sleepers after logging its change, so it holds an xid when it
-- reads the count. The watermark is an xid assigned after the count rose, so every writer
-- that read the old count has a lower xid, and listener_settled says when all of them have
-- ended: the read after it sees their changes. (A snapshot's xmax cannot serve: it is
-- latestCompletedXid + 1, below xids still running.)
CREATE FUNCTION rowsync._listener_set(listener text, is_awake boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- One listener changes state at a time, so the count below is exact.
    LOCK TABLE rowsync.listeners IN SHARE ROW EXCLUSIVE MODE;
    IF is_awake IS NULL THEN
        DELETE FROM rowsync.listeners WHERE id = listener;
    ELSE
        INSERT INTO rowsync.listeners (id, awake, seen_at) VALUES (listener, is_awake, now())
        ON CONFLICT (id) DO UPDATE SET awake = is_awake, seen_at = now();
    END IF;
    PERFORM setval('rowsync.sleepers', (SELECT count(*) FROM rowsync.listeners WHERE NOT awake), true);
END
$$;
REVOKE ALL ON FUNCTION rowsync._listener_set(text, boolean) FROM PUBLIC;

CREATE FUNCTION rowsync.listener_awake(listener text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT rowsync._listener_set(listener, true)
$$;

CREATE FUNCTION rowsync.listener_sleep(listener text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT rowsync._listener_set(listener, false)
$$;

-- Call in a transaction of its own, after listener_sleep committed.
CREATE FUNCTION rowsync.listener_watermark() RETURNS xid8
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_current_xact_id()
$$;

CREATE FUNCTION rowsync.listener_settled(watermark xid8) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_snapshot_xmin(pg_current_snapshot()) > watermark
$$;

CREATE FUNCTION rowsync.listener_forget(listener text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT rowsync._listener_set(listener, NULL)
$$;

-- Deletes changes, applied transaction ids and silent listeners past their retention
-- (rowsync.settings). Run it periodically: the bridge does, or pg_cron.
CREATE FUNCTION rowsync.prune() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s rowsync.settings;
    changes bigint;
    applied bigint;
    listeners bigint;
BEGIN
    SELECT * INTO s FROM rowsync.settings;
    DELETE FROM rowsync.changes WHERE at < now() - s.change_retention;
    GET DIAGNOSTICS changes = ROW_COUNT;
    DELETE FROM rowsync.applied WHERE at < now() - s.applied_retention;
    GET DIAGNOSTICS applied = ROW_COUNT;
    LOCK TABLE rowsync.listeners IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM rowsync.listeners WHERE seen_at < now() - s.listener_timeout;
    GET DIAGNOSTICS listeners = ROW_COUNT;
    PERFORM setval('rowsync.sleepers', (SELECT count(*) FROM rowsync.listeners WHERE NOT awake), true);
    RETURN jsonb_build_object('changes', changes, 'applied', applied, 'listeners', listeners);
END
$$;

REVOKE ALL ON FUNCTION rowsync.listener_awake(text), rowsync.listener_sleep(text),
    rowsync.listener_watermark(), rowsync.listener_forget(text), rowsync.prune(), rowsync.read_changes(bigint, integer),
    rowsync.head() FROM PUBLIC;

-- Lets `role` follow the feed: a bridge's authenticator, or a backend worker.
CREATE FUNCTION rowsync.grant_feed(role regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('GRANT SELECT ON rowsync.changes TO %s', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION rowsync.listener_awake(text), rowsync.listener_sleep(text), '
                   'rowsync.listener_watermark(), rowsync.listener_forget(text), rowsync.prune(), rowsync.read_changes(bigint, integer), '
                   'rowsync.head() TO %s', role);
END
$$;
REVOKE ALL ON FUNCTION rowsync.grant_feed(regrole) FROM PUBLIC;

-- The synced table `tbl`, when `col` is one of its scopes; RS002 or RS003 otherwise.
CREATE FUNCTION rowsync._scope_table(tbl text, col text) RETURNS rowsync.synced
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s rowsync.synced;
BEGIN
    SELECT * INTO s FROM rowsync.synced WHERE name = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'RS002', MESSAGE = format('table "%s" is not synced', tbl),
            DETAIL = 'no synced table has this name', HINT = 'call rowsync.enable(table) first';
    END IF;
    IF NOT (col = ANY (s.scopes)) THEN
        RAISE EXCEPTION USING ERRCODE = 'RS003', MESSAGE = format('"%s" is not a scope of table "%s"', col, tbl),
            DETAIL = format('its scopes: %s', s.scopes), HINT = 'scopes are set by rowsync.enable(table, scopes)';
    END IF;
    RETURN s;
END
$$;

-- Whether the caller may follow scope `tbl?col=val`: the scope's parent row is visible to
-- them (the row its single-column foreign key points at, e.g. the board of board_id),
-- or, when the column has no such key, at least one row of the scope is.
CREATE FUNCTION rowsync.scope_visible(tbl text, col text, val text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s rowsync.synced;
    target regclass;
    target_col name;
    target_type text;
    visible boolean;
BEGIN
    s := rowsync._scope_table(tbl, col);
    SELECT c.confrelid::regclass, ta.attname, format_type(ta.atttypid, NULL)
      INTO target, target_col, target_type
      FROM pg_constraint c
      JOIN pg_attribute sa ON sa.attrelid = c.conrelid AND sa.attnum = c.conkey[1]
      JOIN pg_attribute ta ON ta.attrelid = c.confrelid AND ta.attnum = c.confkey[1]
     WHERE c.conrelid = s.rel AND c.contype = 'f' AND cardinality(c.conkey) = 1 AND sa.attname = col
     LIMIT 1;
    IF target IS NULL THEN
        target := s.rel;
        target_col := col;
        SELECT format_type(a.atttypid, NULL) INTO target_type
          FROM pg_attribute a WHERE a.attrelid = s.rel AND a.attname = col;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I = $1::%s)', target, target_col, target_type)
       INTO visible USING val;
    RETURN visible;
END
$$;

-- The rows of scope `tbl?col=val` the caller may see, at most max_rows of them, ordered
-- by key: what a client loads before following the scope's changes.
CREATE FUNCTION rowsync.list(tbl text, col text, val text, max_rows integer DEFAULT 1000) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s rowsync.synced;
    col_type text;
    rows jsonb;
BEGIN
    s := rowsync._scope_table(tbl, col);
    SELECT format_type(a.atttypid, NULL) INTO col_type
      FROM pg_attribute a WHERE a.attrelid = s.rel AND a.attname = col;
    EXECUTE format('SELECT coalesce(jsonb_agg(q.r ORDER BY q.k), ''[]'') FROM '
                   '(SELECT to_jsonb(t) AS r, t.%I AS k FROM %s AS t WHERE t.%I = $1::%s ORDER BY t.%I LIMIT $2) AS q',
                   s.pk, s.rel, col, col_type, s.pk)
       INTO rows USING val, max_rows;
    RETURN rows;
END
$$;

-- Whoever ran CREATE EXTENSION administers rowsync, superuser or not: a trusted
-- extension's objects belong to the bootstrap superuser, so they are granted here.
GRANT UPDATE ON rowsync.settings TO @extowner@;
GRANT SELECT ON rowsync.changes TO @extowner@ WITH GRANT OPTION;
GRANT EXECUTE ON FUNCTION rowsync.listener_awake(text), rowsync.listener_sleep(text),
    rowsync.listener_watermark(), rowsync.listener_forget(text), rowsync.prune(),
    rowsync.read_changes(bigint, integer), rowsync.head(), rowsync.grant_feed(regrole)
    TO @extowner@ WITH GRANT OPTION;
