//! One open document on this bridge: its state as one merged Yjs update plus the updates
//! accepted since, the connections editing it, their awareness, and the updates waiting
//! to be appended to Postgres. No Yjs document is built: yrs only merges and diffs bytes
//! that rowsync-core's scanner already checked.

use super::wire::{self, AwarenessEntry};
use super::DocKey;
use crate::auth::Claims;
use crate::db::DocLimits;
use crate::state::AppState;
use axum::body::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Mutex, OnceCell};

/// What a connection task is told to do.
#[derive(Debug)]
pub enum Out {
    /// Shared by every member it goes to: cloning it counts a reference.
    Binary(Bytes),
    /// Close with this code and reason (after sending `[2, 0, reason]`).
    Close(u16, String),
    /// Another writer may no longer edit: later edits are refused.
    ReadOnly(String),
}

pub type ConnId = u64;

struct Member {
    tx: mpsc::Sender<Out>,
    /// Bytes queued for it and not yet sent (its connection counts them down).
    queued: Arc<AtomicUsize>,
    claims: Arc<Claims>,
    /// How many Yjs client ids this connection set (a tab has one; a few allow reloads).
    clients: usize,
}

/// Updates one writer made, waiting for the next append.
struct Queued {
    claims: Arc<Claims>,
    conns: Vec<ConnId>,
    updates: Vec<Vec<u8>>,
}

/// One client's awareness: its clock, its state as JSON text, and, for a client on another
/// bridge, when it expires unless renewed.
struct Aware {
    clock: u64,
    state: String,
    expires: Option<Instant>,
}

/// An awareness entry this bridge accepted from one of its clients: for the other bridges.
pub struct Accepted {
    pub client: u64,
    pub clock: u64,
    pub state: String,
}

#[derive(Default)]
struct State {
    /// The document: everything merged so far, plus what was accepted since.
    merged: Vec<u8>,
    pending: Vec<Vec<u8>>,
    members: HashMap<ConnId, Member>,
    /// Awareness by Yjs client id.
    awareness: HashMap<u64, Aware>,
    /// Which connection set each local client id: kept until that connection has left,
    /// even if it was dropped as too slow, so that nobody else can take the id over.
    owners: HashMap<u64, ConnId>,
    /// By identity (role and claims): one append per writer per flush.
    queue: Vec<Queued>,
    flushing: bool,
    /// What appends are held to, as Postgres last said, and the bytes of the edits this
    /// room has seen since (its own and other bridges'): an upper bound of the stored size.
    limits: Option<DocLimits>,
    seen_since: i64,
}

pub struct Room {
    pub key: DocKey,
    /// Most bytes queued for one connection (yjs_send_queue_bytes).
    queue_bytes: usize,
    state: Mutex<State>,
    /// Set once the stored document is in: nobody gets a step 1 or 2 before, or the
    /// client would take an empty document for the real one.
    pub loaded: OnceCell<()>,
    /// Connections that opened the room and have not left: it closes at zero.
    users: AtomicUsize,
}

/// A merge or diff that failed on bytes the scanner accepted: yrs and Yjs disagree.
fn yrs_error(e: impl std::fmt::Display) -> String {
    format!("yrs could not merge the document: {e}")
}

impl Room {
    /// An empty room. It is open to the feed's edits from the start, so that an edit
    /// committed while the stored document loads is not missed.
    pub fn new(key: DocKey, queue_bytes: usize) -> Room {
        Room {
            key,
            queue_bytes,
            // The empty update: nothing stored yet.
            state: Mutex::new(State {
                merged: vec![0, 0],
                ..State::default()
            }),
            loaded: OnceCell::new(),
            users: AtomicUsize::new(0),
        }
    }

    /// Adds the stored parts (snapshot and log): merging them with what the feed brought
    /// meanwhile loses nothing and doubles nothing.
    pub async fn fill(&self, parts: Vec<Vec<u8>>) {
        self.state.lock().await.pending.extend(parts);
    }

    pub fn enter(&self) {
        self.users.fetch_add(1, Ordering::SeqCst);
    }

