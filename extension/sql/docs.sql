-- Collaborative documents: a Yjs document is a column of a synced row, registered with
-- rowsync.enable_doc. Reading it takes what reading the row and the column takes (its
-- policies, SELECT on the column); editing it, what updating them takes. The bytes are
-- stored as clients sent them, a snapshot plus an append-only log, after a structural
-- check (rowsync-core's ydoc scanner: no CRDT engine runs in Postgres). Merging happens
-- in the bridge. See docs/sql/documents.md.

-- Which columns are documents. Anyone may read it; a table's owner registers its columns.
CREATE TABLE rowsync.doc_columns (
    rel       regclass NOT NULL REFERENCES rowsync.synced ON DELETE CASCADE,
    col       name NOT NULL,
    -- The most a document may hold, snapshot and log together.
    max_bytes bigint NOT NULL DEFAULT 8388608 CHECK (max_bytes > 0),
    PRIMARY KEY (rel, col)
);
ALTER TABLE rowsync.doc_columns ENABLE ROW LEVEL SECURITY;
CREATE POLICY doc_columns_read ON rowsync.doc_columns FOR SELECT USING (true);
CREATE POLICY doc_columns_owner ON rowsync.doc_columns FOR ALL
    USING (rowsync._owns(rel)) WITH CHECK (rowsync._owns(rel));
GRANT SELECT, INSERT, DELETE ON rowsync.doc_columns TO PUBLIC;
GRANT UPDATE (max_bytes) ON rowsync.doc_columns TO PUBLIC;

-- One row per document written to. Nobody reads or writes these tables directly: the
-- functions below check access as the caller, then read and write as the owner.
CREATE TABLE rowsync.docs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rel            oid NOT NULL,
    tbl            text NOT NULL,
    row_id         text NOT NULL,
    col            name NOT NULL,
    -- A Yjs v1 update holding what compaction merged (NULL: nothing yet).
    snapshot       bytea,
    snapshot_bytes bigint NOT NULL DEFAULT 0,
    -- The log not yet in the snapshot.
    tail_bytes     bigint NOT NULL DEFAULT 0,
    tail_count     bigint NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- A bridge compacting the document holds it until then.
    compaction_lease timestamptz,
    -- Its row was deleted, by this user: only their undo (the same id, re-created by them
    -- within applied_retention) brings the document back; anyone else's row of that id
    -- starts with an empty one.
    retired_at     timestamptz,
    retired_by     text,
    -- By relation, not by name: a table that takes a dropped table's name does not take
    -- its documents.
    UNIQUE (rel, row_id, col)
);
REVOKE ALL ON rowsync.docs FROM PUBLIC;

CREATE TABLE rowsync.doc_updates (
    -- The rowsync.changes row of the append that wrote it, and its place in the append.
    cursor bigint NOT NULL,
    n      integer NOT NULL,
    doc    bigint NOT NULL REFERENCES rowsync.docs ON DELETE CASCADE,
    -- Exactly the bytes a client sent.
    update bytea NOT NULL,
    -- Who sent it: '<bridge>/<connection>', or NULL for SQL writers.
    origin text,
    at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cursor, n)
);
CREATE INDEX doc_updates_doc ON rowsync.doc_updates (doc, cursor, n);
REVOKE ALL ON rowsync.doc_updates FROM PUBLIC;

-- A row of a table with documents was inserted, deleted, given another key, or the table
-- truncated (the triggers enable_doc creates). A key that leaves (delete, key change,
-- truncate): its documents retire. A key that arrives (insert, key change): a retired
-- document of that key comes back if the user who retired it re-creates it (their undo),
-- and is gone otherwise, so nobody else inherits its text. Keyed by the relation the
-- trigger fires on: attached to another table, it can only touch that table's documents.
CREATE FUNCTION rowsync._doc_row_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pk name := (SELECT s.pk FROM rowsync.synced s WHERE s.rel = TG_RELID);
    old_key text;
    new_key text;
