//! Who follows what: subscription keys to connections, and which connections each row of
//! a batch concerns (its record, and the scopes it left and entered).

use crate::auth::Identity;
use crate::keys::Key;
use crate::outbox::{Outbox, Outgoing};
use crate::protocol::{resync_frame, EventFrame};
use crate::token::{FeedId, Position, Tick};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

pub type ConnId = u64;

/// One row of the change log, as `rowsync.read_changes` returns it, with the resume
/// token of the position just after it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedChange {
    /// The log key: (xid, cursor).
    pub xid: i64,
    pub cursor: i64,
    pub token: String,
    pub table: Option<String>,
    pub row_id: Option<String>,
    pub version: Option<i64>,
    pub kind: String,
    pub old_scopes: Option<Map<String, Value>>,
    pub new_scopes: Option<Map<String, Value>>,
    pub topic: Option<String>,
    pub payload: Option<Value>,
    /// When the change was written, seconds since the epoch.
    pub at: f64,
}

impl FeedChange {
    /// Reads the row's columns from `first` on (crate::feed's column list), read from the
    /// batch (`since`, `upto`].
    pub fn from_row(
        row: &tokio_postgres::Row,
        first: usize,
        feed: FeedId,
        since: i64,
        upto: Tick,
    ) -> FeedChange {
        let scopes = |i: usize| {
            row.get::<_, Option<Value>>(first + i)
                .and_then(|v| v.as_object().cloned())
        };
        let (xid, cursor) = (row.get(first), row.get(first + 1));
        let position = Position {
            lo: since,
            hi: upto,
            after: Some((xid, cursor)),
        };
        FeedChange {
            xid,
            cursor,
            token: crate::token::encode(feed, &position),
            table: row.get(first + 2),
            row_id: row.get(first + 3),
            version: row.get(first + 4),
            kind: row.get(first + 5),
            old_scopes: scopes(6),
            new_scopes: scopes(7),
            topic: row.get(first + 8),
            payload: row.get(first + 9),
            at: row.get(first + 10),
        }
    }

    /// The router key of an event's topic: `user:<sub>` is filed apart from record keys.
    pub fn router_topic(&self) -> Option<String> {
        let topic = self.topic.as_deref()?;
        Some(match topic.strip_prefix("user:") {
            Some(sub) => Key::user_topic(sub),
            None => topic.to_string(),
        })
    }

    /// The keys this change concerns: its record, and every scope it was or is in.
    pub fn keys(&self) -> Vec<String> {
        self.key_parts().into_iter().map(|(key, _)| key).collect()
    }

    /// The keys this change concerns, each with its scope's (column, value), `None` for
    /// the record's key and the table's.
    pub fn key_parts(&self) -> Vec<(String, Option<(String, String)>)> {
        let mut keys = Vec::new();
        let Some(table) = &self.table else {
            return keys;
        };
        if let Some(id) = &self.row_id {
            keys.push((Key::record(table, id), None));
            keys.push((table.clone(), None));
        }
        for scopes in [&self.old_scopes, &self.new_scopes].into_iter().flatten() {
            for (column, value) in scopes {
                let Some(value) = scope_value(value) else {
                    continue;
                };
                let key = Key::scope(table, column, &value);
                if !keys.iter().any(|(k, _)| *k == key) {
                    keys.push((key, Some((column.clone(), value))));
                }
            }
        }
        keys
    }
}

/// A connection as the router knows it: where to queue its frames, and who its policies
/// see (which changes when a refreshed token's claims do).
pub struct Subscriber {
    pub outbox: Arc<Outbox>,
    identity: Mutex<Arc<Identity>>,
}

