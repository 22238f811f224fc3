-- The registry of synced tables: enabling and disabling a table, the capture trigger it
-- attaches, and keeping the registry in step with the catalog.

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

-- The settings are cached per backend too (rowsync.apply reads max_ops on every call).
CREATE FUNCTION rowsync._settings_changed() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', '_settings_changed_wrapper';
CREATE TRIGGER settings_changed AFTER INSERT OR UPDATE OR DELETE ON rowsync.settings
    FOR EACH STATEMENT EXECUTE FUNCTION rowsync._settings_changed();
REVOKE ALL ON FUNCTION rowsync._settings_changed() FROM PUBLIC;

-- A dropped table leaves the registry, and its documents go with it (rowsync.docs, in
-- docs.sql): a row naming a dropped relation would otherwise wait for a new table to be
-- given the same oid, and with it the old table's name and text.
CREATE FUNCTION rowsync._dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM rowsync.synced s
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND s.rel::oid = d.objid;
    DELETE FROM rowsync.docs doc
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND doc.rel = d.objid;
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
-- next periodic check (docs/sql/syncing.md). `visibility`: 'rls' (each subscriber's
-- policies decide, row by row) or 'scope' (a declaration that a row of a scope is
-- readable exactly by whoever may follow the scope; docs/sql/syncing.md).
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