    /// For a connection that entered but never joined (its load failed).
    pub fn leave_unjoined(&self) {
        self.users.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn occupied(&self) -> bool {
        self.users.load(Ordering::SeqCst) > 0
    }

    /// Folds the pending updates into the merged state (kept off the request path: only
    /// a joiner's step 1 needs it).
    async fn settle(&self, state: &mut State) -> Result<(), String> {
        if state.pending.is_empty() {
            return Ok(());
        }
        let mut parts = vec![state.merged.clone()];
        parts.extend(state.pending.iter().cloned());
        // Kept until the merge succeeds: a failed one leaves the room as it was.
        let merged =
            off_thread_if_large(parts.iter().map(Vec::len).sum(), move || merge(&parts)).await?;
        state.merged = merged;
        state.pending.clear();
        Ok(())
    }

    /// Adds a connection; returns what to send it first: the server's step 1 and the
    /// awareness of everyone here.
    pub async fn join(
        &self,
        id: ConnId,
        tx: mpsc::Sender<Out>,
        queued: Arc<AtomicUsize>,
        claims: Arc<Claims>,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut state = self.state.lock().await;
        self.settle(&mut state).await?;
        let sv = yrs::encode_state_vector_from_update_v1(&state.merged).map_err(yrs_error)?;
        state.members.insert(
            id,
            Member {
                tx,
                queued,
                claims,
                clients: 0,
            },
        );
        let mut first = vec![wire::sync_step1(&sv)];
        if !state.awareness.is_empty() {
            first.push(awareness_of(&state.awareness));
        }
        Ok(first)
    }

    /// What a client lacks, given its state vector (its step 1).
    pub async fn diff(&self, sv: &[u8]) -> Result<Vec<u8>, String> {
        let mut state = self.state.lock().await;
        self.settle(&mut state).await?;
        let merged = state.merged.clone();
        drop(state);
        // A client with nothing (an empty state vector) lacks everything: the merged
        // state as it is, with no diff to compute (a join storm is many of these).
        if sv == [0] {
            return Ok(merged);
        }
        let sv = sv.to_vec();
        off_thread_if_large(merged.len(), move || {
            yrs::diff_updates_v1(&merged, &sv).map_err(yrs_error)
        })
        .await
    }

    /// Postgres's latest word on the document's size and limits. The edits the room queued
    /// and has not stored yet still count.
    pub async fn set_limits(&self, limits: DocLimits) {
        let mut state = self.state.lock().await;
        let queued: usize = state
            .queue
            .iter()
            .flat_map(|q| &q.updates)
            .map(Vec::len)
            .sum();
        state.limits = Some(limits);
        state.seen_since = queued as i64;
    }

    /// Why an edit of `len` bytes would not be stored, by the room's upper bound of the
    /// document's size (`None`: it would be). Postgres is the judge: over the bound, ask it
    /// for the stored size (`set_limits`) before refusing.
    pub async fn over_limits(&self, len: usize) -> Option<String> {
        let state = self.state.lock().await;
        let limits = state.limits?;
        let len = len as i64;
        if len > limits.max_update_bytes {
            return Some(format!(
                "update_too_large: an update of {len} bytes, over doc_max_update_bytes ({})",
                limits.max_update_bytes
            ));
        }
        let bound = limits.stored_bytes + state.seen_since + len;
        (bound > limits.max_bytes).then(|| {
            format!(
                "document_too_large: the document would be {bound} bytes, over its max_bytes ({})",
                limits.max_bytes
            )
        })
    }

    /// An edit from connection `from`: kept, relayed to the others, queued for Postgres.
    /// Returns whether a flush must be started.
    pub async fn accept(&self, from: ConnId, update: &[u8]) -> bool {
        let mut state = self.state.lock().await;
        state.seen_since += update.len() as i64;
        state.pending.push(update.to_vec());
        deliver(
            self.queue_bytes,
            &mut state.members,
            &wire::update(update),
            Some(from),
        );
        let Some(claims) = state.members.get(&from).map(|m| m.claims.clone()) else {
            return false;
        };
        match state
            .queue
            .iter_mut()
            .find(|q| q.claims.role == claims.role && q.claims.raw == claims.raw)
        {
            Some(queued) => {
                queued.updates.push(update.to_vec());
                if !queued.conns.contains(&from) {
                    queued.conns.push(from);
                }
            }
            None => state.queue.push(Queued {
                claims,
                conns: vec![from],
                updates: vec![update.to_vec()],
            }),
        }
        !std::mem::replace(&mut state.flushing, true)
    }

    /// Edits another bridge appended (read from the feed): kept and sent to everyone here.
    pub async fn remote(&self, updates: Vec<Vec<u8>>) {
        let mut state = self.state.lock().await;
        for update in updates {
            state.seen_since += update.len() as i64;
            deliver(
                self.queue_bytes,
                &mut state.members,
                &wire::update(&update),
                None,
            );
            state.pending.push(update);
        }
    }

    /// Awareness entries from connection `from`, already size-checked. An entry for a
    /// client id another connection (or another bridge) set is dropped. Relayed to
    /// everyone, the sender too (y-websocket's clients expect their own back). Returns how
    /// many were refused, and those kept, for the other bridges.
    pub async fn awareness(
        &self,
        from: ConnId,
        entries: Vec<AwarenessEntry<'_>>,
    ) -> (usize, Vec<Accepted>) {
        let mut state = self.state.lock().await;
        let mut kept = Vec::new();
        let mut refused = entries.len().saturating_sub(MAX_ENTRIES);
        for entry in entries.into_iter().take(MAX_ENTRIES) {
            let owner = state.owners.get(&entry.client).copied();
            let remote = state
                .awareness
                .get(&entry.client)
                .is_some_and(|a| a.expires.is_some());
            if owner.is_some_and(|o| o != from) || (owner.is_none() && remote) {
                refused += 1;
                continue;
            }
            if owner.is_none() {
                match state.members.get_mut(&from) {
                    Some(member) if member.clients < MAX_CLIENTS => member.clients += 1,
                    _ => {
                        refused += 1;
                        continue;
                    }
                }
                state.owners.insert(entry.client, from);
            }
            let newer = state
                .awareness
                .get(&entry.client)
                .is_none_or(|a| entry.clock >= a.clock);
            if newer {
                state.awareness.insert(
                    entry.client,
                    Aware {
                        clock: entry.clock,
                        state: entry.state.to_string(),
                        expires: None,
                    },
                );
                kept.push(entry);
            }
        }
        let accepted = kept
            .iter()
            .map(|e| Accepted {
                client: e.client,
                clock: e.clock,
                state: e.state.to_string(),
            })
            .collect();
        if !kept.is_empty() {
            deliver(
                self.queue_bytes,
                &mut state.members,
                &wire::awareness(kept),
                None,
            );
        }
        (refused, accepted)
    }

    /// A client's awareness from another bridge: kept until `ttl` passes without a renewal
    /// (a `null` state removes it), and sent to everyone here.
    pub async fn remote_awareness(&self, client: u64, clock: u64, json: &str, ttl: Duration) {
        let mut state = self.state.lock().await;
        if state.owners.contains_key(&client) {
            return;
        }
        if state
            .awareness
            .get(&client)
            .is_some_and(|a| clock < a.clock)
        {
            return;
        }
        if json == "null" {
            state.awareness.remove(&client);
        } else {
            state.awareness.insert(
                client,
                Aware {
                    clock,
                    state: json.to_string(),
                    expires: Some(Instant::now() + ttl),
                },
            );
        }
        let message = wire::awareness([AwarenessEntry {
            client,
            clock,
            state: json,
        }]);
        deliver(self.queue_bytes, &mut state.members, &message, None);
    }

    /// Drops the remote clients not renewed in time (their bridge went away), telling
    /// everyone here; returns this bridge's own clients, to announce again.
    pub async fn expire_and_list(&self) -> Vec<Accepted> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let expired: Vec<(u64, u64)> = state
            .awareness
            .iter()
            .filter(|(_, a)| a.expires.is_some_and(|e| e < now))
            .map(|(c, a)| (*c, a.clock + 1))
            .collect();
        for (client, _) in &expired {
            state.awareness.remove(client);
        }
        announce_gone(self.queue_bytes, &mut state.members, &expired);
        state
            .awareness
            .iter()
            .filter(|(_, a)| a.expires.is_none())
            .map(|(&client, a)| Accepted {
                client,
                clock: a.clock,
                state: a.state.clone(),
            })
            .collect()
    }