impl Subscriber {
    pub fn identity(&self) -> Arc<Identity> {
        match self.identity.lock() {
            Ok(identity) => identity.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The rows of a batch one connection follows: for each, the row's index and the
/// indexes of the row's keys the connection matched.
pub struct Interest {
    pub subscriber: Arc<Subscriber>,
    pub rows: Matched,
}

/// Rows of a batch, each with the indexes of its keys that matched.
pub type Matched = Vec<(usize, Vec<usize>)>;

/// A row's fingerprint: 64 bits of SipHash under a key drawn at start, so that nobody
/// can pick ids whose fingerprints collide (a collision could send one row's `remove`
/// to a holder of the other).
/// UUIDs count in the case the feed prints them, lower.
pub fn record_hash(table: &str, id: &str) -> u64 {
    static KEY: LazyLock<RandomState> = LazyLock::new(RandomState::new);
    if rowsync_core::is_uuid(id) {
        return KEY.hash_one((table, id.to_ascii_lowercase()));
    }
    KEY.hash_one((table, id))
}

/// A scope column's value as keys spell it; `None` for NULL, which is in no scope.
pub fn scope_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[derive(Default)]
pub struct Router {
    inner: RwLock<Inner>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<ConnId, Arc<Subscriber>>,
    /// Each key's subscribers, at hand: routing a change to 10k subscribers should not
    /// look each one up again.
    by_key: HashMap<String, HashMap<ConnId, Arc<Subscriber>>>,
}

impl Router {
    pub fn connect(&self, outbox: Arc<Outbox>, identity: Identity) -> ConnId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let subscriber = Arc::new(Subscriber {
            outbox,
            identity: Mutex::new(Arc::new(identity)),
        });
        if let Ok(mut inner) = self.inner.write() {
            inner.conns.insert(id, subscriber);
        }
        id
    }

    pub fn subscriber(&self, id: ConnId) -> Option<Arc<Subscriber>> {
        self.inner.read().ok()?.conns.get(&id).cloned()
    }

    /// A refreshed token changed the connection's claims.
    pub fn set_identity(&self, id: ConnId, identity: Identity) {
        let Ok(inner) = self.inner.read() else {
            return;
        };
        if let Some(subscriber) = inner.conns.get(&id) {
            if let Ok(mut current) = subscriber.identity.lock() {
                *current = Arc::new(identity);
            }
        }
    }

    pub fn disconnect<'a>(&self, id: ConnId, keys: impl IntoIterator<Item = &'a String>) {
        if let Ok(mut inner) = self.inner.write() {
            inner.conns.remove(&id);
            for key in keys {
                inner.remove(id, key);
            }
        }
    }

    pub fn subscribe(&self, id: ConnId, key: &str) {
        if let Ok(mut inner) = self.inner.write() {
            if let Some(subscriber) = inner.conns.get(&id).cloned() {
                inner
                    .by_key
                    .entry(key.to_string())
                    .or_default()
                    .insert(id, subscriber);
            }
        }
    }

    pub fn unsubscribe(&self, id: ConnId, key: &str) {
        if let Ok(mut inner) = self.inner.write() {
            inner.remove(id, key);
        }
    }

    /// Queues a server event for the connections following its topic (its router key),
    /// and returns them.
    pub fn route_event(&self, topic: &str, frame: &Arc<EventFrame>) -> Vec<ConnId> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let Some(conns) = inner.by_key.get(topic) else {
            return Vec::new();
        };
        for subscriber in conns.values() {
            subscriber.outbox.push(Outgoing::Event(frame.clone()));
        }
        conns.keys().copied().collect()
    }

