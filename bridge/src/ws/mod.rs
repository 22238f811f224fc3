//! `/v1/ws`: one task per connection, reading the client's requests, writing its queue,
//! keeping the heartbeat and the token's expiry. docs/protocol.md describes the frames.

use crate::auth::{self, Claims};
use crate::errors::{self, Error};
use crate::keys::Key;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, Outgoing};
use crate::protocol::{ChangesFrame, Limits, RowItem, ServerFrame, PROTOCOL_VERSION};
use crate::router::ConnId;
use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod limits;
mod requests;
pub mod subscriptions;

pub use limits::close;
pub(crate) use limits::TokenBucket;
use subscriptions::Sent;

struct Conn {
    id: ConnId,
    /// Counted by graceful shutdown, which waits for connections to close.
    _alive: Arc<()>,
    state: Arc<AppState>,
    claims: Claims,
    outbox: Arc<Outbox>,
    /// Keys this connection was authorized to follow, and whether it follows each now
    /// (it may use all of them as presence rooms). One map, not two sets: every
    /// connection holds it.
    keys: HashMap<String, bool>,
    rooms: HashSet<String>,
    /// Fingerprints of the rows this connection was sent and not told to remove: a
    /// `remove` goes only to a connection that holds the row, so nobody learns the id of
    /// a row it was never allowed to see.
    held: HashSet<u64>,
    bucket: TokenBucket,
    last_heard: Instant,
    /// When the keys are checked again (every `reauthorize`, and at once when a refreshed
    /// token's claims differ): access that policies took away ends with a `revoked`.
    next_check: Instant,
}

enum Flow {
    Continue,
    Close(u16, String),
    /// The client went away: nothing to send.
    Gone,
}

/// Serves one connection until it closes. `claims` is `Err` when the token was refused:
/// the client is told why, in a close code it can act on.
///
/// Not an `async fn`: one keeps its arguments and a moved copy of them side by side in
/// the future, and this future lives as long as the connection. The async block below
/// uses what it captures in place.
pub fn serve(
    mut socket: WebSocket,
    state: Arc<AppState>,
    claims: Result<Claims, Error>,
) -> impl Future<Output = ()> + Send {
    let mut conn = claims.map(|claims| Conn::new(state, claims));
    async move {
        let conn = match &mut conn {
            Ok(conn) => conn,
            Err(error) => {
                let code = if error.kind == errors::TOKEN_EXPIRED {
                    close::TOKEN_EXPIRED
                } else {
                    close::UNAUTHORIZED
                };
                let _ = send_error(&mut socket, None, error).await;
                let _ = close_with(&mut socket, code, &error.body.message).await;
                linger(&mut socket).await;
                return;
            }
        };
        // Built and sent in its own statement: a value still in scope would live in the
        // connection's task for as long as the connection does.
        let welcomed = send_text(&mut socket, welcome(conn).text(None)).await;
        let outcome = match welcomed {
            Ok(()) => conn.run(&mut socket).await,
            Err(_) => None,
        };
        if let Some((code, reason)) = outcome {
            // Shutting down, waiting for answers would only delay the shutdown: a client
            // that misses 1001 for a reset reconnects all the same.
            if close_with(&mut socket, code, &reason).await.is_ok() && code != close::GOING_AWAY {
                linger(&mut socket).await;
            }
        }
        let user = conn.claims.sub.as_deref().map(Key::user_topic);
        conn.state
            .router
            .disconnect(conn.id, conn.subscriptions().chain(&user));
        for room in &conn.rooms {
            conn.state.presence.leave(conn.id, room);
        }
    }
}

fn welcome(conn: &Conn) -> ServerFrame {
    let config = &conn.state.config;
    ServerFrame::Welcome {
        protocol: PROTOCOL_VERSION,
        user: conn.claims.sub.clone(),
        role: conn.claims.role.clone(),
        heartbeat_ms: config.heartbeat.as_millis() as u64,
        limits: Limits {
            max_frame_bytes: config.max_frame_bytes,
            max_subscriptions: config.max_subscriptions,
            messages_per_second: config.messages_per_second,
        },
    }
}

/// What woke a connection's task.
enum Event {
    Frame(Option<Result<Message, axum::Error>>),
    Queued,
    Timer,
    /// An access table changed (rowsync.enable(…, access => true)).
    AccessChanged,
    ShuttingDown,
}

impl Conn {
    fn new(state: Arc<AppState>, claims: Claims) -> Conn {
        let outbox = Arc::new(Outbox::new(state.config.send_queue_frames));
        let id = state.router.connect(outbox.clone(), claims.identity());
        let state_reauthorize = state.config.reauthorize;
        // Every connection of a user receives the events sent to `user:<sub>`.
        if let Some(sub) = &claims.sub {
            state.router.subscribe(id, &Key::user_topic(sub));
        }
        Conn {
            id,
            _alive: state.connections.clone(),
            bucket: TokenBucket::new(state.config.messages_per_second),
            state,
            claims,
            outbox,
            keys: HashMap::new(),
            rooms: HashSet::new(),
            held: HashSet::new(),
            last_heard: Instant::now(),
            // Spread over the interval, so that connections opened together are not
            // checked together.
            next_check: Instant::now()
                + state_reauthorize.mul_f64(0.5 + (id % 1000) as f64 / 2000.0),
        }
    }

