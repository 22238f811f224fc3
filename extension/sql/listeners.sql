-- Wake-ups and the bus: how a sleeping bridge is woken at commit, and how bridges
-- pass presence to each other.

-- ── Wake-ups ──────────────────────────────────────────────────────────────────────────
-- A listener LISTENs on channel `rowsync`, then
--   awake:  rowsync.listener_awake(id)   -- writers stop notifying; it polls advance()
--   asleep: rowsync.listener_sleep(id), committed; then p := rowsync.listener_pending();
--           poll rowsync.listener_settled(p) (a short while at most); advance once
--           more; then wait for a notification.
-- A writer reads rowsync.sleepers once, when it commits (the extension's pre-commit
-- callback), and NOTIFYs if some listener sleeps. A writer that read the count before
-- it rose was still running when the count rose, so its xid is among the pending ones;
-- once they have all ended, the listener's next read sees their changes.
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

-- The transactions running now. Call after listener_sleep committed.
CREATE FUNCTION rowsync.listener_pending() RETURNS xid8[]
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(x), '{}') FROM pg_snapshot_xip(pg_current_snapshot()) x
$$;

-- Whether every transaction in `pending` has ended.
CREATE FUNCTION rowsync.listener_settled(pending xid8[]) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(bool_and(pg_visible_in_snapshot(x, s)), true)
      FROM unnest(pending) x, pg_current_snapshot() s
$$;

CREATE FUNCTION rowsync.listener_forget(listener text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT rowsync._listener_set(listener, NULL)
$$;

-- ── The bus between bridges ───────────────────────────────────────────────────────────
-- Appends one bridge's batch of presence and broadcast events, and rings the doorbell.
CREATE FUNCTION rowsync.bus_publish(bridge text, events jsonb) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO rowsync.bus (bridge, events) VALUES (bridge, events);
    SELECT pg_notify('rowsync_bus', '');
$$;

-- What committed to the bus since the snapshot `since` (NULL: start now), and the
-- snapshot to read from next. The same snapshot difference as read_changes, kept by the
-- reader instead of stored: the bus lives on the primary only, and for minutes.
CREATE FUNCTION rowsync.bus_read(since pg_snapshot)
RETURNS TABLE (upto pg_snapshot, bridge text, events jsonb)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    now_snap pg_snapshot := pg_current_snapshot();
BEGIN
    IF since IS NULL THEN
        RETURN QUERY SELECT now_snap, NULL::text, NULL::jsonb;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT now_snap, b.bridge, b.events
          FROM rowsync.bus b
         WHERE (b.xid >= pg_snapshot_xmax(since) OR b.xid = ANY (ARRAY(SELECT pg_snapshot_xip(since))))
           AND pg_visible_in_snapshot(b.xid, now_snap)
         ORDER BY b.xid, b.seq;
    IF NOT FOUND THEN
        RETURN QUERY SELECT now_snap, NULL::text, NULL::jsonb;
    END IF;
END
$$;
