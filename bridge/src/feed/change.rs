//! One row of the change log as the bridge handles it, and what it becomes on the wire:
//! the items of a `changes` message.

use crate::keys::Key;
use crate::protocol::{EventFrame, RowItem};
use crate::token::{FeedId, Position, Tick};
use serde_json::{Map, Value};
use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;

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

    /// The row's item for one connection: an `upsert` of `row` (the row as the
    /// connection's identity sees it now), or a `remove` when `row` is `None`.
    pub fn row_item(&self, record: u64, keys: Vec<String>, row: Option<&Value>) -> RowItem {
        let table = self.table.clone().unwrap_or_default();
        let id = self.row_id.clone().unwrap_or_default();
        let text = match row {
            Some(row) => serde_json::json!({
                "op": "upsert", "table": table, "id": id,
                "version": row.get("version").cloned().unwrap_or(Value::Null),
                "row": row, "keys": keys, "c": self.cursor,
            }),
            None => serde_json::json!({"op": "remove", "table": table, "id": id, "keys": keys}),
        };
        RowItem {
            log_key: (self.xid, self.cursor),
            cursor: self.token.clone(),
            record,
            upsert: row.is_some(),
            keys,
            at: self.at,
            text: text.to_string().into(),
            table,
            id,
        }
    }

    /// The event's item; `None` for a log row that is not an event.
    pub fn event_frame(&self) -> Option<EventFrame> {
        let topic = self.topic.as_ref()?;
        let payload = self.payload.as_ref()?;
        let item = serde_json::json!({
            "op": "event",
            "topic": topic,
            "event": payload["event"],
            "payload": payload["data"],
            "from": payload["from"],
        });
        Some(EventFrame {
            log_key: (self.xid, self.cursor),
            cursor: self.token.clone(),
            text: item.to_string().into(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_move_concerns_the_record_the_table_and_both_scopes() {
        let moved = FeedChange {
            xid: 700,
            cursor: 7,
            token: "t7".into(),
            table: Some("tasks".into()),
            row_id: Some("t1".into()),
            version: Some(3),
            kind: "update".into(),
            old_scopes: json!({"board_id": "b1", "owner": null})
                .as_object()
                .cloned(),
            new_scopes: json!({"board_id": "b2", "owner": 5}).as_object().cloned(),
            topic: None,
            payload: None,
            at: 0.0,
        };
        assert_eq!(
            moved.keys(),
            [
                "tasks:t1",
                "tasks",
                "tasks?board_id=b1",
                "tasks?board_id=b2",
                "tasks?owner=5"
            ]
        );
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
