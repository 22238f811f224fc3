//! Who follows what: subscription keys to connections, and the routing of each feed
//! change to the subscribers of its record and of the scopes it left and entered.

use crate::keys::Key;
use crate::outbox::{Outbox, Outgoing};
use crate::protocol::ChangeFrame;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub type ConnId = u64;

/// One row of the change log, as `rowsync.read_changes` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedChange {
    pub cursor: i64,
    pub table: String,
    pub row_id: Option<String>,
    pub version: Option<i64>,
    pub kind: String,
    pub old_scopes: Option<Map<String, Value>>,
    pub new_scopes: Option<Map<String, Value>>,
    /// When the change was written, seconds since the epoch.
    pub at: f64,
}

/// What every reader of the feed selects, in the order `FeedChange::from_row` reads it.
pub const READ_CHANGES: &str =
    "SELECT cursor, tbl, row_id, version, kind, old_scopes, new_scopes, \
                                extract(epoch FROM at)::float8 FROM rowsync.read_changes($1, $2)";

impl FeedChange {
    pub fn from_row(row: &tokio_postgres::Row) -> FeedChange {
        let scopes = |i: usize| {
            row.get::<_, Option<Value>>(i)
                .and_then(|v| v.as_object().cloned())
        };
        FeedChange {
            cursor: row.get(0),
            table: row.get(1),
            row_id: row.get(2),
            version: row.get(3),
            kind: row.get(4),
            old_scopes: scopes(5),
            new_scopes: scopes(6),
            at: row.get(7),
        }
    }

    /// The keys this change concerns: its record, and every scope it was or is in.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if let Some(id) = &self.row_id {
            keys.push(Key::record(&self.table, id));
        }
        for scopes in [&self.old_scopes, &self.new_scopes].into_iter().flatten() {
            for (column, value) in scopes {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                let key = Key::scope(&self.table, column, &value);
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
    by_key: HashMap<String, HashSet<ConnId>>,
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
            inner.by_key.entry(key.to_string()).or_default().insert(id);
        }
    }

    pub fn unsubscribe(&self, id: ConnId, key: &str) {
        if let Ok(mut inner) = self.inner.write() {
            inner.remove(id, key);
        }
    }

    /// Queues `change` for every subscriber of its keys, one frame per connection.
    /// Returns how many frames were queued.
    pub fn route(&self, change: &FeedChange) -> usize {
        let Ok(inner) = self.inner.read() else {
            return 0;
        };
        if change.kind == "truncate" {
            drop(inner);
            return self.resync_where(
                |key| {
                    key.starts_with(&format!("{}:", change.table))
                        || key.starts_with(&format!("{}?", change.table))
                },
                "truncate",
            );
        }
        let mut matched: HashMap<ConnId, Vec<String>> = HashMap::new();
        for key in change.keys() {
            if let Some(conns) = inner.by_key.get(&key) {
                for conn in conns {
                    matched.entry(*conn).or_default().push(key.clone());
                }
            }
        }
        let mut queued = 0;
        // Connections that matched the same keys get the same frame, serialised once.
        let mut texts: HashMap<Vec<String>, std::sync::Arc<str>> = HashMap::new();
        for (conn, keys) in matched {
            if let Some(outbox) = inner.conns.get(&conn) {
                let mut frame = ChangeFrame {
                    table: change.table.clone(),
                    id: change.row_id.clone(),
                    version: change.version,
                    kind: change.kind.clone(),
                    cursor: change.cursor,
                    keys,
                    at: change.at,
                    text: None,
                };
                let text = texts
                    .entry(frame.keys.clone())
                    .or_insert_with(|| frame.to_text())
                    .clone();
                frame.text = Some(text);
                outbox.push(Outgoing::Change(frame));
                queued += 1;
            }
        }
        queued
    }

    /// Tells every subscriber of a key matching `matches` to read its data again.
    pub fn resync_where(&self, matches: impl Fn(&str) -> bool, reason: &str) -> usize {
        let Ok(inner) = self.inner.read() else {
            return 0;
        };
        let mut per_conn: HashMap<ConnId, Vec<&String>> = HashMap::new();
        for (key, conns) in &inner.by_key {
            if matches(key) {
                for conn in conns {
                    per_conn.entry(*conn).or_default().push(key);
                }
            }
        }
        for (conn, keys) in &per_conn {
            if let Some(outbox) = inner.conns.get(conn) {
                let frame = json!({"type": "resync", "keys": keys, "reason": reason});
                outbox.push(Outgoing::Text(frame.to_string()));
            }
        }
        per_conn.len()
    }

    pub fn counts(&self) -> (usize, usize) {
        self.inner
            .read()
            .map(|i| (i.conns.len(), i.by_key.values().map(HashSet::len).sum()))
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

    fn moved_task() -> FeedChange {
        FeedChange {
            cursor: 7,
            table: "tasks".into(),
            row_id: Some("t1".into()),
            version: Some(3),
            kind: "update".into(),
            old_scopes: json!({"board_id": "b1"}).as_object().cloned(),
            new_scopes: json!({"board_id": "b2"}).as_object().cloned(),
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
        assert!(matches!(&a.drain()[0], Outgoing::Text(t) if t.contains("resync")));
    }
}
