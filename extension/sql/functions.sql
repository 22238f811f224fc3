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
-- change log, in the writer's transaction; on TRUNCATE it logs one change, and
-- subscribers resync. It looks its table up in the registry by the relation it fires
-- on, fires only as the two triggers rowsync.enable creates, and takes no arguments.
-- EXECUTE stays granted: CREATE TRIGGER needs it, and attaching it anywhere else fails
-- at the first write with SQLSTATE 39P01. It fires last among BEFORE triggers (by name), after
-- any trigger that might skip the row.
CREATE FUNCTION rowsync._capture() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', '_capture_wrapper';

-- Registry rows changed: every backend forgets what it cached of those tables.
CREATE FUNCTION rowsync._registry_changed() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', '_registry_changed_wrapper';
CREATE TRIGGER registry_changed AFTER INSERT OR UPDATE OR DELETE ON rowsync.synced
    FOR EACH ROW EXECUTE FUNCTION rowsync._registry_changed();
REVOKE ALL ON FUNCTION rowsync._registry_changed() FROM PUBLIC;

-- A dropped table leaves the registry: a row naming a dropped relation would otherwise
-- wait for a new table to be given the same oid, and with it the old table's name.
CREATE FUNCTION rowsync._dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM rowsync.synced s
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND s.rel::oid = d.objid;
END
$$;
REVOKE ALL ON FUNCTION rowsync._dropped() FROM PUBLIC;
CREATE EVENT TRIGGER rowsync_dropped ON sql_drop EXECUTE FUNCTION rowsync._dropped();

-- Deletes the registry row of `tbl` once its capture trigger is gone: only its owner can
-- drop that trigger (rowsync.disable does both), so this needs no rights of its own.
CREATE FUNCTION rowsync._unregister(tbl regclass) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM rowsync.synced s
     WHERE s.rel = tbl
       AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = tbl AND t.tgname = 'zzz_rowsync_capture');
$$;

-- `access`: the table's rows decide who may see other rows (board memberships); a change
-- to one makes every bridge check its connections' access again at once, not only at the
-- next periodic check (docs/sql.md, section 2). `visibility`: 'rls' (each subscriber's
-- policies decide, row by row) or 'scope' (a declaration that a row of a scope is
-- readable exactly by whoever may follow the scope; docs/sql.md, section 2).
CREATE FUNCTION rowsync.enable(tbl regclass, scopes text[] DEFAULT '{}', access boolean DEFAULT false,
                               visibility text DEFAULT 'rls')
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    key_columns name[];
    key_type regtype;
    version_type regtype;
    table_name text;
    scope text;
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
        IF NOT (SELECT rowsync._scope_type_safe(a.atttypid) FROM pg_attribute a
                 WHERE a.attrelid = tbl AND a.attname = scope) THEN
            RAISE EXCEPTION USING ERRCODE = 'RS005',
                MESSAGE = format('%s cannot use %I as a scope: its type converts to JSON through code a role wrote', tbl, scope),
                DETAIL = 'scope values are converted with rowsync''s owner''s rights',
                HINT = 'use a built-in type, a domain over one, or an enum without a cast to json';
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
    IF NOT rowsync._key_name(table_name) THEN
        RAISE EXCEPTION USING ERRCODE = 'RS005',
            MESSAGE = format('%s cannot be synced: its name %s cannot be part of a key', tbl, table_name),
            DETAIL = 'keys are table:id and table?column=value; a table name has letters, digits and _ only',
            HINT = 'rename the table';
    END IF;

    EXECUTE format('CREATE OR REPLACE TRIGGER zzz_rowsync_capture BEFORE INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION rowsync._capture()', tbl);
    EXECUTE format('CREATE OR REPLACE TRIGGER zzz_rowsync_truncate BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION rowsync._capture()', tbl);
    IF visibility IS NULL OR visibility NOT IN ('rls', 'scope') THEN
        RAISE EXCEPTION USING ERRCODE = 'RS001',
            MESSAGE = format('visibility must be rls or scope, not %s', coalesce(visibility, 'null')),
            DETAIL = 'rls: each subscriber''s policies decide; scope: whoever may follow the row''s scope',
            HINT = 'leave it out for rls';
    END IF;
    IF visibility = 'scope' AND cardinality(coalesce(scopes, '{}')) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'RS001',
            MESSAGE = format('%s cannot use visibility scope without a scope column', tbl),
            DETAIL = 'scope visibility delivers a row to whoever may follow its scope',
            HINT = 'name the scope columns, or leave visibility out';
    END IF;
    INSERT INTO rowsync.synced (rel, name, pk, pk_type, scopes, access, visibility)
    VALUES (tbl, table_name, key_columns[1], key_type, coalesce(scopes, '{}')::name[], coalesce(access, false),
            visibility)
    ON CONFLICT (rel) DO UPDATE SET pk = EXCLUDED.pk, pk_type = EXCLUDED.pk_type, scopes = EXCLUDED.scopes,
                                    access = EXCLUDED.access, visibility = EXCLUDED.visibility;
END
$$;

CREATE FUNCTION rowsync.disable(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS zzz_rowsync_capture ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS zzz_rowsync_truncate ON %s', tbl);
    PERFORM rowsync._unregister(tbl);
END
$$;

-- The synced table `tbl`; RS002 otherwise.
CREATE FUNCTION rowsync._synced_table(tbl text) RETURNS rowsync.synced
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s rowsync.synced;
BEGIN
    SELECT * INTO s FROM rowsync.synced WHERE name = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'RS002', MESSAGE = format('table "%s" is not synced', tbl),
            DETAIL = 'no synced table has this name', HINT = 'call rowsync.enable(table) first';
    END IF;
    RETURN s;
END
$$;

-- The synced table `tbl`, when `col` is one of its scopes; RS002 or RS003 otherwise.
CREATE FUNCTION rowsync._scope_table(tbl text, col text) RETURNS rowsync.synced
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s rowsync.synced;
BEGIN
    s := rowsync._synced_table(tbl);
    IF NOT coalesce(col = ANY (s.scopes), false) THEN
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
-- by key: what a client loads before following the scope's changes. With `col` NULL, the
-- rows of the whole table the caller may see (a table key).
CREATE FUNCTION rowsync.list(tbl text, col text, val text, max_rows integer DEFAULT 1000) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s rowsync.synced;
    col_type text;
    rows jsonb;
BEGIN
    IF col IS NULL THEN
        s := rowsync._synced_table(tbl);
        EXECUTE format('SELECT coalesce(jsonb_agg(q.r ORDER BY q.k), ''[]'') FROM '
                       '(SELECT to_jsonb(t) AS r, t.%I AS k FROM %s AS t ORDER BY t.%I LIMIT $1) AS q',
                       s.pk, s.rel, s.pk)
           INTO rows USING max_rows;
        RETURN rows;
    END IF;
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

-- Whether the caller may follow table key `tbl`, every row of the table it may see: it
-- may read the table (SELECT on it); its policies then pick the rows.
CREATE FUNCTION rowsync.table_visible(tbl text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN has_table_privilege((rowsync._synced_table(tbl)).rel, 'SELECT');
END
$$;