    /// Returns the close to send, or `None` when the client went away.
    ///
    /// The waits and the handling are apart: the waits' futures are gone before a handler
    /// runs, so an idle connection's task holds only them. One timer serves both the
    /// heartbeat and the token's expiry.
    async fn run(&mut self, socket: &mut WebSocket) -> Option<(u16, String)> {
        let mut shutdown = self.state.shutdown.clone();
        let mut access = self.state.access_changed.subscribe();
        let mut next_beat = Instant::now() + self.state.config.heartbeat;
        loop {
            let expires = self.expires_at();
            let event = tokio::select! {
                frame = socket.recv() => Event::Frame(frame),
                _ = self.outbox.ready() => Event::Queued,
                _ = tokio::time::sleep_until(next_beat.min(expires).min(self.next_check).into()) => Event::Timer,
                _ = access.changed() => Event::AccessChanged,
                _ = shutdown.changed() => Event::ShuttingDown,
            };
            let flow = match event {
                // Boxed: requests hold database futures, and an idle connection
                // should not carry their size.
                Event::Frame(frame) => Box::pin(self.on_frame(socket, frame)).await,
                Event::Queued => self.flush(socket).await,
                Event::Timer if Instant::now() >= expires => {
                    let error = Error::new(
                        errors::TOKEN_EXPIRED,
                        "the token has expired: reconnect with a fresh one",
                    );
                    let _ = send_error(socket, None, &error).await;
                    Flow::Close(close::TOKEN_EXPIRED, "token expired".into())
                }
                Event::Timer => {
                    if Instant::now() >= self.next_check {
                        self.next_check = Instant::now() + self.state.config.reauthorize;
                        Box::pin(self.recheck()).await;
                    }
                    if Instant::now() < next_beat {
                        continue;
                    }
                    next_beat = Instant::now() + self.state.config.heartbeat;
                    if self.last_heard.elapsed() > self.state.config.client_timeout {
                        Flow::Close(
                            close::HEARTBEAT_TIMEOUT,
                            "no frame from the client within client_timeout".into(),
                        )
                    } else if socket
                        .send(Message::Ping(Default::default()))
                        .await
                        .is_err()
                    {
                        return None;
                    } else {
                        Flow::Continue
                    }
                }
                Event::AccessChanged => {
                    // Spread over 100 ms: one membership change should not send every
                    // connection's checks to the database in the same instant.
                    let soon = Instant::now() + Duration::from_millis(self.id % 100);
                    self.next_check = self.next_check.min(soon);
                    Flow::Continue
                }
                Event::ShuttingDown => {
                    Flow::Close(close::GOING_AWAY, "server shutting down: reconnect".into())
                }
            };
            match flow {
                Flow::Continue => {}
                Flow::Close(code, reason) => return Some((code, reason)),
                Flow::Gone => return None,
            }
        }
    }