    /// Everyone's awareness, for a client that asks.
    pub async fn all_awareness(&self) -> Vec<u8> {
        awareness_of(&self.state.lock().await.awareness)
    }

    /// Removes a connection: its awareness goes (a `null` state, one clock on); returns
    /// those removals, for the other bridges.
    pub async fn leave(&self, id: ConnId) -> Vec<Accepted> {
        self.users.fetch_sub(1, Ordering::SeqCst);
        let mut state = self.state.lock().await;
        state.members.remove(&id);
        let clients: Vec<u64> = state
            .owners
            .iter()
            .filter(|(_, owner)| **owner == id)
            .map(|(client, _)| *client)
            .collect();
        let mut gone = Vec::new();
        for client in clients {
            state.owners.remove(&client);
            if let Some(aware) = state.awareness.remove(&client) {
                gone.push((client, aware.clock + 1));
            }
        }
        announce_gone(self.queue_bytes, &mut state.members, &gone);
        gone.into_iter()
            .map(|(client, clock)| Accepted {
                client,
                clock,
                state: "null".into(),
            })
            .collect()
    }

    /// The connections here, with their users: for re-checking access.
    pub async fn members(&self) -> Vec<(ConnId, Arc<Claims>)> {
        let state = self.state.lock().await;
        state
            .members
            .iter()
            .map(|(id, m)| (*id, m.claims.clone()))
            .collect()
    }

    /// Tells connection `id` something (a close, a downgrade).
    pub async fn tell(&self, id: ConnId, out: Out) {
        let mut state = self.state.lock().await;
        if state
            .members
            .get(&id)
            .is_some_and(|m| m.tx.try_send(out).is_err())
        {
            // Its queue is full: dropped, it closes as too slow.
            state.members.remove(&id);
        }
    }

