//! A connection's requests: parsing them, answering reads, writes, presence and token
//! refreshes. Subscriptions have their own module.

use crate::db;
use crate::errors::{self, Error};
use crate::feed::change::record_hash;
use crate::keys::Key;
use crate::metrics::Metrics;
use crate::protocol::{ClientMessage, PresenceAction};
use axum::extract::ws::WebSocket;
use serde_json::{json, Value};
use std::time::Instant;

use super::{close, send_text, Conn, Flow};

impl Conn {
    pub(super) async fn on_text(&mut self, socket: &mut WebSocket, text: &str) -> Flow {
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

    pub(super) fn reauthenticate(&mut self, token: &str) -> Result<Value, Error> {
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

    pub(super) async fn fetch(&mut self, keys: Vec<String>) -> Result<Value, Error> {
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
                        if let Some(id) = crate::feed::change::scope_value(&row[pk.as_str()]) {
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
                crate::feed::change::scope_value(&record["id"]),
                record["row"].is_null(),
            ) {
                self.held.insert(record_hash(table, &id));
            }
        }
        Ok(json!({"type": "records", "records": records, "scopes": scopes, "cursor": position}))
    }

    pub(super) async fn presence(
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
pub(super) fn canonical(keys: Vec<String>) -> Result<Vec<String>, Error> {
    keys.iter()
        .map(|k| Key::parse(k).map(|key| key.canonical()))
        .collect()
}

/// A client frame as a message, or the error to reply with and the `ref` to echo.
pub(super) fn parse_message(text: &str) -> Result<ClientMessage, (Option<Value>, Error)> {
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
