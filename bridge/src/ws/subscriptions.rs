//! A connection's subscriptions: checking keys as the user (at subscribe and again
//! later), catching up from a resume token, and telling a resumed client what it holds.

use crate::db;
use crate::errors::{self, Error};
use crate::feed::change::{record_hash, FeedChange};
use crate::feed::visibility;
use crate::keys::Key;
use crate::metrics::Metrics;
use crate::outbox::Outgoing;
use crate::protocol::{members_digest, Ack, ChangesFrame, ServerFrame};
use crate::router::Interest;
use crate::token::{encode, FeedId, Position, Tick, TokenError};
use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

use super::{gone, send_text, Conn};

impl Conn {
    /// Checks that the user may follow each key it has not been authorized for yet, and
    /// remembers those it may; the first it may not fails the request.
    pub(super) async fn authorize(&mut self, keys: &[String]) -> Result<(), Error> {
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
    pub(super) async fn visible(&self, keys: &[String]) -> Result<Vec<bool>, Error> {
        let mut visible = vec![false; keys.len()];
        let mut records = Vec::new();
        for (i, text) in keys.iter().enumerate() {
            let key = Key::parse(text)?;
            match key.rows() {
                Some((table, scope)) => {
                    visible[i] =
                        db::may_follow(&self.state.pool, &self.claims, table, scope).await?;
                }
                None => {
                    if let Key::Record { table, id } = &key {
                        records.push((i, json!({"table": table, "id": id})));
                    }
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
    pub(super) async fn recheck(&mut self) {
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
        let frame = ServerFrame::Revoked { keys: revoked };
        self.outbox.push(Outgoing::Text(frame.text(None).into()));
    }

    pub(super) async fn subscribe(
        &mut self,
        socket: &mut WebSocket,
        keys: Vec<String>,
        cursor: Option<String>,
        held: HashMap<String, String>,
    ) -> Result<ServerFrame, Error> {
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
        Ok(ServerFrame::Ack(Ack {
            keys: Some(keys),
            cursor: Some(cursor),
            ..Ack::default()
        }))
    }

    /// After a resume: learns which rows the client holds under `keys` (a new bridge
    /// knows nothing of it), and where the client's digest of a scope differs from what
    /// the user may see in it now, sends the complete list (`members`). A forged digest
    /// gains nothing: the list holds only rows the user may read anyway.
    pub(super) async fn reconcile(
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
                        send_text(
                            socket,
                            ServerFrame::Members {
                                key: text.clone(),
                                rows: members.clone(),
                            }
                            .text(None),
                        )
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
    pub(super) async fn catch_up(
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
            send_text(socket, ServerFrame::resync(keys, reason).text(None))
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
    pub(super) async fn replay_page(
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
            send_text(socket, ServerFrame::resync(&keys, "not_checked").text(None))
                .await
                .map_err(gone)?;
        }
        let mut changes = ChangesFrame::new();
        for (change, row) in relevant.iter().zip(newest) {
            match change.kind.as_str() {
                "event" => {
                    if let Some(event) = change.event_frame() {
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
                        .feed(Message::Text(
                            ServerFrame::resync(&emptied, "truncate").text(None).into(),
                        ))
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
}

/// What a catch-up sent: log keys, each with the subscription keys its frame named. A
/// queued frame of the same change is dropped only when the catch-up's frame named all
/// its keys: one queued for a key the connection already followed still goes out.
pub(super) struct Sent(HashMap<(i64, i64), Vec<String>>);

impl Sent {
    pub(super) fn new() -> Sent {
        Sent(HashMap::new())
    }

    pub(super) fn insert(&mut self, log_key: (i64, i64), keys: &[String]) {
        self.0.insert(log_key, keys.to_vec());
    }

    pub(super) fn covers(&self, log_key: (i64, i64), keys: &[String]) -> bool {
        self.0
            .get(&log_key)
            .is_some_and(|sent| keys.iter().all(|k| sent.contains(k)))
    }
}