    /// Appends the queued edits to Postgres, one `doc_append` per writer, every
    /// `yjs_flush_ms`, until nothing is queued: typing never costs a transaction per
    /// keystroke, and a slow database makes batches bigger instead of queueing
    /// transactions. A writer whose append is refused loses write access here.
    pub async fn flush(self: Arc<Self>, app: Arc<AppState>, origin_prefix: String) {
        loop {
            tokio::time::sleep(app.config.yjs_flush).await;
            let batch = {
                let mut state = self.state.lock().await;
                if state.queue.is_empty() {
                    state.flushing = false;
                    return;
                }
                std::mem::take(&mut state.queue)
            };
            let mut retry = Vec::new();
            for queued in batch {
                let origin = format!("{origin_prefix}/{}", queued.conns[0]);
                let appended = crate::db::doc_append(
                    &app.pool,
                    &queued.claims,
                    &self.key,
                    &queued.updates,
                    &origin,
                )
                .await;
                let error = match appended {
                    Ok(cursor) => {
                        cursor.into_iter().for_each(|c| app.docs.appended(c));
                        continue;
                    }
                    Err(error) => error,
                };
                if error.body.temporary {
                    // The database is away: the edits wait (their clients hold them too).
                    tracing::warn!(doc = ?self.key, code = error.body.code, "document append will be retried");
                    retry.push(queued);
                    continue;
                }
                let out = |reason: &str| match error.body.code {
                    "permission_denied" => Out::ReadOnly(reason.to_string()),
                    "not_found" => Out::Close(super::close::NOT_VISIBLE, reason.to_string()),
                    // Sent again, it would be refused again: the writer stops writing.
                    "document_too_large" | "update_too_large" => Out::ReadOnly(reason.to_string()),
                    _ => Out::Close(super::close::NOT_STORED, reason.to_string()),
                };
                tracing::info!(doc = ?self.key, code = error.body.code, "document append refused");
                for conn in &queued.conns {
                    self.tell(*conn, out(&error.body.message)).await;
                }
            }
            if !retry.is_empty() {
                let mut state = self.state.lock().await;
                retry.append(&mut state.queue);
                state.queue = retry;
            }
        }
    }
}

/// Tells every member that the awareness of these (client, clock) pairs is gone: a
/// `null` state at the next clock, as y-protocols removes one.
fn announce_gone(limit: usize, members: &mut HashMap<ConnId, Member>, gone: &[(u64, u64)]) {
    if gone.is_empty() {
        return;
    }
    let message = wire::awareness(gone.iter().map(|&(client, clock)| AwarenessEntry {
        client,
        clock,
        state: "null",
    }));
    deliver(limit, members, &message, None);
}

/// Queues `message` for every member but `except`. A member whose queue is full (in
/// messages, or past `limit` bytes with something already waiting) is dropped from the
/// room: its connection then closes (4101) and the client, on reconnecting, syncs by state
/// vector; nothing is skipped silently, and a client that stops reading holds at most
/// `limit` bytes of the bridge's memory.
fn deliver(
    limit: usize,
    members: &mut HashMap<ConnId, Member>,
    message: &[u8],
    except: Option<ConnId>,
) {
    let message = Bytes::copy_from_slice(message);
    members.retain(|id, member| {
        if Some(*id) == except {
            return true;
        }
        let queued = member.queued.load(Ordering::Relaxed);
        if queued > 0 && queued + message.len() > limit {
            return false;
        }
        member.queued.fetch_add(message.len(), Ordering::Relaxed);
        member.tx.try_send(Out::Binary(message.clone())).is_ok()
    });
}

fn awareness_of(all: &HashMap<u64, Aware>) -> Vec<u8> {
    wire::awareness(all.iter().map(|(&client, a)| AwarenessEntry {
        client,
        clock: a.clock,
        state: &a.state,
    }))
}

/// Awareness entries one message may carry (a client sends its own, one or two).
const MAX_ENTRIES: usize = 16;
/// Yjs client ids one connection may set (one per document a tab opens; a few for reloads).
const MAX_CLIENTS: usize = 4;

/// Documents larger than this are merged and diffed on a blocking thread; smaller ones take
/// microseconds, and a thread (its stack, its allocator arena) per join would cost more.
const INLINE_BYTES: usize = 64 * 1024;

async fn off_thread_if_large<T: Send + 'static>(
    bytes: usize,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    if bytes <= INLINE_BYTES {
        return work();
    }
    tokio::task::spawn_blocking(work).await.map_err(yrs_error)?
}

/// One update from many, structurally (yrs merges without integrating).
pub(super) fn merge(parts: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let parts: Vec<&[u8]> = parts
        .iter()
        .map(Vec::as_slice)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Ok(vec![0, 0]);
    }
    yrs::merge_updates_v1(parts).map_err(yrs_error)
}
