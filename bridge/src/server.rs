//! The bridge as a library: `app(state)` is the HTTP/WebSocket router (tests call it
//! without a socket), `run(listener, config, shutdown)` serves it with the feed and the
//! presence bus until `shutdown` resolves, then drains connections.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::{feed, http};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub fn app(state: Arc<AppState>) -> axum::Router {
    http::routes(state)
}

/// Serves until `shutdown` resolves; then tells every connection to go (close 1001),
/// waits up to `shutdown_grace` for them, and stops the feed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(AppState::new(config, stop_rx.clone())?);
    let feed = tokio::spawn(feed::run(state.clone(), stop_rx.clone()));
    let bus = tokio::spawn(publish_presence(state.clone(), stop_rx.clone()));
    let compaction = tokio::spawn(crate::yjs::compaction::run(state.clone(), stop_rx.clone()));
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%address, "rowsync-bridge listening");
    let mut stopped = stop_rx.clone();
    // Frames are small and many: send each at once rather than wait for the peer's ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
    });
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(async move {
        let _ = stopped.wait_for(|s| *s).await;
    });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    tracing::info!("shutting down: closing connections");
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + state.config.shutdown_grace;
    while Arc::strong_count(&state.connections) > 1 && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = feed.await;
    let _ = bus.await;
    let _ = compaction.await;
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

/// Carries presence and broadcast between bridges through `rowsync.bus`: every flush
/// interval, reads what the others published if the doorbell rang, then publishes this
/// bridge's events in one row.
async fn publish_presence(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.bus_flush);
    let announce_every =
        (state.config.presence_timeout.as_millis() / 3 / state.config.bus_flush.as_millis().max(1))
            .max(1) as u64;
    let mut ticks: u64 = 0;
    // The snapshot the last read covered: the next reads what committed since.
    let mut read_upto: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        ticks += 1;
        let rang = state.cursor.bus_rang.swap(false, Ordering::SeqCst);
        if rang || read_upto.is_none() {
            match read_bus(&state, read_upto.as_deref()).await {
                Ok(upto) => read_upto = Some(upto),
                Err(error) => {
                    state.cursor.bus_rang.store(true, Ordering::SeqCst);
                    tracing::warn!(%error, "presence bus not read");
                }
            }
        }
        let announce = ticks.is_multiple_of(announce_every);
        let events = state.presence.tick(announce);
        state
            .docs
            .from_bus(&state, state.presence.take_awareness(), announce)
            .await;
        if events.is_empty() {
            continue;
        }
        let published = match state.pool.get().await {
            Ok(client) => client
                .execute(
                    "SELECT rowsync.bus_publish($1, $2)",
                    &[&state.presence.bridge(), &serde_json::Value::Array(events)],
                )
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match published {
            Ok(_) => Metrics::add(&state.metrics.bus_messages, 1),
            Err(error) => tracing::warn!(%error, "presence not sent to other bridges"),
        }
    }
}

/// Queues what other bridges published since snapshot `since` (from now on, when
/// `None`), and returns the snapshot to read from next.
async fn read_bus(state: &AppState, since: Option<&str>) -> Result<String, String> {
    let client = state.pool.get().await.map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "SELECT upto::text, bridge, events FROM rowsync.bus_read($1::text::pg_snapshot)",
            &[&since],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut upto = since.unwrap_or_default().to_string();
    for row in rows {
        upto = row.get(0);
        if let (Some(bridge), Some(events)) = (row.get(1), row.get(2)) {
            state.presence.inbound().push(bridge, events);
        }
    }
    Ok(upto)
}
