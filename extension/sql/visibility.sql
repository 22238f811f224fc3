-- Who may see what, for the bridge's fan-out: which rows of a batch each identity's
-- policies show it, with the rows' data, in one statement for many identities; and the
-- ids a resuming client may hold in a scope.

-- For each identity (a role and its claims), the rows of the batch (`tables[i]`,
-- `ids[i]`, 0-based) it asks about that its policies show it now. `identities` is
-- `[{"role": r, "claims": "<json text>", "rows": [i, …]}, …]`, sorted by role.
--
-- Each identity runs in its own subtransaction with its role and claims set locally, as
-- the bridge's per-user reads do: a policy that raises costs only that identity (one row
-- with `error`, and any rows it returned before the error are to be dropped). Each probe
-- is a new executor run, so a policy's InitPlan (`(SELECT rowsync.user_id())`) is
-- evaluated per identity; one plan for all identities would cache the first one's answer.
-- The loop walks an array index, not a cursor: a cursor's prefetched rows would be read
-- under whichever role was set when it fetched.
--
-- A row's data is the same for every identity of one role (column grants are per role,
-- policies only pick rows), so it comes once per role: later identities of the role get
-- `data` NULL for rows an earlier one was sent. The bridge runs this in a read-only
-- repeatable-read transaction of its own with a statement timeout, so every identity
-- sees one snapshot and nothing outlives the call.
CREATE FUNCTION rowsync.visible_rows(identities jsonb, tables text[], ids text[])
RETURNS TABLE (identity integer, row_index integer, data jsonb, error text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
-- One plan per role for each probe, kept: a custom plan would be made again for every
-- identity (a third of the time went to parsing and planning the policies).
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    -- An array, read once: indexing the (compressed) jsonb would decompress it each time.
    list jsonb[] := ARRAY(SELECT jsonb_array_elements(identities));
    ident jsonb;
    role_name text;
    last_role text;
    sent_for_role integer[] := '{}';
    before integer[];
    r record;
BEGIN
    FOR i IN 0 .. coalesce(array_length(list, 1), 0) - 1 LOOP
        ident := list[i + 1];
        role_name := ident ->> 'role';
        IF role_name IS DISTINCT FROM last_role THEN
            sent_for_role := '{}';
            last_role := role_name;
        END IF;
        before := sent_for_role;
        BEGIN
            PERFORM set_config('role', role_name, true),
                    set_config('request.jwt.claims', coalesce(ident ->> 'claims', ''), true);
            FOR r IN SELECT v.row_index, v.data
                       FROM rowsync._visible_for(tables, ids,
                                ARRAY(SELECT jsonb_array_elements_text(ident -> 'rows')::integer),
                                sent_for_role) v
            LOOP
                identity := i;
                row_index := r.row_index;
                data := r.data;
                error := NULL;
                RETURN NEXT;
                IF data IS NOT NULL THEN
                    sent_for_role := sent_for_role || row_index;
                END IF;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            sent_for_role := before;
            identity := i;
            row_index := NULL;
            data := NULL;
            error := SQLERRM;
            RETURN NEXT;
        END;
        PERFORM set_config('role', 'none', true), set_config('request.jwt.claims', '', true);
    END LOOP;
END
$$;

-- For each identity, which of the keys it asks about it may follow now, as the bridge
-- checks a subscription: a record (`tables[i]`, id `vals[i]`, `cols[i]` NULL) it can read,
-- a scope (`tables[i]?cols[i]=vals[i]`) whose parent it can read, or a whole table
-- (`cols[i]` and `vals[i]` NULL) it may read. `identities` is
-- `[{"role": r, "claims": "<json text>", "keys": [i, …]}, …]`. The bridge asks it for the
-- topics of the server events in a batch, so that an event reaches only connections
-- whose identity may follow its topic when it is routed, not only when they subscribed.
-- Run like visible_rows, with the same guarantees: each identity in a subtransaction of
-- its own, its role and claims set locally; an identity whose check raises gets a row
-- with `error`, and any keys returned for it before are to be dropped.
CREATE FUNCTION rowsync.followers(identities jsonb, tables text[], cols text[], vals text[])
RETURNS TABLE (identity integer, key_index integer, error text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    list jsonb[] := ARRAY(SELECT jsonb_array_elements(identities));
    ident jsonb;
    k integer;
    allowed boolean;
BEGIN
    FOR i IN 0 .. coalesce(array_length(list, 1), 0) - 1 LOOP
        ident := list[i + 1];
        BEGIN
            PERFORM set_config('role', ident ->> 'role', true),
                    set_config('request.jwt.claims', coalesce(ident ->> 'claims', ''), true);
            FOR k IN SELECT jsonb_array_elements_text(ident -> 'keys')::integer LOOP
                IF cols[k + 1] IS NOT NULL THEN
                    allowed := rowsync.scope_visible(tables[k + 1], cols[k + 1], vals[k + 1]);
                ELSIF vals[k + 1] IS NOT NULL THEN
                    allowed := EXISTS (SELECT 1 FROM rowsync._visible_for(ARRAY[tables[k + 1]],
                                           ARRAY[vals[k + 1]], ARRAY[0], ARRAY[0]));
                ELSE
                    allowed := rowsync.table_visible(tables[k + 1]);
                END IF;
                IF allowed THEN
                    identity := i;
                    key_index := k;
                    error := NULL;
                    RETURN NEXT;
                END IF;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            identity := i;
            key_index := NULL;
            error := SQLERRM;
            RETURN NEXT;
        END;
        PERFORM set_config('role', 'none', true), set_config('request.jwt.claims', '', true);
    END LOOP;
END
$$;

-- The ids and versions of the rows of scope `tbl?col=val` (with `col` NULL, of the whole
-- table) the caller may see, in key order, at most max_rows: what a resuming client's
-- digest is checked against, and what it is told it may hold when the digest differs.
CREATE FUNCTION rowsync.members(tbl text, col text, val text, max_rows integer DEFAULT 1000) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rows jsonb;
BEGIN
    EXECUTE rowsync._scope_query(tbl, col, 'member') INTO rows USING val, max_rows;
    RETURN rows;
END
$$;