BEGIN
    IF pk IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE rowsync.docs d SET retired_at = now(), retired_by = rowsync.user_id()
         WHERE d.rel = TG_RELID AND d.retired_at IS NULL;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        old_key := to_jsonb(OLD) ->> pk;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_key := to_jsonb(NEW) ->> pk;
    END IF;
    IF old_key IS NOT DISTINCT FROM new_key THEN
        RETURN NULL;
    END IF;
    IF old_key IS NOT NULL THEN
        UPDATE rowsync.docs d SET retired_at = now(), retired_by = rowsync.user_id()
         WHERE d.rel = TG_RELID AND d.row_id = old_key;
    END IF;
    IF new_key IS NOT NULL THEN
        DELETE FROM rowsync.docs d
         WHERE d.rel = TG_RELID AND d.row_id = new_key AND d.retired_at IS NOT NULL
           AND (d.retired_by IS DISTINCT FROM rowsync.user_id()
                OR d.retired_at < now() - (SELECT s.applied_retention FROM rowsync.settings s));
        UPDATE rowsync.docs d SET retired_at = NULL, retired_by = NULL
         WHERE d.rel = TG_RELID AND d.row_id = new_key AND d.retired_at IS NOT NULL;
    END IF;
    RETURN NULL;
END
$$;
-- Left executable by everyone: the owner who runs enable_doc creates the trigger, and
-- Postgres checks EXECUTE then.

-- Registers `col` of synced table `tbl` as a document; only the table's owner may.
CREATE FUNCTION rowsync.enable_doc(tbl regclass, col name, max_bytes bigint DEFAULT 8388608)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM rowsync.synced s WHERE s.rel = tbl) THEN
        RAISE EXCEPTION USING ERRCODE = 'RS002', MESSAGE = format('table %s is not synced', tbl),
            HINT = 'call rowsync.enable(table) first';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped) THEN
        RAISE EXCEPTION USING ERRCODE = 'RS003', MESSAGE = format('table %s has no column "%s"', tbl, col),
            HINT = 'a document is a column of the row: add one (any type: rowsync does not touch its value)';
    END IF;
    INSERT INTO rowsync.doc_columns (rel, col, max_bytes) VALUES (tbl, col, max_bytes)
    ON CONFLICT ON CONSTRAINT doc_columns_pkey DO UPDATE SET max_bytes = excluded.max_bytes;
    -- Updates fire it only when they name the key column: other updates cost nothing.
    EXECUTE format('CREATE OR REPLACE TRIGGER zzz_rowsync_docs AFTER INSERT OR DELETE OR UPDATE OF %I ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION rowsync._doc_row_changed()',
                   (SELECT s.pk FROM rowsync.synced s WHERE s.rel = tbl), tbl);
    EXECUTE format('CREATE OR REPLACE TRIGGER zzz_rowsync_docs_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION rowsync._doc_row_changed()', tbl);
END
$$;

