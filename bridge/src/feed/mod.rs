//! The change feed: one dedicated connection LISTENs for wake-ups, advances the feed by
//! ticks (`rowsync.advance`: tick, then read the batch since this bridge's tick), and
//! routes each change.
//!
//! While changes keep coming the bridge stays awake and polls, and writers skip NOTIFY
//! (NOTIFY serialises committing writers: docs/sql/wake-ups.md). Idle for `feed_idle`, it falls asleep with the extension's
//! protocol: mark asleep, wait (briefly) for the transactions running at that moment,
//! read once more, then wait for a NOTIFY (or the slow safety poll). After any reconnect
//! it reads on from its tick, so a Postgres restart loses nothing; a tick that did not
//! survive the restart, or a feed that was reset, makes every subscriber resync.

pub mod change;
pub mod events;
pub mod visibility;

use crate::feed::change::FeedChange;
use crate::keys::Key;
use crate::outbox::Outgoing;
use crate::protocol::ServerFrame;
use crate::state::AppState;
use crate::token::{FeedId, Tick};
use futures_util::future::poll_fn;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

/// Listeners not heard from for rowsync.settings.listener_timeout (1 minute by default)
/// are forgotten; this is well inside it.
const REFRESH: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long falling asleep waits for the transactions running at that moment. One still
/// running after this has not reached its commit yet (it will see the sleeper and
/// NOTIFY), or is stalled inside its commit, which the safety poll covers.
const SETTLE_AT_MOST: Duration = Duration::from_millis(250);

/// What every reader of the feed selects, in the order `FeedChange::from_row` reads it.
const COLUMNS: &str = "xid::text::int8, cursor, tbl, row_id, version, kind, old_scopes, \
                       new_scopes, topic, payload, extract(epoch FROM at)::float8";

/// Reads one page of the batch (`since`, `upto`] after `after`: the one reader of the log,
/// for the live feed and for catch-up alike. RS410 when the log no longer holds `since`.
pub async fn read_page(
    client: &Client,
    feed: FeedId,
    since: i64,
    upto: Tick,
    after: Option<(i64, i64)>,
    max_rows: i32,
) -> Result<Vec<FeedChange>, tokio_postgres::Error> {
    let (xid, cursor) = after.unwrap_or((0, 0));
    let sql =
        format!("SELECT {COLUMNS} FROM rowsync.read_changes($1, $2, $3::int8::text::xid8, $4, $5)");
    let rows = client
        .query(&sql, &[&since, &upto.id, &xid, &cursor, &max_rows])
        .await?;
    Ok(rows
        .iter()
        .map(|row| FeedChange::from_row(row, 0, feed, since, upto))
        .collect())
}

/// A tick as tokens carry it (the view defines its check and time).
const TICK: &str = "SELECT id, snap_check, at_ms FROM rowsync.tick_marks";

fn tick_from(row: &tokio_postgres::Row) -> Tick {
    Tick {
        id: row.get(0),
        check: row.get(1),
        at: row.get(2),
    }
}

/// The tick `id`, if the log still holds it.
pub async fn tick(client: &Client, id: i64) -> Result<Option<Tick>, tokio_postgres::Error> {
    let row = client
        .query_opt(&format!("{TICK} WHERE id = $1"), &[&id])
        .await?;
    Ok(row.as_ref().map(tick_from))
}

/// The newest tick at or before `id` taken no later than `at`: where a reader whose tick
/// is gone (thinned, or lost in a crash) may start without skipping anything.
pub async fn tick_before(
    client: &Client,
    id: i64,
    at: i64,
) -> Result<Option<Tick>, tokio_postgres::Error> {
    let sql = format!("{TICK} WHERE id <= $1 AND at_ms <= $2 ORDER BY id DESC LIMIT 1");
    let row = client.query_opt(&sql, &[&id, &at]).await?;
    Ok(row.as_ref().map(tick_from))
}

async fn newest_tick(client: &Client) -> Result<Tick, tokio_postgres::Error> {
    let row = client
        .query_one(&format!("{TICK} ORDER BY id DESC LIMIT 1"), &[])
        .await?;
    Ok(tick_from(&row))
}

pub async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let listener = format!("bridge-{}-{}", std::process::id(), nanos());
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&state, &listener, &mut shutdown).await {
            Ok(()) => return,
            Err(error) => {
                state.feed_ready.store(false, Ordering::SeqCst);
                tracing::warn!(%error, retry_in = ?backoff, "change feed connection lost");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// This database's feed: its id from `rowsync.settings` and its tokens' key.
async fn feed_id(client: &Client) -> Result<FeedId, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT s.feed_id::text, k.key::text FROM rowsync.settings s, rowsync.token_key k",
            &[],
        )
        .await?;
    // Uuid columns always parse; the fallback only keeps a broken database from
    // panicking the bridge (tokens would then resync, never resume wrongly).
    Ok(FeedId::parse(row.get(0), row.get(1)).unwrap_or(FeedId::NONE))
}

