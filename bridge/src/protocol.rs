//! The WebSocket protocol, version 2 (docs/protocol.md), in one place: what clients send
//! ([`ClientMessage`], with an explicit unknown case), every frame the bridge sends
//! ([`ServerFrame`], and [`ChangesFrame`] built from [`RowItem`]s and [`EventFrame`]s),
//! and the resume digest both sides compute. JSON text frames; requests carry a `ref`
//! that replies echo, pushes carry none.

use crate::errors::{self, Error, ErrorBody};
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
    /// A `type` the bridge does not know (its first 40 characters): answered with
    /// `unknown_type`, never parsed further.
    #[serde(skip)]
    Unknown {
        reference: Option<Value>,
        type_name: String,
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
            | ClientMessage::Ping { reference }
            | ClientMessage::Unknown { reference, .. } => reference.as_ref(),
        }
    }

    /// Parses a client frame; `Err` with the `ref` to echo and the error to reply with.
    pub fn parse(text: &str) -> Result<ClientMessage, (Option<Value>, Error)> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            (
                None,
                Error::new(errors::BAD_JSON, format!("malformed JSON: {e}")),
            )
        })?;
        let reference = value.get("ref").cloned();
        let refused = |error| (reference.clone(), error);
        match value.get("type").and_then(Value::as_str) {
            Some(t) if CLIENT_TYPES.contains(&t) => {}
            Some(t) => {
                return Ok(ClientMessage::Unknown {
                    type_name: t.chars().take(40).collect(),
                    reference,
                })
            }
            None => {
                let message = "a message needs a string \"type\"";
                return Err(refused(Error::new(errors::BAD_MESSAGE, message)));
            }
        }
        serde_json::from_value(value)
            .map_err(|e| refused(Error::new(errors::BAD_MESSAGE, format!("bad message: {e}"))))
    }
}

/// The `type`s of [`ClientMessage`]'s variants, as clients spell them.
const CLIENT_TYPES: [&str; 8] = [
    "auth",
    "subscribe",
    "unsubscribe",
    "fetch",
    "write",
    "presence",
    "broadcast",
    "ping",
];

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

/// Every frame the bridge sends, but `changes` ([`ChangesFrame`] writes it from items
/// serialised once for many connections). Written with fields in alphabetical order, a
/// reply's `ref` among them.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        protocol: u32,
        user: Option<String>,
        role: String,
        heartbeat_ms: u64,
        limits: Limits,
    },
    Ack(Ack),
    Error {
        error: ErrorBody,
    },
    /// The reply to `fetch`.
    Records {
        records: Value,
        scopes: Vec<ScopeRows>,
        cursor: Option<String>,
    },
    /// After a resume: the complete list of rows (id, version) the user may see in a
    /// scope now. The client drops what it holds of the scope beyond it.
    Members {
        key: String,
        rows: Value,
    },
    /// The client reads `keys` again.
    Resync {
        keys: Vec<String>,
        reason: String,
    },
    /// Keys the user may no longer follow.
    Revoked {
        keys: Vec<String>,
    },
    Presence(PresenceEvent),
    Broadcast {
        room: String,
        event: Value,
        payload: Value,
        from: Sender,
    },
    Pong,
}

/// The limits a `welcome` announces.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_subscriptions: usize,
    pub messages_per_second: u32,
}

/// What a request's `ack` says, by request: `subscribe` keys and cursor, `unsubscribe`
/// keys, `write` result, `auth` expiry, `presence` room; `broadcast` nothing.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Ack {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// `Some(None)`: a `null` cursor (the feed has not connected yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// A scope's (or table's) rows in a `records` reply.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScopeRows {
    pub key: String,
    pub rows: Value,
}

/// A presence room's news: everyone in it (to a joining connection), or who joined,
/// changed or left.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PresenceEvent {
    State {
        room: String,
        members: Vec<Value>,
    },
    Diff {
        room: String,
        joins: Vec<Value>,
        leaves: Vec<String>,
    },
}

/// Who sent a broadcast.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sender {
    pub id: String,
    pub user: Option<String>,
}

impl ServerFrame {
    pub fn resync<K: AsRef<str>>(keys: &[K], reason: &str) -> ServerFrame {
        ServerFrame::Resync {
            keys: keys.iter().map(|k| k.as_ref().to_string()).collect(),
            reason: reason.to_string(),
        }
    }

    /// The frame as sent; a reply echoes the request's `ref`.
    pub fn text(&self, reference: Option<&Value>) -> String {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(r) = reference {
            value["ref"] = r.clone();
        }
        value.to_string()
    }
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

    /// The frames' shapes as docs/protocol.md records them: fields in alphabetical order,
    /// the reply's `ref` among them, and absent fields absent, not null.
    #[test]
    fn server_frames_are_written_as_documented() {
        let ack = ServerFrame::Ack(Ack {
            keys: Some(vec!["tasks".into()]),
            cursor: Some(None),
            ..Ack::default()
        });
        assert_eq!(
            ack.text(Some(&Value::from(7))),
            r#"{"cursor":null,"keys":["tasks"],"ref":7,"type":"ack"}"#
        );
        assert_eq!(
            ServerFrame::Ack(Ack::default()).text(None),
            r#"{"type":"ack"}"#
        );
        let diff = ServerFrame::Presence(PresenceEvent::Diff {
            room: "r".into(),
            joins: vec![],
            leaves: vec!["m/1".into()],
        });
        assert_eq!(
            diff.text(None),
            r#"{"event":"diff","joins":[],"leaves":["m/1"],"room":"r","type":"presence"}"#
        );
        assert_eq!(
            ServerFrame::resync(&["tasks:1"], "truncate").text(None),
            r#"{"keys":["tasks:1"],"reason":"truncate","type":"resync"}"#
        );
        assert_eq!(
            ServerFrame::Pong.text(Some(&Value::from(3))),
            r#"{"ref":3,"type":"pong"}"#
        );
    }

    #[test]
    fn unknown_types_are_their_own_case() {
        let unknown = ClientMessage::parse(r#"{"type":"teleport","ref":1}"#).unwrap();
        assert!(
            matches!(&unknown, ClientMessage::Unknown { type_name, .. } if type_name == "teleport")
        );
        assert_eq!(unknown.reference(), Some(&Value::from(1)));
        let (reference, error) = ClientMessage::parse(r#"{"type":"ping","surprise":1,"ref":2}"#)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            (reference, error.body.code),
            (Some(Value::from(2)), "bad_message")
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
