//! One document connection: checks the user's access, joins the document's room, then
//! answers y-websocket's messages until the connection ends.

use super::room::{ConnId, Out, Room};
use super::wire::{self, Incoming};
use super::{close, DocKey};
use crate::auth::{self, Claims};
use crate::errors::{self, Error};
use crate::state::AppState;
use crate::ws::{self, close as ws_close};
use axum::extract::ws::{Message, WebSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A client that hears nothing for 30 s reconnects (y-websocket); the bridge speaks
/// at least this often.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Messages queued for one connection before it is closed as too slow.
const QUEUE: usize = 1024;
/// Malformed messages in a row before the connection is closed.
const MALFORMED_IN_A_ROW: u32 = 3;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Deepest nesting of arrays and objects in an awareness state.
const MAX_AWARENESS_DEPTH: usize = 16;

/// How deep arrays and objects nest in JSON text (strings skipped), without parsing it.
fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Serves one document connection. Refusals come after the upgrade, as `[2, 0, reason]`
/// and a close code the client can see (an HTTP status on the upgrade reaches it as a
/// bare failure, and y-websocket retries those forever).
pub async fn serve(
    mut socket: WebSocket,
    app: Arc<AppState>,
    claims: Result<Claims, Error>,
    key: Option<DocKey>,
) {
    // Counted by graceful shutdown, which waits for connections (and their edits) to go.
    let _alive = app.connections.clone();
    // Boxed, as every database call on the way: a future's size is that of its largest
    // await, and an idle connection should not carry them.
    match Box::pin(open(&app, claims, key)).await {
        Ok((room, claims, writer)) => {
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let outcome = Box::pin(run(&mut socket, &app, &room, id, claims, writer)).await;
            let left = room.leave(id).await;
            publish(&app, &room, left);
            app.docs.close_if_empty(&room).await;
            if let Some((code, reason)) = outcome {
                if !reason.is_empty() {
                    let _ = socket
                        .send(Message::Binary(wire::denied(&reason).into()))
                        .await;
                }
                if ws::close_with(&mut socket, code, &reason).await.is_ok()
                    && code != ws_close::GOING_AWAY
                {
                    ws::linger(&mut socket).await;
                }
            }
        }
        Err((code, reason)) => {
            let _ = socket
                .send(Message::Binary(wire::denied(&reason).into()))
                .await;
            let _ = ws::close_with(&mut socket, code, &reason).await;
            ws::linger(&mut socket).await;
        }
    }
}

/// The user's access, and the room, loaded.
async fn open(
    app: &Arc<AppState>,
    claims: Result<Claims, Error>,
    key: Option<DocKey>,
) -> Result<(Arc<Room>, Arc<Claims>, bool), (u16, String)> {
    let claims = claims.map_err(|e| {
        let code = if e.kind == errors::TOKEN_EXPIRED {
            ws_close::TOKEN_EXPIRED
        } else {
            close::UNAUTHORIZED
        };
        (code, e.body.message.clone())
    })?;
    let key = key.ok_or((
        close::NOT_VISIBLE,
        "not a document: /v1/yjs/<table>/<id>/<column>".to_string(),
    ))?;
    let not_visible = || (close::NOT_VISIBLE, "not found or not visible".to_string());
    let answer = match crate::db::doc_access(&app.pool, &claims, &key).await {
        Ok(answer) => answer,
        Err(e) if e.body.temporary => return Err((ws_close::UNAVAILABLE, e.body.message.clone())),
        Err(e) => return Err((close::NOT_VISIBLE, e.body.message.clone())),
    };
    let (id, limits) = (answer.id, answer.limits);
    let writer = match answer.access.as_deref() {
        Some("write") => true,
        Some("read") => false,
        _ => return Err(not_visible()),
    };
    // One room per row, however the path spelled its id.
    let key = DocKey { id, ..key };
    let room = app.docs.open(app, &claims, &key).await.map_err(|e| {
        if e.body.temporary {
            (ws_close::UNAVAILABLE, e.body.message.clone())
        } else {
            not_visible()
        }
    })?;
    if let Some(limits) = limits {
        room.set_limits(limits).await;
    }
    Ok((room, Arc::new(claims), writer))
}

async fn run(
    socket: &mut WebSocket,
    app: &Arc<AppState>,
    room: &Arc<Room>,
    id: ConnId,
    claims: Arc<Claims>,
    mut writer: bool,
) -> Option<(u16, String)> {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let first = match Box::pin(room.join(id, tx, queued.clone(), claims.clone())).await {
        Ok(first) => first,
        Err(e) => return Some((ws_close::INTERNAL, e)),
    };
    for message in first {
        socket.send(Message::Binary(message.into())).await.ok()?;
    }
    let config = &app.config;
    let mut bucket = ws::TokenBucket::new(config.yjs_messages_per_second);
    let mut shutdown = app.shutdown.clone();
    let mut access_changed = app.access_changed.subscribe();
    let mut malformed = 0;
    let mut last_sent = Instant::now();
    let mut next_check = Instant::now() + config.yjs_recheck;
    let expires = Instant::now()
        + match claims.exp {
            Some(exp) => Duration::from_secs(exp.saturating_sub(auth::now())),
            None => Duration::from_secs(365 * 24 * 3600),
        };
    loop {
        let wake = (last_sent + KEEPALIVE).min(next_check).min(expires);
        tokio::select! {
            frame = socket.recv() => {
                let message = match frame {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Text(_))) => return Some((1003, "binary messages only".into())),
                    Some(Ok(Message::Close(_))) | None => return None,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) => return Some((ws_close::TOO_BIG, format!("over yjs_max_message_bytes ({})", config.yjs_max_message_bytes))),
                };
                if !bucket.take() {
                    return Some((ws_close::RATE_LIMITED, "over yjs_messages_per_second".into()));
                }
                let reply = match wire::decode(&message) {
                    Err(e) => {
                        malformed += 1;
                        if malformed >= MALFORMED_IN_A_ROW {
                            return Some((close::BAD_MESSAGES, format!("malformed messages: {}", e.0)));
                        }
                        Some(wire::denied(&format!("invalid_update: {}", e.0)))
                    }
                    Ok(incoming) => {
                        malformed = 0;
                        Box::pin(handle(app, room, id, &mut writer, &claims, incoming)).await
                    }
                };
                if let Some(reply) = reply {
                    socket.send(Message::Binary(reply.into())).await.ok()?;
                    last_sent = Instant::now();
                }
            }
            out = rx.recv() => match out {
                Some(Out::Binary(bytes)) => {
                    queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                    socket.send(Message::Binary(bytes)).await.ok()?;
                    last_sent = Instant::now();
                }
                Some(Out::Close(code, reason)) => return Some((code, reason)),
                Some(Out::ReadOnly(reason)) => {
                    writer = false;
                    socket.send(Message::Binary(wire::denied(&reason).into())).await.ok()?;
                }
                None => return Some((ws_close::SLOW, "too slow to keep up".into())),
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= expires {
                    return Some((ws_close::TOKEN_EXPIRED, "token expired: reconnect with a fresh one".into()));
                }
                if now >= next_check {
                    next_check = now + config.yjs_recheck;
                    if let Ok(answer) = Box::pin(crate::db::doc_access(&app.pool, &claims, &room.key)).await {
                        let Some(access) = answer.access else {
                            return Some((close::NOT_VISIBLE, "not found or not visible".into()));
                        };
                        writer = access == "write";
                        if let Some(limits) = answer.limits {
                            room.set_limits(limits).await;
                        }
                    }
                }
                if now >= last_sent + KEEPALIVE {
                    socket.send(Message::Binary(wire::awareness([]).into())).await.ok()?;
                    last_sent = now;
                }
            }
            _ = access_changed.changed() => {
                // A membership changed: check soon, spread over 100 ms.
                next_check = next_check.min(Instant::now() + Duration::from_millis(id % 100));
            }
            _ = shutdown.changed() => return Some((ws_close::GOING_AWAY, String::new())),
        }
    }
}

