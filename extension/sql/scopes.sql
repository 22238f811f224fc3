-- Reading as the caller: a scope's or a table's rows, and whether a scope or a table
-- may be followed.

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

-- The SQL type of column `col` of `rel`, to cast a scope's text value to.
CREATE FUNCTION rowsync._column_type(rel regclass, col text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format_type(a.atttypid, NULL) FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = col
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
        target_type := rowsync._column_type(s.rel, col);
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I = $1::%s)', target, target_col, target_type)
       INTO visible USING val;
    RETURN visible;
END
$$;

-- The statement that reads scope `tbl?col=val` (with `col` NULL, the whole table), as
-- its caller: $1 is the scope's value, $2 the most rows; it returns one jsonb array, in
-- key order, of each row (`item` 'row') or of its [id, version] (`item` 'member').
-- RS002 or RS003 for a table or scope that is not synced.
CREATE FUNCTION rowsync._scope_query(tbl text, col text, item text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s rowsync.synced;
    filter text := 'true';
BEGIN
    IF col IS NULL THEN
        s := rowsync._synced_table(tbl);
    ELSE
        s := rowsync._scope_table(tbl, col);
        filter := format('t.%I = $1::%s', col, rowsync._column_type(s.rel, col));
    END IF;
    RETURN format('SELECT coalesce(jsonb_agg(q.i ORDER BY q.k), ''[]'') FROM '
                  '(SELECT %s AS i, t.%I AS k FROM %s AS t WHERE %s ORDER BY t.%I LIMIT $2) AS q',
                  CASE item WHEN 'row' THEN 'to_jsonb(t)'
                            ELSE format('jsonb_build_array(t.%I::text, t.version)', s.pk) END,
                  s.pk, s.rel, filter, s.pk);
END
$$;

-- The rows of scope `tbl?col=val` the caller may see, at most max_rows of them, ordered
-- by key: what a client loads before following the scope's changes. With `col` NULL, the
-- rows of the whole table the caller may see (a table key).
CREATE FUNCTION rowsync.list(tbl text, col text, val text, max_rows integer DEFAULT 1000) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rows jsonb;
BEGIN
    EXECUTE rowsync._scope_query(tbl, col, 'row') INTO rows USING val, max_rows;
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