CREATE FUNCTION rowsync.disable_doc(tbl regclass, col name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM rowsync.doc_columns d WHERE d.rel = tbl AND d.col = disable_doc.col;
    IF NOT EXISTS (SELECT 1 FROM rowsync.doc_columns d WHERE d.rel = tbl) THEN
        EXECUTE format('DROP TRIGGER IF EXISTS zzz_rowsync_docs ON %s', tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS zzz_rowsync_docs_truncate ON %s', tbl);
    END IF;
END
$$;

-- What the caller may do with a document: 'write', 'read', or NULL (the row is not
-- visible, or the column not readable). Raises RS002/RS003 for what is not a document.
CREATE FUNCTION rowsync.doc_access(tbl text, id text, col text) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT rowsync._raise_if_error(rowsync._doc_access(tbl, id, col)) OPERATOR(pg_catalog.->>) 'access'
$$;

-- Appends Yjs v1 updates to a document, as the caller: they must be allowed to update
-- the row and the column. Each update is checked (RS013 malformed, RS014 too large) and
-- the document must stay under its max_bytes (RS015). Returns the change's cursor, or
-- NULL when every update was empty.
CREATE FUNCTION rowsync.doc_append(tbl text, id text, col text, updates bytea[], origin text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT (rowsync._raise_if_error(rowsync._doc_append(tbl, id, col, updates, origin))
            OPERATOR(pg_catalog.->>) 'cursor')::bigint
$$;

-- A document's stored state, unmerged: the snapshot (NULL if none) and every update of
-- the log in order. Apply them in order, or merge them (Y.mergeUpdates), to get the
-- document. Empty for a document never written to.
CREATE FUNCTION rowsync.doc_parts(tbl text, id text, col text)
RETURNS TABLE (snapshot bytea, updates bytea[])
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts record;
BEGIN
    SELECT * INTO parts FROM rowsync._doc_parts(tbl, id, col) p;
    PERFORM rowsync._raise_if_error(parts.error);
    RETURN QUERY SELECT parts.snapshot, parts.updates;
END
$$;

-- For bridges: the updates of the doc changes at `cursors` (changes of kind 'doc').
CREATE FUNCTION rowsync.read_doc_updates(cursors bigint[])
RETURNS TABLE (cursor bigint, tbl text, row_id text, col name, updates bytea[], origin text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT u.cursor, d.tbl, d.row_id, d.col, array_agg(u.update ORDER BY u.n), min(u.origin)
      FROM rowsync.doc_updates u JOIN rowsync.docs d ON d.id = u.doc
     WHERE u.cursor = ANY (cursors)
     GROUP BY u.cursor, d.tbl, d.row_id, d.col
     ORDER BY u.cursor
$$;
REVOKE ALL ON FUNCTION rowsync.read_doc_updates(bigint[]) FROM PUBLIC;

-- ── Compaction ────────────────────────────────────────────────────────────────────────
-- A bridge merges a document's log into its snapshot (with yrs, off the write path), and
-- Postgres accepts the result only if it provably loses nothing (_doc_compaction_finish).
-- No merge runs here.

-- Picks up to `max_docs` documents due for compaction, leases them to the caller for
-- `lease`, and returns each one's snapshot and the log updates old enough to replace.
CREATE FUNCTION rowsync.doc_compaction_claim(max_docs integer DEFAULT 4, lease interval DEFAULT '30 seconds')
RETURNS TABLE (doc bigint, snapshot bytea, cursors bigint[], ns integer[], updates bytea[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s rowsync.settings;
BEGIN
    SELECT * INTO s FROM rowsync.settings;
    RETURN QUERY
    WITH due AS (
        SELECT d.id FROM rowsync.docs d
         WHERE (d.compaction_lease IS NULL OR d.compaction_lease < now())
           AND (d.tail_count >= s.doc_compact_updates OR d.tail_bytes >= s.doc_compact_bytes
                OR (d.tail_count > 0 AND d.updated_at < now() - s.doc_compact_idle))
         ORDER BY d.updated_at
         LIMIT max_docs
         FOR UPDATE SKIP LOCKED
    ), leased AS (
        UPDATE rowsync.docs d SET compaction_lease = now() + lease
          FROM due WHERE d.id = due.id
        RETURNING d.id, d.snapshot
    )
    SELECT l.id, l.snapshot, array_agg(u.cursor ORDER BY u.cursor, u.n), array_agg(u.n ORDER BY u.cursor, u.n),
           array_agg(u.update ORDER BY u.cursor, u.n)
      FROM leased l
      JOIN rowsync.doc_updates u ON u.doc = l.id
     WHERE u.at < now() - s.doc_update_min_age
     GROUP BY l.id, l.snapshot;
END
$$;
REVOKE ALL ON FUNCTION rowsync.doc_compaction_claim(integer, interval) FROM PUBLIC;

-- Replaces the snapshot of `doc` with `snapshot`, which must carry everything of the old
-- snapshot and of the log updates (cursors[i], ns[i]) it replaces (RS016 otherwise); those
-- updates leave the log. Returns {"replaced": n, "bytes": new snapshot size}.
CREATE FUNCTION rowsync.doc_compaction_finish(doc bigint, snapshot bytea, cursors bigint[], ns integer[])
RETURNS jsonb
LANGUAGE sql VOLATILE AS $$
    SELECT rowsync._raise_if_error(rowsync._doc_compaction_finish(doc, snapshot, cursors, ns))
$$;
