//! The change feed: one dedicated connection LISTENs for wake-ups, reads the change log
//! from this bridge's cursor with the extension's commit-safe read, and routes each change.
//!
//! While changes keep coming the bridge stays awake and polls, and writers skip NOTIFY
//! (the cliff in MACHINE.md). Idle for `feed_idle`, it falls asleep with the extension's
//! protocol: mark asleep, wait until every writer that saw it awake has ended, read once
//! more, then wait for a NOTIFY (or the slow safety poll). After any reconnect it reads on
//! from its cursor, so a Postgres restart loses nothing.

use crate::router::FeedChange;
use crate::server::AppState;
use futures_util::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

/// Listeners not heard from for rowsync.settings.listener_timeout (1 minute by default)
/// are forgotten; this is well inside it.
const REFRESH: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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

async fn session(
    state: &Arc<AppState>,
    listener: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) =
        tokio_postgres::connect(&state.config.database_url.0, NoTls).await?;
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let (lost_tx, mut lost_rx) = mpsc::channel::<tokio_postgres::Error>(1);
    let bus = state.presence.inbound();
    tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) if n.channel() == "rowsync_bus" => {
                    bus.push(n.payload().to_string());
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
    let read = client.prepare(crate::router::READ_CHANGES).await?;
    if !state.feed_started.swap(true, Ordering::SeqCst) {
        let head: i64 = client.query_one("SELECT rowsync.head()", &[]).await?.get(0);
        state.position.store(head, Ordering::SeqCst);
    }
    client
        .execute("SELECT rowsync.listener_awake($1)", &[&listener])
        .await?;
    state.feed_ready.store(true, Ordering::SeqCst);
    tracing::info!(
        listener,
        position = state.position.load(Ordering::SeqCst),
        "change feed connected"
    );

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
            return Err(error);
        }
        let read_count = drain(state, &client, &read).await?;
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
                    return Err(error);
                }
            }
        }
    }
}

/// How long falling asleep waits for older transactions. A long transaction anywhere in
/// the cluster can hold the horizon for minutes; past this the safety poll covers it.
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);

/// Marks this listener asleep, then waits until every transaction that could have seen
/// it awake (and so skipped its NOTIFY) has ended; the caller's next read sees them all.
async fn fall_asleep(
    client: &Client,
    listener: &str,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT rowsync.listener_sleep($1)", &[&listener])
        .await?;
    let watermark: String = client
        .query_one("SELECT rowsync.listener_watermark()::text", &[])
        .await?
        .get(0);
    let settled = client
        .prepare("SELECT rowsync.listener_settled($1::text::xid8)")
        .await?;
    let mut pause = Duration::from_micros(200);
    let started = Instant::now();
    loop {
        let done: bool = client.query_one(&settled, &[&watermark]).await?.get(0);
        if done || *shutdown.borrow() {
            return Ok(());
        }
        if started.elapsed() > SETTLE_AT_MOST {
            tracing::warn!(
                "a long-running transaction holds the feed's horizon; relying on the safety poll"
            );
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Reads and routes every readable change after the bridge's cursor.
async fn drain(
    state: &Arc<AppState>,
    client: &Client,
    read: &Statement,
) -> Result<usize, tokio_postgres::Error> {
    let mut total = 0;
    loop {
        let position = state.position.load(Ordering::SeqCst);
        let rows = match client
            .query(read, &[&position, &state.config.feed_batch])
            .await
        {
            Ok(rows) => rows,
            Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "RS410") => {
                // This bridge was away longer than the log keeps changes: every
                // subscriber reads its data again, and the feed goes on from the head.
                let head: i64 = client.query_one("SELECT rowsync.head()", &[]).await?.get(0);
                tracing::warn!(
                    position,
                    head,
                    "cursor fell out of the change log; subscribers resync"
                );
                state.router.resync_where(|_| true, "cursor_gone");
                state.position.store(head, Ordering::SeqCst);
                continue;
            }
            Err(e) => return Err(e),
        };
        for row in &rows {
            let change = FeedChange::from_row(row);
            state.router.route(&change);
            // Advance only after routing: a subscriber that reads the position, then
            // drains its queue, has every change up to it.
            state.position.store(change.cursor, Ordering::SeqCst);
        }
        total += rows.len();
        crate::metrics::Metrics::add(&state.metrics.changes_read, rows.len() as u64);
        if rows.len() < state.config.feed_batch as usize {
            return Ok(total);
        }
    }
}
