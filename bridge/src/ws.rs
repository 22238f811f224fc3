//! `/v1/ws`: one task per connection, reading the client's requests, writing its queue,
//! keeping the heartbeat and the token's expiry. docs/protocol.md describes the frames.

use crate::auth::{self, Claims};
use crate::db;
use crate::errors::{self, Error};
use crate::feed::visibility;
use crate::keys::Key;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, Outgoing};
use crate::protocol::{
    members_digest, members_frame, resync_frame, ChangesFrame, ClientMessage, EventFrame,
    PresenceAction, RowItem, PROTOCOL_VERSION,
};
use crate::router::{record_hash, ConnId, FeedChange, Interest};
use crate::server::AppState;
use crate::token::{encode, FeedId, Position, Tick, TokenError};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Close codes (docs/protocol.md). 4000–4099: fix something before reconnecting;
/// 4100–4199: reconnect (with backoff, a fresh token, or from the last cursor).
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const UNAUTHORIZED: u16 = 4001;
    pub const TOKEN_EXPIRED: u16 = 4100;
    pub const SLOW: u16 = 4101;
    pub const RATE_LIMITED: u16 = 4102;
    pub const HEARTBEAT_TIMEOUT: u16 = 4103;
}

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
        let welcomed = send_text(&mut socket, welcome(conn).to_string()).await;
        let outcome = match welcomed {
            Ok(()) => conn.run(&mut socket).await,
            Err(_) => None,
        };
        if let Some((code, reason)) = outcome {
            if close_with(&mut socket, code, &reason).await.is_ok() {
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

fn welcome(conn: &Conn) -> Value {
    json!({
        "type": "welcome",
        "protocol": PROTOCOL_VERSION,
        "user": conn.claims.sub,
        "role": conn.claims.role,
        "heartbeat_ms": conn.state.config.heartbeat.as_millis() as u64,
        "limits": {
            "max_frame_bytes": conn.state.config.max_frame_bytes,
            "max_subscriptions": conn.state.config.max_subscriptions,
            "messages_per_second": conn.state.config.messages_per_second,
        },
    })
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

    async fn on_text(&mut self, socket: &mut WebSocket, text: &str) -> Flow {
        Metrics::add(&self.state.metrics.messages_received, 1);
        if !self.bucket.take() {
            if self.bucket.flooding() {
                return Flow::Close(close::RATE_LIMITED, "far over messages_per_second".into());
            }
            return self
                .reply_error(
                    socket,
                    None,
                    Error::new(errors::RATE_LIMITED, "too many messages: slow down"),
                )
                .await;
        }
        let message = match parse_message(text) {
            Ok(message) => message,
            Err((reference, error)) => {
                return self.reply_error(socket, reference.as_ref(), error).await
            }
        };
        let reference = message.reference().cloned();
        let result = match message {
            ClientMessage::Ping { .. } => Ok(json!({"type": "pong"})),
            ClientMessage::Auth { token, .. } => self.reauthenticate(&token),
            ClientMessage::Subscribe {
                keys, cursor, held, ..
            } => match canonical(keys) {
                Ok(keys) => self.subscribe(socket, keys, cursor, held).await,
                Err(error) => Err(error),
            },
            ClientMessage::Unsubscribe { keys, .. } => {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        Key::parse(k)
                            .map(|key| key.canonical())
                            .unwrap_or_else(|_| k.clone())
                    })
                    .collect();
                for key in &keys {
                    if let Some(followed @ true) = self.keys.get_mut(key) {
                        *followed = false;
                        self.state.router.unsubscribe(self.id, key);
                    }
                }
                Ok(json!({"type": "ack", "keys": keys}))
            }
            ClientMessage::Fetch { keys, .. } => self.fetch(keys).await,
            ClientMessage::Write { tx, .. } => db::apply(&self.state.pool, &self.claims, &tx)
                .await
                .map(|result| json!({"type": "ack", "result": result})),
            ClientMessage::Presence {
                action,
                room,
                state,
                ..
            } => match canonical(vec![room]) {
                Ok(mut rooms) => self.presence(action, rooms.remove(0), state).await,
                Err(error) => Err(error),
            },
            ClientMessage::Broadcast {
                mut room,
                event,
                payload,
                ..
            } => {
                if let Ok(key) = Key::parse(&room) {
                    room = key.canonical();
                }
                if self.state.presence.broadcast(
                    self.id,
                    &room,
                    self.claims.sub.as_deref(),
                    &event,
                    payload,
                ) {
                    Ok(json!({"type": "ack"}))
                } else {
                    Err(Error::new(
                        errors::NOT_JOINED,
                        format!("join room {room:?} (presence) before broadcasting to it"),
                    ))
                }
            }
        };
        match result {
            Ok(mut reply) => {
                if let Some(r) = reference {
                    reply["ref"] = r;
                }
                match send_text(socket, reply.to_string()).await {
                    Ok(()) => Flow::Continue,
                    Err(_) => Flow::Close(close::GOING_AWAY, String::new()),
                }
            }
            Err(error) => self.reply_error(socket, reference.as_ref(), error).await,
        }
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

    fn reauthenticate(&mut self, token: &str) -> Result<Value, Error> {
        let claims = self.state.verifier.verify(token)?;
        if claims.sub != self.claims.sub || claims.role != self.claims.role {
            return Err(Error::new(
                errors::UNAUTHORIZED,
                "a refreshed token must be for the same user and role",
            ));
        }
        if claims.stable() != self.claims.stable() {
            self.next_check = Instant::now();
            self.state.router.set_identity(self.id, claims.identity());
        }
        self.claims = claims;
        Ok(json!({"type": "ack", "exp": self.claims.exp}))
    }

    /// Checks that the user may follow each key it has not been authorized for yet, and
    /// remembers those it may; the first it may not fails the request.
    async fn authorize(&mut self, keys: &[String]) -> Result<(), Error> {
        let new: Vec<String> = keys
            .iter()
            .filter(|k| !self.keys.contains_key(*k))
            .cloned()
            .collect();
        let visible = self.visible(&new).await?;
        if let Some((text, _)) = new.iter().zip(&visible).find(|(_, ok)| !**ok) {
            let what = match Key::parse(text) {
                Ok(Key::Scope { .. }) => "scope",
                Ok(Key::Table { .. }) => "table",
                _ => "record",
            };
            return Err(Error::new(
                errors::NOT_FOUND,
                format!("{what} {text:?} not found or not visible"),
            ));
        }
        for key in new {
            self.keys.entry(key).or_insert(false);
        }
        Ok(())
    }

    /// Whether the user may follow each key now: a record it can read, a scope whose
    /// parent it can read (rowsync.scope_visible), a table it may read
    /// (rowsync.table_visible).
    async fn visible(&self, keys: &[String]) -> Result<Vec<bool>, Error> {
        let mut visible = vec![false; keys.len()];
        let mut records = Vec::new();
        for (i, text) in keys.iter().enumerate() {
            match Key::parse(text)? {
                Key::Record { table, id } => records.push((i, json!({"table": table, "id": id}))),
                Key::Scope {
                    table,
                    column,
                    value,
                } => {
                    visible[i] =
                        db::scope_visible(&self.state.pool, &self.claims, &table, &column, &value)
                            .await?;
                }
                Key::Table { table } => {
                    visible[i] = db::table_visible(&self.state.pool, &self.claims, &table).await?;
                }
            }
        }
        if !records.is_empty() {
            let pointers = Value::Array(records.iter().map(|(_, p)| p.clone()).collect());
            let found = db::get(&self.state.pool, &self.claims, &pointers).await?;
            for (n, (i, _)) in records.iter().enumerate() {
                visible[*i] = !found["rows"][n]["row"].is_null();
            }
        }
        Ok(visible)
    }

    /// Checks every key the connection was authorized for again. Those it may no longer
    /// follow are dropped: no more changes for them, their room is left, joining it again
    /// is refused, and the client is told with `revoked`. A database error keeps access
    /// as it was until the next check.
    async fn recheck(&mut self) {
        let keys: Vec<String> = self.keys.keys().cloned().collect();
        if keys.is_empty() {
            return;
        }
        let visible = match self.visible(&keys).await {
            Ok(visible) => visible,
            Err(error) => {
                tracing::warn!(
                    conn = self.id,
                    code = error.body.code,
                    "access not checked again"
                );
                return;
            }
        };
        let revoked: Vec<String> = keys
            .into_iter()
            .zip(visible)
            .filter(|(_, ok)| !ok)
            .map(|(key, _)| key)
            .collect();
        if revoked.is_empty() {
            return;
        }
        for key in &revoked {
            if self.keys.remove(key) == Some(true) {
                self.state.router.unsubscribe(self.id, key);
            }
            if self.rooms.remove(key) {
                self.state.presence.leave(self.id, key);
            }
        }
        Metrics::add(&self.state.metrics.revocations, revoked.len() as u64);
        let frame = json!({"type": "revoked", "keys": revoked});
        self.outbox.push(Outgoing::Text(frame.to_string().into()));
    }

    async fn subscribe(
        &mut self,
        socket: &mut WebSocket,
        keys: Vec<String>,
        cursor: Option<String>,
        held: HashMap<String, String>,
    ) -> Result<Value, Error> {
        let new: Vec<String> = keys
            .iter()
            .filter(|k| self.keys.get(*k) != Some(&true))
            .cloned()
            .collect();
        if self.subscriptions().count() + new.len() > self.state.config.max_subscriptions {
            return Err(Error::new(
                errors::TOO_MANY_SUBSCRIPTIONS,
                format!(
                    "at most {} subscriptions per connection",
                    self.state.config.max_subscriptions
                ),
            ));
        }
        self.authorize(&new).await?;
        for key in &new {
            self.state.router.subscribe(self.id, key);
            self.keys.insert(key.clone(), true);
        }
        // The position first, then the queue: every change up to it is queued by now, so
        // a client that resumes from the acknowledged cursor misses nothing. Resuming, the
        // catch-up reads to the end of a batch being routed, and that is the position.
        let mut position = self.state.cursor.get();
        let mut sent = Sent::new();
        if let (Some(cursor), Some((feed, upto))) = (cursor, self.state.cursor.catch_up_to()) {
            sent = self.catch_up(socket, feed, &cursor, upto, &keys).await?;
            self.reconcile(socket, &keys, &held).await?;
            position = Some((feed, upto));
        }
        self.send_queued(socket, &sent).await.map_err(gone)?;
        let cursor = position.map(|(feed, tick)| encode(feed, &Position::at(tick)));
        Ok(json!({"type": "ack", "keys": keys, "cursor": cursor}))
    }

    /// After a resume: learns which rows the client holds under `keys` (a new bridge
    /// knows nothing of it), and where the client's digest of a scope differs from what
    /// the user may see in it now, sends the complete list (`members`). A forged digest
    /// gains nothing: the list holds only rows the user may read anyway.
    async fn reconcile(
        &mut self,
        socket: &mut WebSocket,
        keys: &[String],
        digests: &HashMap<String, String>,
    ) -> Result<(), Error> {
        for text in keys {
            let key = Key::parse(text)?;
            match key.rows() {
                None => {
                    if let Key::Record { table, id } = &key {
                        self.held.insert(record_hash(table, id));
                    }
                }
                Some((table, scope)) => {
                    let max = self.state.config.max_scope_rows as i32;
                    let members =
                        db::members(&self.state.pool, &self.claims, table, scope, max).await?;
                    let pairs = members.as_array().map(Vec::as_slice).unwrap_or_default();
                    let rows = pairs
                        .iter()
                        .filter_map(|p| Some((p[0].as_str()?, p[1].as_i64()?)));
                    for (id, _) in rows.clone() {
                        self.held.insert(record_hash(table, id));
                    }
                    if digests.get(text) != Some(&members_digest(rows)) {
                        send_text(socket, members_frame(text, &members))
                            .await
                            .map_err(gone)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends every change from the client's token up to the bridge's tick `now` that
    /// concerns `keys`, in feed order, and returns their log keys. A token that names
    /// another feed, fails its check, or is older than the log gets a `resync` for the
    /// keys instead.
    async fn catch_up(
        &mut self,
        socket: &mut WebSocket,
        feed: FeedId,
        token: &str,
        now: Tick,
        keys: &[String],
    ) -> Result<Sent, Error> {
        let mut sent = Sent::new();
        if let Some(reason) = self
            .replay(socket, feed, token, now, keys, &mut sent)
            .await?
        {
            send_text(socket, resync_frame(keys, reason))
                .await
                .map_err(gone)?;
        }
        Ok(sent)
    }

    /// Sends what the token missed, recording it in `sent`; `Some(reason)` when the token
    /// cannot be honoured (or no longer, past `max_catch_up`) and the keys must resync.
    async fn replay(
        &mut self,
        socket: &mut WebSocket,
        feed: FeedId,
        token: &str,
        now: Tick,
        keys: &[String],
        sent: &mut Sent,
    ) -> Result<Option<&'static str>, Error> {
        let from = match crate::token::decode(feed, token) {
            Ok(position) => position,
            Err(TokenError::Malformed) => return Ok(Some("cursor_invalid")),
            Err(TokenError::OtherFeed) => return Ok(Some("cursor_foreign")),
        };
        let client = self.state.pool.get().await?;
        // A token's tick that is there must be the one the token was issued at. One that
        // is gone was thinned, or lost in a crash: read from the newest kept tick at or
        // before the token's start that was taken no later than its tick (a few changes
        // come twice, none is skipped), or resync when there is none.
        let from = match crate::feed::tick(&client, from.hi.id).await? {
            Some(tick) if tick == from.hi => from,
            Some(_) => return Ok(Some("cursor_invalid")),
            None if from.hi.id > now.id => return Ok(Some("cursor_invalid")),
            None => match crate::feed::tick_before(&client, from.lo, from.hi.at).await? {
                Some(tick) => Position::at(tick),
                None => return Ok(Some("cursor_gone")),
            },
        };
        let user = self.claims.sub.as_deref().map(Key::user_topic);
        let wanted: HashSet<&String> = keys.iter().chain(&user).collect();
        // The rest of the token's batch, then everything since, up to the bridge's tick.
        let mut ranges = vec![(from.lo, from.hi, from.after)];
        if from.hi.id < now.id {
            ranges.push((from.hi.id, now, None));
        }
        let batch = self.state.config.feed_batch;
        let mut read = 0;
        for (since, upto, mut after) in ranges {
            if since >= upto.id && after.is_none() {
                continue;
            }
            loop {
                let page =
                    match crate::feed::read_page(&client, feed, since, upto, after, batch).await {
                        Ok(page) => page,
                        Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "RS410") => {
                            return Ok(Some("cursor_gone"))
                        }
                        Err(e) => return Err(e.into()),
                    };
                read += page.len();
                if read > self.state.config.max_catch_up {
                    return Ok(Some("too_far_behind"));
                }
                after = page.last().map(|c| (c.xid, c.cursor)).or(after);
                self.replay_page(socket, &page, keys, &wanted, sent).await?;
                if page.len() < batch as usize {
                    break;
                }
            }
        }
        Ok(None)
    }

    /// Sends what one page of the log holds for this connection, as live delivery would:
    /// rows as the user may see them now, events of its topics, resyncs of truncated
    /// tables; and records in `sent` what went out.
    async fn replay_page(
        &mut self,
        socket: &mut WebSocket,
        page: &[FeedChange],
        keys: &[String],
        wanted: &HashSet<&String>,
        sent: &mut Sent,
    ) -> Result<(), Error> {
        let relevant: Vec<FeedChange> = page
            .iter()
            .filter(|c| match c.kind.as_str() {
                "event" => c.router_topic().is_some_and(|t| wanted.contains(&t)),
                "truncate" => c
                    .table
                    .as_deref()
                    .is_some_and(|t| keys.iter().any(|k| Key::of_table(k, t))),
                _ => c.keys().iter().any(|k| wanted.contains(k)),
            })
            .cloned()
            .collect();
        let (rows, newest) = visibility::coalesce(&relevant);
        let mut plan = match self.state.router.subscriber(self.id) {
            Some(subscriber) => {
                let interest = Interest {
                    subscriber,
                    rows: rows
                        .iter()
                        .enumerate()
                        .map(|(r, row)| {
                            let matched = (0..row.keys.len())
                                .filter(|k| wanted.contains(&row.keys[*k].0))
                                .collect();
                            (r, matched)
                        })
                        .collect(),
                };
                // Catch-up checks its one identity exactly, whatever the table's mode.
                let exact = HashSet::new();
                let violations = &self.state.metrics.scope_violations;
                visibility::plan(
                    &self.state.pool,
                    &self.state.config,
                    &rows,
                    vec![interest],
                    &exact,
                    violations,
                )
                .await
                .map_err(|e| Error::new(errors::INTERNAL, e.to_string()))?
            }
            None => return Ok(()),
        };
        if let Some((_, keys)) = plan.resyncs.pop() {
            send_text(socket, resync_frame(&keys, "not_checked"))
                .await
                .map_err(gone)?;
        }
        let mut changes = ChangesFrame::new();
        for (change, row) in relevant.iter().zip(newest) {
            match change.kind.as_str() {
                "event" => {
                    if let Some(event) = EventFrame::new(change) {
                        sent.insert(event.log_key, &[]);
                        changes.push(&event.text, &event.cursor);
                    }
                }
                "truncate" => {
                    let table = change.table.as_deref().unwrap_or_default();
                    let emptied: Vec<&String> =
                        keys.iter().filter(|k| Key::of_table(k, table)).collect();
                    self.feed_changes(socket, &mut changes)
                        .await
                        .map_err(gone)?;
                    socket
                        .feed(Message::Text(resync_frame(&emptied, "truncate").into()))
                        .await
                        .map_err(gone)?;
                }
                _ => {
                    let Some(r) = row else { continue };
                    for (_, item) in plan.per_row[r].drain(..) {
                        sent.insert(item.log_key, &item.keys);
                        if self.admit(&item) {
                            changes.push(&item.text, &item.cursor);
                        }
                    }
                }
            }
        }
        self.feed_changes(socket, &mut changes)
            .await
            .map_err(gone)?;
        socket.flush().await.map_err(gone)
    }

    async fn fetch(&mut self, keys: Vec<String>) -> Result<Value, Error> {
        if keys.len() > self.state.config.max_fetch_keys {
            return Err(Error::new(
                errors::BAD_MESSAGE,
                format!(
                    "at most {} keys per fetch",
                    self.state.config.max_fetch_keys
                ),
            ));
        }
        let position = self.state.cursor.token();
        let mut pointers = Vec::new();
        let mut scopes = Vec::new();
        for text in &keys {
            let key = Key::parse(text)?;
            match key.rows() {
                None => {
                    if let Key::Record { table, id } = &key {
                        pointers.push(json!({"table": table, "id": id}));
                    }
                }
                Some((table, scope)) => {
                    let max = self.state.config.max_scope_rows as i32;
                    let mut listed =
                        db::list(&self.state.pool, &self.claims, table, scope, max).await?;
                    let pk = listed["pk"].as_str().unwrap_or("id").to_string();
                    for row in listed["rows"].as_array().into_iter().flatten() {
                        if let Some(id) = crate::router::scope_value(&row[pk.as_str()]) {
                            self.held.insert(record_hash(table, &id));
                        }
                    }
                    scopes.push(json!({"key": text, "rows": listed["rows"].take()}));
                }
            }
        }
        let records = if pointers.is_empty() {
            json!([])
        } else {
            db::get(&self.state.pool, &self.claims, &Value::Array(pointers)).await?["rows"].take()
        };
        for record in records.as_array().into_iter().flatten() {
            if let (Some(table), Some(id), false) = (
                record["table"].as_str(),
                crate::router::scope_value(&record["id"]),
                record["row"].is_null(),
            ) {
                self.held.insert(record_hash(table, &id));
            }
        }
        Ok(json!({"type": "records", "records": records, "scopes": scopes, "cursor": position}))
    }

    async fn presence(
        &mut self,
        action: PresenceAction,
        room: String,
        state: Value,
    ) -> Result<Value, Error> {
        match action {
            PresenceAction::Leave => {
                if self.rooms.remove(&room) {
                    self.state.presence.leave(self.id, &room);
                }
            }
            PresenceAction::Join | PresenceAction::Update => {
                let size = state.to_string().len();
                if size > self.state.config.max_presence_state_bytes {
                    return Err(Error::new(
                        errors::STATE_TOO_LARGE,
                        format!(
                            "presence state is {size} bytes, the limit is {}",
                            self.state.config.max_presence_state_bytes
                        ),
                    ));
                }
                if !self.rooms.contains(&room) {
                    if self.rooms.len() >= self.state.config.max_rooms {
                        return Err(Error::new(
                            errors::TOO_MANY_ROOMS,
                            format!(
                                "at most {} rooms per connection",
                                self.state.config.max_rooms
                            ),
                        ));
                    }
                    if action == PresenceAction::Update {
                        return Err(Error::new(
                            errors::NOT_JOINED,
                            format!("join room {room:?} before updating"),
                        ));
                    }
                    self.authorize(std::slice::from_ref(&room)).await?;
                    self.rooms.insert(room.clone());
                }
                self.state.presence.join(
                    self.id,
                    &self.outbox,
                    &room,
                    self.claims.sub.as_deref(),
                    state,
                );
            }
        }
        Ok(json!({"type": "ack", "room": room}))
    }
}

/// Keys as the feed spells them, so that an upper-case UUID still matches its changes.
fn canonical(keys: Vec<String>) -> Result<Vec<String>, Error> {
    keys.iter()
        .map(|k| Key::parse(k).map(|key| key.canonical()))
        .collect()
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A client frame as a message, or the error to reply with and the `ref` to echo.
fn parse_message(text: &str) -> Result<ClientMessage, (Option<Value>, Error)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            None,
            Error::new(errors::BAD_JSON, format!("malformed JSON: {e}")),
        )
    })?;
    let reference = value.get("ref").cloned();
    const TYPES: [&str; 8] = [
        "auth",
        "subscribe",
        "unsubscribe",
        "fetch",
        "write",
        "presence",
        "broadcast",
        "ping",
    ];
    let refused = |error| (reference.clone(), error);
    match value.get("type").and_then(Value::as_str) {
        Some(t) if TYPES.contains(&t) => {}
        Some(t) => {
            let t: String = t.chars().take(40).collect();
            let message = format!("unknown message type {t:?}");
            return Err(refused(Error::new(errors::UNKNOWN_TYPE, message)));
        }
        None => {
            let message = "a message needs a string \"type\"";
            return Err(refused(Error::new(errors::BAD_MESSAGE, message)));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| refused(Error::new(errors::BAD_MESSAGE, format!("bad message: {e}"))))
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
    let mut frame = json!({"type": "error", "error": error.body});
    if let Some(r) = reference {
        frame["ref"] = r.clone();
    }
    send_text(socket, frame.to_string()).await
}

/// After a close frame, reads (and drops) what the client still sends until it answers the
/// close, for at most a second. Closing the socket with the client's frames unread would
/// make the kernel reset the connection, and a reset can destroy the close frame on its
/// way: a client flooding the bridge would see a reset instead of 4102.
async fn linger(socket: &mut WebSocket) {
    let drain = async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

async fn close_with(socket: &mut WebSocket, code: u16, reason: &str) -> Result<(), axum::Error> {
    // A close reason is at most 123 bytes.
    let reason: String = reason.chars().take(100).collect();
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await
}

/// Allows `rate` messages a second, in bursts of up to `rate`.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    refused: u32,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> TokenBucket {
        TokenBucket {
            rate: rate as f64,
            tokens: rate as f64,
            refused: 0,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// A client that keeps sending after being refused a second's worth of messages.
    fn flooding(&self) -> bool {
        self.refused as f64 > self.rate
    }
}

/// What a catch-up sent: log keys, each with the subscription keys its frame named. A
/// queued frame of the same change is dropped only when the catch-up's frame named all
/// its keys: one queued for a key the connection already followed still goes out.
struct Sent(HashMap<(i64, i64), Vec<String>>);

impl Sent {
    fn new() -> Sent {
        Sent(HashMap::new())
    }

    fn insert(&mut self, log_key: (i64, i64), keys: &[String]) {
        self.0.insert(log_key, keys.to_vec());
    }

    fn covers(&self, log_key: (i64, i64), keys: &[String]) -> bool {
        self.0
            .get(&log_key)
            .is_some_and(|sent| keys.iter().all(|k| sent.contains(k)))
    }
}
