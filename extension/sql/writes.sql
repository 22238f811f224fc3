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