/// Handles one message; returns the reply to send, if any.
async fn handle(
    app: &Arc<AppState>,
    room: &Arc<Room>,
    id: ConnId,
    writer: &mut bool,
    claims: &Claims,
    incoming: Incoming<'_>,
) -> Option<Vec<u8>> {
    match incoming {
        Incoming::SyncStep1(sv) => match room.diff(sv).await {
            Ok(update) => Some(wire::sync_step2(&update)),
            Err(e) => {
                tracing::error!(doc = ?room.key, error = %e, "document diff");
                Some(wire::denied("internal error"))
            }
        },
        Incoming::Update(update) => {
            if update == [0, 0] {
                return None;
            }
            if !*writer {
                return Some(wire::denied(
                    "read_only: you may read this document, not edit it",
                ));
            }
            if let Some(reason) = refused(app, room, claims, update.len()).await {
                *writer = false;
                return Some(wire::denied(&reason));
            }
            if room.accept(id, update).await {
                tokio::spawn(room.clone().flush(app.clone(), app.bridge_id.clone()));
            }
            None
        }
        Incoming::Awareness(entries) => {
            let limit = app.config.yjs_max_awareness_bytes;
            // JSON within the limits: every client parses the states it is sent, and one
            // that is not JSON, or nested too deep, would throw in all of them.
            let (kept, too_large): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| {
                e.state.len() <= limit
                    && json_depth(e.state) <= MAX_AWARENESS_DEPTH
                    && serde_json::from_str::<serde::de::IgnoredAny>(e.state).is_ok()
            });
            let (refused, accepted) = room.awareness(id, kept).await;
            publish(app, room, accepted);
            if !too_large.is_empty() {
                Some(wire::denied(&format!(
                    "awareness_invalid: states are JSON of at most {limit} bytes"
                )))
            } else if refused > 0 {
                Some(wire::denied(
                    "awareness: a client id another connection uses",
                ))
            } else {
                None
            }
        }
        Incoming::QueryAwareness => Some(room.all_awareness().await),
        Incoming::Ignored => None,
    }
}

