//! The WebSocket protocol, version 1 (docs/protocol.md): JSON text frames. Requests carry
//! a `ref` that replies echo; pushes carry none.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

pub const PROTOCOL_VERSION: u32 = 2;

/// What a client sends. Anything else is answered with an `unknown_type` error.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// A fresh token, before the current one expires.
    Auth {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        token: String,
    },
    /// Follow record keys (`table:id`) and scope keys (`table?column=value`); with a cursor,
    /// first receive every change missed since it.
    Subscribe {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        keys: Vec<String>,
        cursor: Option<String>,
        /// Resuming: per scope key, the digest of the rows the client holds
        /// (docs/protocol.md); a differing one is answered with `members`.
        #[serde(default)]
        held: HashMap<String, String>,
    },
    Unsubscribe {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        keys: Vec<String>,
    },
    /// Read records and scopes as the user.
    Fetch {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        keys: Vec<String>,
    },
    /// Apply a transaction as the user.
    Write {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        tx: Value,
    },
    Presence {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        action: PresenceAction,
        room: String,
        #[serde(default)]
        state: Value,
    },
    Broadcast {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        room: String,
        event: String,
        #[serde(default)]
        payload: Value,
    },
    Ping {
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PresenceAction {
    Join,
    Update,
    Leave,
}

impl ClientMessage {
    pub fn reference(&self) -> Option<&Value> {
        match self {
            ClientMessage::Auth { reference, .. }
            | ClientMessage::Subscribe { reference, .. }
            | ClientMessage::Unsubscribe { reference, .. }
            | ClientMessage::Fetch { reference, .. }
            | ClientMessage::Write { reference, .. }
            | ClientMessage::Presence { reference, .. }
            | ClientMessage::Broadcast { reference, .. }
            | ClientMessage::Ping { reference } => reference.as_ref(),
        }
    }
}

/// One row of a `changes` message, for the connections of one identity that followed the
/// same keys: an `upsert` with the row as that identity may see it, or a `remove`, sent
/// only to a connection that holds the row (deleted, hidden and moved-out rows look
/// alike, and a connection never learns the id of a row it did not hold). Queued behind
/// an `Arc`: every connection it suits shares one, serialised once.
#[derive(Debug, Clone, PartialEq)]
pub struct RowItem {
    /// The log key of the newest change of the row in its batch, (xid, cursor): catch-up
    /// and the live queue dedupe by it.
    pub log_key: (i64, i64),
    /// The resume token of the position just after that change.
    pub cursor: String,
    /// The row, as a fingerprint (crate::feed::change::record_hash) and as table and id.
    pub record: u64,
    pub table: String,
    pub id: String,
    pub upsert: bool,
    /// The connection's subscription keys this row matched.
    pub keys: Vec<String>,
    /// When the change was written (seconds since the epoch), for the latency metric.
    pub at: f64,
    /// The item as sent.
    pub text: Utf8Bytes,
}

impl RowItem {
    /// Whether `other` is an item of the same row.
    pub fn same_record(&self, other: &RowItem) -> bool {
        self.record == other.record && self.table == other.table && self.id == other.id
    }
}

/// A server event (`rowsync.send`), an item of `changes` for the connections following
/// its topic.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFrame {
    /// The change log key of the event: catch-up and the live queue dedupe by it.
    pub log_key: (i64, i64),
    pub cursor: String,
    /// The item as sent, serialised once for every connection.
    pub text: Utf8Bytes,
}

/// Builds one `changes` message from serialised items, resumable from `cursor`.
pub struct ChangesFrame {
    text: String,
    cursor: Option<String>,
    items: usize,
}

impl ChangesFrame {
    pub fn new() -> ChangesFrame {
        ChangesFrame {
            text: String::from(r#"{"type":"changes","rows":["#),
            cursor: None,
            items: 0,
        }
    }

    pub fn push(&mut self, item: &str, cursor: &str) {
        if self.items > 0 {
            self.text.push(',');
        }
        self.text.push_str(item);
        self.items += 1;
        self.cursor = Some(cursor.to_string());
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// The message, leaving this builder empty for the next.
    pub fn take(&mut self) -> Option<Utf8Bytes> {
        if self.items == 0 {
            return None;
        }
        let mut done = std::mem::take(self);
        done.text.push_str("],\"cursor\":");
        done.text
            .push_str(&serde_json::to_string(&done.cursor).unwrap_or_else(|_| "null".into()));
        done.text.push('}');
        Some(done.text.into())
    }
}

impl Default for ChangesFrame {
    fn default() -> ChangesFrame {
        ChangesFrame::new()
    }
}

/// The digest a client sends for the rows (id, version) it holds in a scope: the sum of
/// each pair's 64-bit FNV-1a of `id`, a newline and the version in decimal, wrapping, in
/// decimal. A sum, so that neither side sorts (ids sort differently in JavaScript).
pub fn members_digest<'a>(rows: impl Iterator<Item = (&'a str, i64)>) -> String {
    let mut sum: u64 = 0;
    for (id, version) in rows {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in id.bytes().chain([b'\n']).chain(version.to_string().bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        sum = sum.wrapping_add(hash);
    }
    sum.to_string()
}

/// A `members` push: the complete list of rows (id, version) the identity may see in a
/// scope now. The client drops what it holds of the scope beyond it.
pub fn members_frame(key: &str, rows: &Value) -> String {
    serde_json::json!({"type": "members", "key": key, "rows": rows}).to_string()
}

/// A `resync` push: the client reads `keys` again.
pub fn resync_frame<K: Serialize>(keys: &[K], reason: &str) -> String {
    serde_json::json!({"type": "resync", "keys": keys, "reason": reason}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// client/test/client.test.js pins the same value: both sides must agree.
    #[test]
    fn the_members_digest_is_the_clients() {
        assert_eq!(members_digest([].into_iter()), "0");
        assert_eq!(
            members_digest([("a", 1), ("b", 2)].into_iter()),
            "16550687064280097846"
        );
        assert_eq!(
            members_digest([("b", 2), ("a", 1)].into_iter()),
            "16550687064280097846"
        );
    }

    #[test]
    fn a_changes_message_ends_at_its_last_items_cursor() {
        let mut frame = ChangesFrame::new();
        assert!(frame.take().is_none());
        frame.push(r#"{"op":"remove"}"#, "c1");
        frame.push(r#"{"op":"event"}"#, "c2");
        let text = frame.take().unwrap();
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": "changes", "rows": [{"op": "remove"}, {"op": "event"}], "cursor": "c2"})
        );
        assert!(frame.is_empty());
    }
}
