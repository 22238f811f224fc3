//! Who follows what: subscription keys to connections, and the routing of each feed
//! change to the subscribers of its record and of the scopes it left and entered.

use crate::keys::Key;
use crate::outbox::{Outbox, Outgoing};
use crate::protocol::{resync_frame, ChangeFrame, EventFrame};
use crate::token::{FeedId, Position, Tick};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

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
        let mut keys = Vec::new();
        let Some(table) = &self.table else {
            return keys;
        };
        if let Some(id) = &self.row_id {
            keys.push(Key::record(table, id));
        }
        for scopes in [&self.old_scopes, &self.new_scopes].into_iter().flatten() {
            for (column, value) in scopes {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                let key = Key::scope(table, column, &value);
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        keys
    }
}

#[derive(Default)]
pub struct Router {
    inner: RwLock<Inner>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<ConnId, Arc<Outbox>>,
    /// Each key's subscribers, with their queues at hand: routing a change to 10k
    /// subscribers should not look each one up again.
    by_key: HashMap<String, HashMap<ConnId, Arc<Outbox>>>,
}

impl Router {
    pub fn connect(&self, outbox: Arc<Outbox>) -> ConnId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut inner) = self.inner.write() {
            inner.conns.insert(id, outbox);
        }
        id
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
            if let Some(outbox) = inner.conns.get(&id).cloned() {
                inner
                    .by_key
                    .entry(key.to_string())
                    .or_default()
                    .insert(id, outbox);
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
        for outbox in conns.values() {
            outbox.push(Outgoing::Event(frame.clone()));
        }
        conns.keys().copied().collect()
    }

    /// Queues `change` for every subscriber of its keys, one frame per connection.
    /// Returns how many frames were queued.
    pub fn route(&self, change: &FeedChange) -> usize {
        let Ok(inner) = self.inner.read() else {
            return 0;
        };
        if change.kind == "truncate" {
            drop(inner);
            let Some(table) = &change.table else {
                return 0;
            };
            return self.resync_where(|key| Key::of_table(key, table), "truncate");
        }
        let keys = change.keys();
        let hits: Vec<(usize, &HashMap<ConnId, Arc<Outbox>>)> = keys
            .iter()
            .enumerate()
            .filter_map(|(i, key)| inner.by_key.get(key).map(|conns| (i, conns)))
            .collect();
        // Every connection that matched the same keys gets the same frame: built and
        // serialised once, shared behind an Arc.
        let frame = |indexes: &[usize]| {
            let matched = indexes.iter().map(|&i| keys[i].clone()).collect();
            Arc::new(ChangeFrame::new(change, matched).serialised())
        };
        let mut queued = 0;
        let mut push = |outbox: &Outbox, frame: &Arc<ChangeFrame>| {
            outbox.push(Outgoing::Change(frame.clone()));
            queued += 1;
        };
        match hits.as_slice() {
            [] => {}
            // The common case, one key (a record, or a scope the row stayed in): no
            // grouping needed.
            [(i, conns)] => {
                let frame = frame(&[*i]);
                for outbox in conns.values() {
                    push(outbox, &frame);
                }
            }
            _ => {
                let mut matched: HashMap<ConnId, (&Outbox, Vec<usize>)> = HashMap::new();
                for (i, conns) in &hits {
                    for (conn, outbox) in *conns {
                        matched
                            .entry(*conn)
                            .or_insert((outbox, Vec::new()))
                            .1
                            .push(*i);
                    }
                }
                let mut frames: HashMap<Vec<usize>, Arc<ChangeFrame>> = HashMap::new();
                for (outbox, indexes) in matched.into_values() {
                    let shared = frames
                        .entry(indexes)
                        .or_insert_with_key(|indexes| frame(indexes));
                    push(outbox, shared);
                }
            }
        }
        queued
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
                for (conn, outbox) in conns {
                    per_conn
                        .entry(*conn)
                        .or_insert((outbox, Vec::new()))
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

    #[test]
    fn a_move_reaches_both_scopes_and_the_record_once_per_connection() {
        let router = Router::default();
        let (a, b, c) = (
            Arc::new(Outbox::new(10)),
            Arc::new(Outbox::new(10)),
            Arc::new(Outbox::new(10)),
        );
        let (ida, idb, idc) = (
            router.connect(a.clone()),
            router.connect(b.clone()),
            router.connect(c.clone()),
        );
        router.subscribe(ida, "tasks?board_id=b1");
        router.subscribe(ida, "tasks:t1");
        router.subscribe(idb, "tasks?board_id=b2");
        router.subscribe(idc, "tasks?board_id=b3");
        assert_eq!(router.route(&moved_task()), 2);
        let frames = a.drain();
        assert_eq!(frames.len(), 1);
        let Outgoing::Change(frame) = &frames[0] else {
            panic!("{frames:?}")
        };
        assert_eq!(frame.keys, ["tasks:t1", "tasks?board_id=b1"]);
        assert_eq!(b.drain().len(), 1);
        assert!(c.drain().is_empty());
        router.disconnect(
            ida,
            &["tasks?board_id=b1".to_string(), "tasks:t1".to_string()],
        );
        assert_eq!(router.counts(), (2, 2));
    }

    #[test]
    fn truncate_resyncs_the_tables_subscribers() {
        let router = Router::default();
        let a = Arc::new(Outbox::new(10));
        let id = router.connect(a.clone());
        router.subscribe(id, "tasks?board_id=b1");
        let mut change = moved_task();
        change.kind = "truncate".into();
        change.row_id = None;
        assert_eq!(router.route(&change), 1);
        assert!(matches!(&a.drain()[0], Outgoing::Text(t) if t.as_str().contains("resync")));
    }
}
