//! The WebSocket protocol, version 1 (docs/protocol.md): JSON text frames. Requests carry
//! a `ref` that replies echo; pushes carry none.

use crate::router::FeedChange;
use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::hash::{DefaultHasher, Hash, Hasher};

pub const PROTOCOL_VERSION: u32 = 1;

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

/// A change pushed to a subscriber: ids only; the client fetches the row as itself.
/// Queued behind an `Arc`: every subscriber that matched the same keys shares one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChangeFrame {
    pub table: String,
    pub id: Option<String>,
    pub version: Option<i64>,
    pub kind: String,
    /// The resume token of the position just after this change.
    pub cursor: String,
    /// The change's key in the log, (xid, cursor): catch-up and the live queue dedupe by it.
    #[serde(skip)]
    pub log_key: (i64, i64),
    /// The connection's subscription keys this change matched.
    pub keys: Vec<String>,
    /// When the change was written (seconds since the epoch), for the latency metric.
    #[serde(skip)]
    pub at: f64,
    /// A hash of (table, id), the record whose queued changes coalesce. A number, not a
    /// shared string: ten thousand queues cloning one Arc would fight over its count.
    #[serde(skip)]
    pub record: u64,
    /// The frame as sent, serialised once for all who share it; `None` after a merge.
    #[serde(skip)]
    pub text: Option<Utf8Bytes>,
}

impl ChangeFrame {
    pub fn new(change: &FeedChange, keys: Vec<String>) -> ChangeFrame {
        ChangeFrame {
            table: change.table.clone().unwrap_or_default(),
            id: change.row_id.clone(),
            version: change.version,
            kind: change.kind.clone(),
            cursor: change.token.clone(),
            log_key: (change.xid, change.cursor),
            keys,
            at: change.at,
            record: {
                let mut hasher = DefaultHasher::new();
                (&change.table, &change.row_id).hash(&mut hasher);
                hasher.finish()
            },
            text: None,
        }
    }

    /// The frame with its text serialised, ready to share.
    pub fn serialised(mut self) -> ChangeFrame {
        self.text = Some(self.to_text());
        self
    }

    /// Whether `other` is a change of the same record.
    pub fn same_record(&self, other: &ChangeFrame) -> bool {
        self.record == other.record && self.table == other.table && self.id == other.id
    }

    pub fn to_text(&self) -> Utf8Bytes {
        if let Some(text) = &self.text {
            return text.clone();
        }
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        value["type"] = Value::String("change".into());
        value.to_string().into()
    }
}

/// A server event (`rowsync.send`) pushed to the connections following its topic.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFrame {
    /// The change log key of the event: catch-up and the live queue dedupe by it.
    pub log_key: (i64, i64),
    /// The frame as sent, serialised once for every connection.
    pub text: Utf8Bytes,
}

impl EventFrame {
    /// `None` for a log row that is not an event.
    pub fn new(change: &FeedChange) -> Option<EventFrame> {
        let topic = change.topic.as_ref()?;
        let payload = change.payload.as_ref()?;
        let frame = serde_json::json!({
            "type": "event",
            "topic": topic,
            "event": payload["event"],
            "payload": payload["data"],
            "from": payload["from"],
            "cursor": change.token,
        });
        Some(EventFrame {
            log_key: (change.xid, change.cursor),
            text: frame.to_string().into(),
        })
    }
}

/// A `resync` push: the client reads `keys` again.
pub fn resync_frame<K: Serialize>(keys: &[K], reason: &str) -> String {
    serde_json::json!({"type": "resync", "keys": keys, "reason": reason}).to_string()
}

/// An error reply or push: a stable code (docs/errors.md), a message for people, and
/// whether retrying the same request later may succeed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    pub temporary: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}
