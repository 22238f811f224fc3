//! A connection's requests: parsing them, answering reads, writes, presence and token
//! refreshes. Subscriptions have their own module.

use crate::db;
use crate::errors::{self, Error};
use crate::feed::change::record_hash;
use crate::keys::Key;
use crate::metrics::Metrics;
use crate::protocol::{Ack, ClientMessage, PresenceAction, ScopeRows, ServerFrame};
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
        let message = match ClientMessage::parse(text) {
            Ok(message) => message,
            Err((reference, error)) => {
                return self.reply_error(socket, reference.as_ref(), error).await
            }
        };
        let reference = message.reference().cloned();
        let result = match message {
            ClientMessage::Ping { .. } => Ok(ServerFrame::Pong),
            ClientMessage::Unknown { type_name, .. } => Err(Error::new(
                errors::UNKNOWN_TYPE,
                format!("unknown message type {type_name:?}"),
            )),
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
                Ok(ServerFrame::Ack(Ack {
                    keys: Some(keys),
                    ..Ack::default()
                }))
            }
            ClientMessage::Fetch { keys, .. } => self.fetch(keys).await,
            ClientMessage::Write { tx, .. } => db::apply(&self.state.pool, &self.claims, &tx)
                .await
                .map(|result| {
                    ServerFrame::Ack(Ack {
                        result: Some(result),
                        ..Ack::default()
                    })
                }),
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
                    Ok(ServerFrame::Ack(Ack::default()))
                } else {
                    Err(Error::new(
                        errors::NOT_JOINED,
                        format!("join room {room:?} (presence) before broadcasting to it"),
                    ))
                }
            }
        };
        match result {
            Ok(reply) => match send_text(socket, reply.text(reference.as_ref())).await {
                Ok(()) => Flow::Continue,
                Err(_) => Flow::Close(close::GOING_AWAY, String::new()),
            },
            Err(error) => self.reply_error(socket, reference.as_ref(), error).await,
        }
    }

    pub(super) fn reauthenticate(&mut self, token: &str) -> Result<ServerFrame, Error> {
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
        Ok(ServerFrame::Ack(Ack {
            exp: Some(self.claims.exp),
            ..Ack::default()
        }))
    }

    pub(super) async fn fetch(&mut self, keys: Vec<String>) -> Result<ServerFrame, Error> {
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
                    scopes.push(ScopeRows {
                        key: text.clone(),
                        rows: listed["rows"].take(),
                    });
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
        Ok(ServerFrame::Records {
            records,
            scopes,
            cursor: position,
        })
    }

    pub(super) async fn presence(
        &mut self,
        action: PresenceAction,
        room: String,
        state: Value,
    ) -> Result<ServerFrame, Error> {
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
        Ok(ServerFrame::Ack(Ack {
            room: Some(room),
            ..Ack::default()
        }))
    }
}

/// Keys as the feed spells them, so that an upper-case UUID still matches its changes.
pub(super) fn canonical(keys: Vec<String>) -> Result<Vec<String>, Error> {
    keys.iter()
        .map(|k| Key::parse(k).map(|key| key.canonical()))
        .collect()
}
