-- Who may follow the feed, and what the extension's owner holds. Last: it names
-- functions from every other file.

-- ── Who may follow the feed ───────────────────────────────────────────────────────────
-- The feed's functions, as one list for revoking, for grant_feed and for the extension's
-- owner.
CREATE FUNCTION rowsync._feed_functions() RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'rowsync.tick(), rowsync.read_changes(bigint, bigint, xid8, bigint, integer), '
           'rowsync.advance(bigint, integer), rowsync.head(), '
           'rowsync.listener_awake(text), rowsync.listener_sleep(text), rowsync.listener_pending(), '
           'rowsync.listener_settled(xid8[]), rowsync.listener_forget(text), '
           'rowsync.bus_publish(text, jsonb), rowsync.bus_read(pg_snapshot), rowsync.prune(), '
           'rowsync.visible_rows(jsonb, text[], text[]), rowsync.followers(jsonb, text[], text[], text[]), '
           'rowsync.read_doc_updates(bigint[]), '
           'rowsync.doc_compaction_claim(integer, interval), '
           'rowsync.doc_compaction_finish(bigint, bytea, bigint[], integer[]), '
           'rowsync._doc_compaction_finish(bigint, bytea, bigint[], integer[])'
$$;
DO $$ BEGIN
    EXECUTE format('REVOKE ALL ON FUNCTION %s, rowsync.reset_feed() FROM PUBLIC', rowsync._feed_functions());
END $$;

-- Lets `role` follow the feed: a bridge's authenticator, or a backend worker.
CREATE FUNCTION rowsync.grant_feed(role regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('GRANT SELECT ON rowsync.changes, rowsync.ticks, rowsync.tick_marks, rowsync.token_key TO %s', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', rowsync._feed_functions(), role);
END
$$;
REVOKE ALL ON FUNCTION rowsync.grant_feed(regrole) FROM PUBLIC;

-- Whoever ran CREATE EXTENSION administers rowsync, superuser or not: a trusted
-- extension's objects belong to the bootstrap superuser, so they are granted here.
GRANT UPDATE ON rowsync.settings TO @extowner@;
GRANT SELECT ON rowsync.changes, rowsync.ticks, rowsync.tick_marks, rowsync.token_key TO @extowner@ WITH GRANT OPTION;
DO $$ BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s, rowsync.reset_feed(), rowsync.grant_feed(regrole), '
                   'rowsync.send(text, text, jsonb), rowsync.grant_send(regrole) '
                   'TO %s WITH GRANT OPTION', rowsync._feed_functions(), '@extowner@');
END $$;