    /// The connections that follow any of the rows' keys (`keys[row]`), with what each
    /// matched. Nothing is queued: what a connection receives depends on what its
    /// identity may see (crate::feed::visibility).
    pub fn interests(&self, keys: &[Vec<String>]) -> Vec<Interest> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let mut by_conn: HashMap<ConnId, Interest> = HashMap::new();
        for (row, row_keys) in keys.iter().enumerate() {
            for (k, key) in row_keys.iter().enumerate() {
                let Some(conns) = inner.by_key.get(key) else {
                    continue;
                };
                for (conn, subscriber) in conns {
                    let interest = by_conn.entry(*conn).or_insert_with(|| Interest {
                        subscriber: subscriber.clone(),
                        rows: Vec::new(),
                    });
                    match interest.rows.last_mut() {
                        Some((last, matched)) if *last == row => matched.push(k),
                        _ => interest.rows.push((row, vec![k])),
                    }
                }
            }
        }
        by_conn.into_values().collect()
    }

    /// Tells every subscriber of a key matching `matches` to read its data again.
    pub fn resync_where(&self, matches: impl Fn(&str) -> bool, reason: &str) -> usize {
        let Ok(inner) = self.inner.read() else {
            return 0;
        };
        let mut per_conn: HashMap<ConnId, (&Outbox, Vec<&String>)> = HashMap::new();
        // Keys the router files internally (`@user:…`) are not the client's to refetch.
        for (key, conns) in &inner.by_key {
            if !key.starts_with('@') && matches(key) {
                for (conn, subscriber) in conns {
                    per_conn
                        .entry(*conn)
                        .or_insert((&subscriber.outbox, Vec::new()))
                        .1
                        .push(key);
                }
            }
        }
        for (outbox, keys) in per_conn.values() {
            outbox.push(Outgoing::Text(resync_frame(keys, reason).into()));
        }
        per_conn.len()
    }

    pub fn counts(&self) -> (usize, usize) {
        self.inner
            .read()
            .map(|i| (i.conns.len(), i.by_key.values().map(HashMap::len).sum()))
            .unwrap_or((0, 0))
    }
}

impl Inner {
    fn remove(&mut self, id: ConnId, key: &str) {
        if let Some(conns) = self.by_key.get_mut(key) {
            conns.remove(&id);
            if conns.is_empty() {
                self.by_key.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn moved_task() -> FeedChange {
        FeedChange {
            xid: 700,
            cursor: 7,
            token: "t7".into(),
            table: Some("tasks".into()),
            row_id: Some("t1".into()),
            version: Some(3),
            kind: "update".into(),
            old_scopes: json!({"board_id": "b1"}).as_object().cloned(),
            new_scopes: json!({"board_id": "b2"}).as_object().cloned(),
            topic: None,
            payload: None,
            at: 0.0,
        }
    }

    fn identity(sub: &str) -> Identity {
        Identity {
            role: "app_user".into(),
            claims: json!({"sub": sub}).to_string(),
        }
    }

    #[test]
    fn a_move_concerns_both_scopes_and_the_record_once_per_connection() {
        let router = Router::default();
        let outbox = || Arc::new(Outbox::new(10));
        let (ida, idb, idc) = (
            router.connect(outbox(), identity("a")),
            router.connect(outbox(), identity("b")),
            router.connect(outbox(), identity("c")),
        );
        router.subscribe(ida, "tasks?board_id=b1");
        router.subscribe(ida, "tasks:t1");
        router.subscribe(idb, "tasks?board_id=b2");
        router.subscribe(idc, "tasks?board_id=b3");
        let keys = moved_task().keys();
        assert_eq!(
            keys,
            [
                "tasks:t1",
                "tasks",
                "tasks?board_id=b1",
                "tasks?board_id=b2"
            ]
        );
        let mut interests = router.interests(&[keys]);
        interests.sort_by_key(|i| i.subscriber.identity().claims.clone());
        let matched: Vec<(String, Matched)> = interests
            .into_iter()
            .map(|i| (i.subscriber.identity().claims.clone(), i.rows))
            .collect();
        assert_eq!(
            matched,
            [
                (json!({"sub": "a"}).to_string(), vec![(0, vec![0, 2])]),
                (json!({"sub": "b"}).to_string(), vec![(0, vec![3])]),
            ]
        );
        router.disconnect(
            ida,
            &["tasks?board_id=b1".to_string(), "tasks:t1".to_string()],
        );
        assert_eq!(router.counts(), (2, 2));
    }

    #[test]
    fn fingerprints_tell_rows_apart() {
        assert_eq!(record_hash("tasks", "t1"), record_hash("tasks", "t1"));
        assert_ne!(record_hash("tasks", "t1"), record_hash("tasks", "t2"));
        assert_ne!(record_hash("tasks", "t1"), record_hash("task", "st1"));
        let id = "00000000-0000-4000-8000-0000000000AB";
        assert_eq!(
            record_hash("tasks", id),
            record_hash("tasks", &id.to_ascii_lowercase())
        );
    }
}