/// Why Postgres would refuse to store an edit of `len` bytes, found before anyone is sent
/// it: peers that have an edit the database refused hold a document nobody else has. The
/// room's bound only ever overestimates (compaction shrinks the stored document), so an
/// edit over it is refused only once Postgres's stored size and limits say so too; if
/// Postgres cannot answer, the edit goes on and Postgres decides.
async fn refused(app: &Arc<AppState>, room: &Room, claims: &Claims, len: usize) -> Option<String> {
    room.over_limits(len).await?;
    let limits = crate::db::doc_access(&app.pool, claims, &room.key)
        .await
        .ok()?
        .limits?;
    room.set_limits(limits).await;
    room.over_limits(len).await
}

/// Checks again who may still read `room`'s document (its row changed): connections that
/// may not are closed, writers who may only read become readers.
pub async fn recheck(app: Arc<AppState>, room: Arc<Room>) {
    for (id, claims) in room.members().await {
        match crate::db::doc_access(&app.pool, &claims, &room.key)
            .await
            .map(|answer| answer.access)
        {
            Ok(None) => {
                room.tell(
                    id,
                    Out::Close(close::NOT_VISIBLE, "not found or not visible".into()),
                )
                .await
            }
            Ok(Some(access)) if access == "read" => {
                room.tell(
                    id,
                    Out::ReadOnly("read_only: you may no longer edit this document".into()),
                )
                .await
            }
            _ => {}
        }
    }
}

/// Loads `room`'s document again from Postgres, as one of its readers, and sends it to
/// everyone in the room: for edits the feed announced but compaction already folded away.
pub async fn reload(app: Arc<AppState>, room: Arc<Room>) {
    let Some((_, claims)) = room.members().await.into_iter().next() else {
        return;
    };
    match crate::db::doc_parts(&app.pool, &claims, &room.key).await {
        Ok(parts) => room.remote(parts).await,
        Err(e) => tracing::warn!(doc = ?room.key, error = %e.body.message, "reloading a document"),
    }
}

/// Sends this bridge's clients' awareness to the other bridges (the presence bus).
pub(super) fn publish(app: &AppState, room: &Room, entries: Vec<super::room::Accepted>) {
    let doc = room.key.bus_room();
    for e in entries {
        app.presence
            .publish_awareness(&doc, e.client, e.clock, &e.state);
    }
}

#[cfg(test)]
mod tests {
    use super::json_depth;

    #[test]
    fn depth_skips_strings() {
        assert_eq!(json_depth(r#"{"a": [1, {"b": "[[[\\"]]]"}]}"#), 3);
        assert_eq!(json_depth(&"[".repeat(200)), 200);
        assert_eq!(json_depth("null"), 0);
    }
}