/// Finds where to read from after (re)connecting: the tick this bridge stopped at, if
/// the log still holds it unchanged; otherwise every subscriber resyncs from the newest.
async fn resume_point(
    state: &AppState,
    client: &Client,
) -> Result<(FeedId, Tick), tokio_postgres::Error> {
    let feed = feed_id(client).await?;
    if let Some((was, at)) = state.cursor.get() {
        if was == feed && tick(client, at.id).await? == Some(at) {
            return Ok((feed, at));
        }
        tracing::warn!(
            tick = at.id,
            "the feed was reset or lost this bridge's position (a crash, a restore); subscribers resync"
        );
        state.router.resync_where(|_| true, "feed_reset");
    }
    Ok((feed, newest_tick(client).await?))
}

async fn session(
    state: &Arc<AppState>,
    listener: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), visibility::Error> {
    let (client, mut connection) =
        tokio_postgres::connect(&state.config.database_url.0, NoTls).await?;
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let (lost_tx, mut lost_rx) = mpsc::channel::<tokio_postgres::Error>(1);
    let doorbell = state.clone();
    tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                // Payloads mean nothing: any role may NOTIFY. Each ring costs at most one
                // read (wake-ups coalesce in the channel, bus reads per flush interval).
                Ok(AsyncMessage::Notification(n)) if n.channel() == "rowsync_bus" => {
                    doorbell.cursor.bus_rang.store(true, Ordering::SeqCst);
                }
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = wake_tx.try_send(());
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = lost_tx.send(e).await;
                    return;
                }
            }
        }
    });
    client
        .batch_execute("LISTEN rowsync; LISTEN rowsync_bus")
        .await?;
    // Whatever was published while this bridge was not listening.
    state.cursor.bus_rang.store(true, Ordering::SeqCst);
    let (feed, at) = resume_point(state, &client).await?;
    let mut tables = read_tables(&client).await?;
    state.cursor.set(feed, at);
    client
        .execute("SELECT rowsync.listener_awake($1)", &[&listener])
        .await?;
    state.feed_ready.store(true, Ordering::SeqCst);
    tracing::info!(listener, tick = at.id, "change feed connected");

    let advance_sql =
        format!("SELECT upto, upto_check, upto_at, {COLUMNS} FROM rowsync.advance($1, $2)");
    let advance_statement = client.prepare(&advance_sql).await?;
    let mut awake = true;
    let mut last_change = Instant::now();
    let mut last_refresh = Instant::now();
    let mut last_prune = Instant::now();
    loop {
        if *shutdown.borrow() {
            let _ = client
                .execute("SELECT rowsync.listener_forget($1)", &[&listener])
                .await;
            return Ok(());
        }
        if let Ok(error) = lost_rx.try_recv() {
            return Err(error.into());
        }
        let read_count = advance(state, &client, &advance_statement, &tables).await?;
        if read_count > 0 {
            last_change = Instant::now();
            if !awake {
                client
                    .execute("SELECT rowsync.listener_awake($1)", &[&listener])
                    .await?;
                awake = true;
                last_refresh = Instant::now();
            }
            continue;
        }
        if last_refresh.elapsed() > REFRESH {
            let call = if awake {
                "SELECT rowsync.listener_awake($1)"
            } else {
                "SELECT rowsync.listener_sleep($1)"
            };
            client.execute(call, &[&listener]).await?;
            last_refresh = Instant::now();
        }
        if last_prune.elapsed() > state.config.prune_interval {
            client.execute("SELECT rowsync.prune()", &[]).await?;
            last_prune = Instant::now();
            tables = read_tables(&client).await?;
        }
        if awake {
            if last_change.elapsed() < state.config.feed_idle {
                tokio::select! {
                    _ = tokio::time::sleep(state.config.feed_poll) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            tracing::debug!(listener, idle = ?last_change.elapsed(), "feed idle: falling asleep");
            fall_asleep(&client, listener, shutdown).await?;
            awake = false;
            last_refresh = Instant::now();
            // The loop reads once more before waiting.
            continue;
        }
        tokio::select! {
            _ = wake_rx.recv() => {}
            _ = tokio::time::sleep(state.config.feed_safety_poll) => {}
            _ = shutdown.changed() => {}
            error = lost_rx.recv() => {
                if let Some(error) = error {
                    return Err(error.into());
                }
            }
        }
    }
}

/// Marks this listener asleep, then waits until every transaction running at that moment
/// has ended (at most `SETTLE_AT_MOST`): a writer that read "nobody sleeps" at its
/// commit was among them, and the caller's next read sees its changes.
async fn fall_asleep(
    client: &Client,
    listener: &str,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT rowsync.listener_sleep($1)", &[&listener])
        .await?;
    let pending: String = client
        .query_one("SELECT rowsync.listener_pending()::text", &[])
        .await?
        .get(0);
    let settled = client
        .prepare("SELECT rowsync.listener_settled($1::text::xid8[])")
        .await?;
    let mut pause = Duration::from_micros(200);
    let started = Instant::now();
    loop {
        let done: bool = client.query_one(&settled, &[&pending]).await?.get(0);
        if done || *shutdown.borrow() || started.elapsed() > SETTLE_AT_MOST {
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// What the registry declares of tables beyond their keys, read at connect and every
/// prune interval.
#[derive(Default)]
struct Tables {
    /// `access => true`: their changes make connections check their access again.
    access: HashSet<String>,
    /// `visibility => 'scope'`: their rows go to whoever may follow their scope.
    scope: HashSet<String>,
}

async fn read_tables(client: &Client) -> Result<Tables, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT name, access, visibility = 'scope' FROM rowsync.synced",
            &[],
        )
        .await?;
    let mut tables = Tables::default();
    for row in rows {
        let name: String = row.get(0);
        if row.get(1) {
            tables.access.insert(name.clone());
        }
        if row.get(2) {
            tables.scope.insert(name);
        }
    }
    Ok(tables)
}

/// Queues a page of the feed, in feed order: each row as every connection following it
/// may see it (visibility::plan), events for their topics, and a resync for a truncated
/// table's subscribers.
async fn route(
    state: &Arc<AppState>,
    page: &[FeedChange],
    scope_tables: &HashSet<String>,
) -> Result<(), visibility::Error> {
    let (rows, newest) = visibility::coalesce(page);
    let keys: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.keys.iter().map(|(k, _)| k.clone()).collect())
        .collect();
    let interests = state.router.interests(&keys);
    let plan = visibility::plan(
        &state.pool,
        &state.config,
        &rows,
        interests,
        scope_tables,
        &state.metrics.scope_violations,
    )
    .await?;
    let mut per_row = plan.per_row;
    let mut events = events::plan(state, page).await?;
    for (j, (change, row)) in page.iter().zip(newest).enumerate() {
        if change.kind == "event" {
            if let (Some(to), Some(frame)) = (events.per_change.remove(&j), change.event_frame()) {
                let frame = Arc::new(frame);
                for subscriber in to {
                    subscriber.outbox.push(Outgoing::Event(frame.clone()));
                }
            }
        } else if change.kind == "truncate" {
            if let Some(table) = &change.table {
                state
                    .router
                    .resync_where(|key| Key::of_table(key, table), "truncate");
            }
        } else if let Some(r) = row {
            for (subscriber, item) in per_row[r].drain(..) {
                subscriber.outbox.push(Outgoing::Row(item));
            }
        }
    }
    for (subscriber, keys) in plan.resyncs.into_iter().chain(events.unchecked) {
        subscriber.outbox.push(Outgoing::Text(
            ServerFrame::resync(&keys, "not_checked").text(None).into(),
        ));
    }
    Ok(())
}

/// Ticks, then reads and routes the batch since this bridge's tick, page by page.
/// Returns how many changes it routed.
async fn advance(
    state: &Arc<AppState>,
    client: &Client,
    statement: &Statement,
    tables: &Tables,
) -> Result<usize, visibility::Error> {
    let Some((feed, since)) = state.cursor.get() else {
        return Ok(0);
    };
    let batch = state.config.feed_batch;
    let rows = match client.query(statement, &[&since.id, &batch]).await {
        Ok(rows) => rows,
        Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "RS410") => {
            // This bridge was away longer than the log keeps changes, or the feed was
            // reset under it: every subscriber reads its data again, and the feed goes
            // on from the newest tick, under the feed id the log has now.
            let (feed, newest) = (feed_id(client).await?, newest_tick(client).await?);
            tracing::warn!(
                tick = since.id,
                "position fell out of the change log; subscribers resync"
            );
            state.router.resync_where(|_| true, "cursor_gone");
            state.cursor.set(feed, newest);
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let Some(first) = rows.first() else {
        return Ok(0);
    };
    let upto = tick_from(first);
    state.cursor.begin_routing(upto);
    let mut page: Vec<FeedChange> = rows
        .iter()
        .map(|row| FeedChange::from_row(row, 3, feed, since.id, upto))
        .collect();
    let mut total = 0;
    loop {
        route(state, &page, &tables.scope).await?;
        state.docs.from_feed(state, client, &page).await;
        if page
            .iter()
            .any(|c| c.table.as_ref().is_some_and(|t| tables.access.contains(t)))
        {
            state.access_changed.send_modify(|n| *n = n.wrapping_add(1));
        }
        total += page.len();
        crate::metrics::Metrics::add(&state.metrics.changes_read, page.len() as u64);
        let last = page.last().map(|c| (c.xid, c.cursor));
        if page.len() < batch as usize {
            break;
        }
        page = read_page(client, feed, since.id, upto, last, batch).await?;
    }
    // Only after routing: a subscriber that reads the position, then drains its queue,
    // has every change up to it.
    state.cursor.set(feed, upto);
    Ok(total)
}