    async fn on_frame(
        &mut self,
        socket: &mut WebSocket,
        frame: Option<Result<Message, axum::Error>>,
    ) -> Flow {
        let message = match frame {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                // A frame over max_frame_bytes: say so with the standard code.
                let inner = error.into_inner();
                if let Some(tungstenite::Error::Capacity(reason)) =
                    inner.downcast_ref::<tungstenite::Error>()
                {
                    return Flow::Close(close::TOO_BIG, reason.to_string());
                }
                tracing::debug!(error = %inner, conn = self.id, "websocket read failed");
                return Flow::Gone;
            }
            None => return Flow::Gone,
        };
        self.last_heard = Instant::now();
        let limit = self.state.config.max_frame_bytes;
        match message {
            // Read whole (up to the socket's hard limit, crate::http) and refused here, so
            // that the stream stays readable and the close can be delivered.
            Message::Text(text) if text.len() > limit => Flow::Close(
                close::TOO_BIG,
                format!(
                    "a frame of {} bytes, over max_frame_bytes {limit}",
                    text.len()
                ),
            ),
            Message::Binary(data) if data.len() > limit => Flow::Close(
                close::TOO_BIG,
                format!(
                    "a frame of {} bytes, over max_frame_bytes {limit}",
                    data.len()
                ),
            ),
            Message::Text(text) => self.on_text(socket, text.as_str()).await,
            Message::Binary(_) => {
                self.reply_error(
                    socket,
                    None,
                    Error::new(errors::BAD_MESSAGE, "frames are JSON text, not binary"),
                )
                .await
            }
            Message::Close(_) => Flow::Gone,
            Message::Ping(_) | Message::Pong(_) => Flow::Continue,
        }
    }

    fn subscriptions(&self) -> impl Iterator<Item = &String> {
        self.keys
            .iter()
            .filter(|(_, followed)| **followed)
            .map(|(key, _)| key)
    }

    /// When the token expires; anonymous connections never do. An `exp` far in the future
    /// counts as a year away (an Instant cannot hold any u64 of seconds).
    fn expires_at(&self) -> Instant {
        let year = Duration::from_secs(365 * 24 * 3600);
        let left = match self.claims.exp {
            Some(exp) => Duration::from_secs(exp.saturating_sub(auth::now())).min(year),
            None => year,
        };
        Instant::now() + left
    }

    /// Sends everything queued for this connection.
    async fn flush(&mut self, socket: &mut WebSocket) -> Flow {
        if self.outbox.overflowed() {
            Metrics::add(&self.state.metrics.slow_closes, 1);
            return Flow::Close(
                close::SLOW,
                "too far behind: reconnect and resume from your last cursor".into(),
            );
        }
        // A client that stopped reading blocks the write once the socket's buffers are
        // full; no close frame can pass then, so the connection is dropped.
        let limit = self.state.config.write_timeout;
        let nothing_sent = Sent::new();
        match tokio::time::timeout(limit, self.send_queued(socket, &nothing_sent)).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(_)) => Flow::Close(close::GOING_AWAY, String::new()),
            Err(_) => {
                Metrics::add(&self.state.metrics.slow_closes, 1);
                tracing::debug!(conn = self.id, "write blocked past write_timeout: dropped");
                Flow::Gone
            }
        }
    }

    /// Writes the queued frames, except items whose log key is in `skip`, and flushes
    /// once: queued frames go out in one write, not one each. Rows and events gather into
    /// `changes` messages; any other frame goes out alone, in its place.
    async fn send_queued(
        &mut self,
        socket: &mut WebSocket,
        skip: &Sent,
    ) -> Result<(), axum::Error> {
        let mut changes = ChangesFrame::new();
        for frame in self.outbox.drain() {
            match frame {
                Outgoing::Row(item) if skip.covers(item.log_key, &item.keys) => {}
                Outgoing::Row(item) => {
                    if self.admit(&item) {
                        let seconds = unix_seconds() - item.at;
                        self.state.metrics.observe_latency(seconds.max(0.0));
                        changes.push(&item.text, &item.cursor);
                    }
                }
                Outgoing::Event(event) if skip.covers(event.log_key, &[]) => {}
                Outgoing::Event(event) => changes.push(&event.text, &event.cursor),
                Outgoing::Text(text) => {
                    self.feed_changes(socket, &mut changes).await?;
                    socket.feed(Message::Text(text)).await?;
                    Metrics::add(&self.state.metrics.frames_sent, 1);
                }
            }
        }
        self.feed_changes(socket, &mut changes).await?;
        socket.flush().await
    }

    /// Whether `item` goes to this client, keeping the rows it holds up to date: every
    /// upsert does; a remove only when the client holds the row.
    fn admit(&mut self, item: &RowItem) -> bool {
        if item.upsert {
            self.held.insert(item.record);
            true
        } else {
            self.held.remove(&item.record)
        }
    }

    async fn feed_changes(
        &self,
        socket: &mut WebSocket,
        changes: &mut ChangesFrame,
    ) -> Result<(), axum::Error> {
        if let Some(text) = changes.take() {
            socket.feed(Message::Text(text)).await?;
            Metrics::add(&self.state.metrics.frames_sent, 1);
        }
        Ok(())
    }

    async fn reply_error(
        &self,
        socket: &mut WebSocket,
        reference: Option<&Value>,
        error: Error,
    ) -> Flow {
        self.state.metrics.error(error.body.code);
        match send_error(socket, reference, &error).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close(close::GOING_AWAY, String::new()),
        }
    }
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn gone(_: axum::Error) -> Error {
    Error::new(errors::INTERNAL, "connection lost")
}

async fn send_text(socket: &mut WebSocket, text: String) -> Result<(), axum::Error> {
    socket.send(Message::Text(Utf8Bytes::from(text))).await
}

async fn send_error(
    socket: &mut WebSocket,
    reference: Option<&Value>,
    error: &Error,
) -> Result<(), axum::Error> {
    let frame = ServerFrame::Error {
        error: (*error.body).clone(),
    };
    send_text(socket, frame.text(reference)).await
}

/// After a close frame, reads (and drops) what the client still sends until it answers the
/// close, for at most a second. Closing the socket with the client's frames unread would
/// make the kernel reset the connection, and a reset can destroy the close frame on its
/// way: a client flooding the bridge would see a reset instead of 4102.
pub(crate) async fn linger(socket: &mut WebSocket) {
    let drain = async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

pub(crate) async fn close_with(
    socket: &mut WebSocket,
    code: u16,
    reason: &str,
) -> Result<(), axum::Error> {
    // A close reason is at most 123 bytes.
    let reason: String = reason.chars().take(100).collect();
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await
}
