//! Presence (who is in a room, with a small state) and broadcast (ephemeral room events
//! such as typing). Members on other bridges arrive through Postgres: each bridge batches
//! its events into one row of `rowsync.bus` per flush interval, coalescing repeated
//! events of one sender, so database traffic does not grow with keystrokes. Only feed
//! roles may read or write the bus, and a bridge accepts from another only events about
//! that bridge's own members. Members re-announce themselves; a member not heard from
//! expires.

use crate::outbox::{Outbox, Outgoing};
use crate::protocol::{PresenceEvent, Sender, ServerFrame};
use crate::router::ConnId;
use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Presence {
    bridge: String,
    timeout: Duration,
    max_bytes: usize,
    inner: Mutex<Inner>,
    inbound: Inbound,
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<String, Room>,
    /// Events for other bridges, oldest first; a newer event of the same sender, room and
    /// kind replaces an older one still waiting.
    outbound: VecDeque<Value>,
    /// Yjs awareness other bridges sent, for crate::yjs to deliver.
    awareness_in: Vec<Value>,
}

#[derive(Default)]
struct Room {
    members: HashMap<String, Member>,
    local: HashMap<ConnId, Arc<Outbox>>,
}

struct Member {
    user: Option<String>,
    state: Value,
    /// Remote members expire; local ones leave with their connection.
    expires: Option<Instant>,
}

/// Bus rows read from the database (sending bridge, its events), handled by the
/// presence tick.
#[derive(Clone, Default)]
pub struct Inbound(Arc<Mutex<Vec<(String, Value)>>>);

impl Inbound {
    pub fn push(&self, bridge: String, events: Value) {
        if let Ok(mut queue) = self.0.lock() {
            // Bounded: past this, presence repairs itself from the next re-announcement.
            if queue.len() < 10_000 {
                queue.push((bridge, events));
            } else {
                tracing::warn!(
                    "presence bus backlog full; dropping a batch until members re-announce"
                );
            }
        }
    }

    fn take(&self) -> Vec<(String, Value)> {
        self.0
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
}

impl Presence {
    pub fn new(bridge: String, timeout: Duration, max_bytes: usize) -> Presence {
        Presence {
            bridge,
            timeout,
            max_bytes,
            inner: Mutex::default(),
            inbound: Inbound::default(),
        }
    }

    /// This bridge's name on the bus.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn inbound(&self) -> Inbound {
        self.inbound.clone()
    }

    fn member_id(&self, conn: ConnId) -> String {
        format!("{}/{conn}", self.bridge)
    }

    /// Joins (or updates) `conn` in `room`: it receives the room's state, the others a diff.
    pub fn join(
        &self,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        room: &str,
        user: Option<&str>,
        state: Value,
    ) {
        let id = self.member_id(conn);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let r = inner.rooms.entry(room.to_string()).or_default();
        let first_here = r.local.is_empty();
        let joined = r.local.insert(conn, outbox.clone()).is_none();
        r.members.insert(
            id.clone(),
            Member {
                user: user.map(str::to_string),
                state: state.clone(),
                expires: None,
            },
        );
        if joined {
            let members: Vec<Value> = r.members.iter().map(|(id, m)| member_json(id, m)).collect();
            let state = PresenceEvent::State {
                room: room.to_string(),
                members,
            };
            outbox.push(Outgoing::Text(
                ServerFrame::Presence(state).text(None).into(),
            ));
        }
        let joins = vec![json!({ "id": id, "user": user, "state": state })];
        notify_local(r, Some(conn), &diff(room, joins, Vec::new()));
        queue(
            &mut inner.outbound,
            json!({"t": "join", "room": room, "id": id, "user": user, "state": state}),
        );
        if first_here {
            // This bridge did not follow the room: ask the others who is in it.
            queue(
                &mut inner.outbound,
                json!({"t": "sync", "room": room, "id": self.bridge}),
            );
        }
    }

    pub fn leave(&self, conn: ConnId, room: &str) {
        let id = self.member_id(conn);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some(r) = inner.rooms.get_mut(room) else {
            return;
        };
        if r.local.remove(&conn).is_none() {
            return;
        }
        r.members.remove(&id);
        notify_local(r, None, &diff(room, Vec::new(), vec![id.clone()]));
        if r.members.is_empty() && r.local.is_empty() {
            inner.rooms.remove(room);
        }
        queue(
            &mut inner.outbound,
            json!({"t": "leave", "room": room, "id": id}),
        );
    }

    /// Sends an event to every other member of a room `conn` has joined.
    pub fn broadcast(
        &self,
        conn: ConnId,
        room: &str,
        user: Option<&str>,
        event: &str,
        payload: Value,
    ) -> bool {
        let id = self.member_id(conn);
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        let Some(r) = inner.rooms.get(room) else {
            return false;
        };
        if !r.local.contains_key(&conn) {
            return false;
        }
        let frame = ServerFrame::Broadcast {
            room: room.to_string(),
            event: Value::from(event),
            payload: payload.clone(),
            from: Sender {
                id: id.clone(),
                user: user.map(str::to_string),
            },
        };
        notify_local(r, Some(conn), &frame);
        queue(
            &mut inner.outbound,
            json!({"t": "broadcast", "room": room, "id": id, "user": user, "event": event, "payload": payload}),
        );
        true
    }

    /// The connections on this bridge in the room `topic` names: a server event's room
    /// members. `user:<sub>` topics belong to that user's connections alone, whatever a
    /// room of that name (a record of a table called `user`) holds.
    pub fn local_members(&self, topic: &str) -> Vec<ConnId> {
        if topic.starts_with("user:") {
            return Vec::new();
        }
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        inner
            .rooms
            .get(topic)
            .map(|r| r.local.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Called every flush interval: applies what other bridges sent, expires silent
    /// remote members, re-announces local ones when `announce`, and returns the events to
    /// publish now (at most `bus_max_bytes` of them, but at least one).
    pub fn tick(&self, announce: bool) -> Vec<Value> {
        let received = self.inbound.take();
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        for (bridge, events) in received {
            self.receive(&mut inner, &bridge, &events);
        }
        let now = Instant::now();
        for (room, r) in inner.rooms.iter_mut() {
            let expired: Vec<String> = r
                .members
                .iter()
                .filter(|(_, m)| m.expires.is_some_and(|e| e < now))
                .map(|(id, _)| id.clone())
                .collect();
            if !expired.is_empty() {
                for id in &expired {
                    r.members.remove(id);
                }
                notify_local(r, None, &diff(room, Vec::new(), expired));
            }
        }
        inner
            .rooms
            .retain(|_, r| !r.members.is_empty() || !r.local.is_empty());
        if announce {
            let mine: Vec<Value> = inner
                .rooms
                .iter()
                .flat_map(|(room, r)| {
                    r.members.iter().filter(|(_, m)| m.expires.is_none()).map(move |(id, m)| {
                        json!({"t": "join", "room": room, "id": id, "user": m.user, "state": m.state})
                    })
                })
                .collect();
            for event in mine {
                queue(&mut inner.outbound, event);
            }
        }
        let mut batch = Vec::new();
        let mut total = 0;
        while let Some(event) = inner.outbound.front() {
            let size = event.to_string().len() + 1;
            if !batch.is_empty() && total + size > self.max_bytes {
                break; // the rest waits for the next flush
            }
            total += size;
            if let Some(event) = inner.outbound.pop_front() {
                batch.push(event);
            }
        }
        batch
    }

    /// Queues a Yjs client's awareness (cursor, name…) for the other bridges, coalesced per
    /// client: only its newest state waits. `state` is its JSON text, `null` when it left.
    pub fn publish_awareness(&self, doc: &str, client: u64, clock: u64, state: &str) {
        let event = json!({
            "t": "yaw", "room": doc, "id": format!("{}/{client}", self.bridge),
            "client": client, "clock": clock, "state": state,
        });
        if let Ok(mut inner) = self.inner.lock() {
            queue(&mut inner.outbound, event);
        }
    }

    /// The Yjs awareness other bridges sent since the last call.
    pub fn take_awareness(&self) -> Vec<Value> {
        self.inner
            .lock()
            .map(|mut inner| std::mem::take(&mut inner.awareness_in))
            .unwrap_or_default()
    }

    fn receive(&self, inner: &mut Inner, bridge: &str, events: &Value) {
        if bridge == self.bridge {
            return;
        }
        let Some(events) = events.as_array() else {
            return;
        };
        // A bridge speaks only for its own members (ids are "<bridge>/<connection>").
        let own = format!("{bridge}/");
        let mut announce = Vec::new();
        for event in events {
            let (Some(room), Some(id)) = (event["room"].as_str(), event["id"].as_str()) else {
                continue;
            };
            if event["t"].as_str() != Some("sync") && !id.starts_with(&own) {
                continue;
            }
            if event["t"].as_str() == Some("yaw") {
                inner.awareness_in.push(event.clone());
                continue;
            }
            let Some(r) = inner.rooms.get_mut(room) else {
                continue;
            };
            match event["t"].as_str() {
                Some("join") => {
                    let user = event["user"].as_str().map(str::to_string);
                    let state = event["state"].clone();
                    let changed = r
                        .members
                        .get(id)
                        .is_none_or(|m| m.state != state || m.user != user);
                    r.members.insert(
                        id.to_string(),
                        Member {
                            user: user.clone(),
                            state: state.clone(),
                            expires: Some(Instant::now() + self.timeout),
                        },
                    );
                    if changed {
                        notify_local(
                            r,
                            None,
                            &diff(
                                room,
                                vec![json!({"id": id, "user": user, "state": state})],
                                Vec::new(),
                            ),
                        );
                    }
                }
                Some("leave") if r.members.remove(id).is_some() => {
                    notify_local(r, None, &diff(room, Vec::new(), vec![id.to_string()]));
                }
                Some("broadcast") => {
                    let frame = ServerFrame::Broadcast {
                        room: room.to_string(),
                        event: event["event"].clone(),
                        payload: event["payload"].clone(),
                        from: Sender {
                            id: id.to_string(),
                            user: event["user"].as_str().map(str::to_string),
                        },
                    };
                    notify_local(r, None, &frame);
                }
                Some("sync") => {
                    for (id, m) in r.members.iter().filter(|(_, m)| m.expires.is_none()) {
                        announce.push(json!({"t": "join", "room": room, "id": id, "user": m.user, "state": m.state}));
                    }
                }
                _ => {}
            }
        }
        for event in announce {
            queue(&mut inner.outbound, event);
        }
    }
}

fn member_json(id: &str, m: &Member) -> Value {
    json!({"id": id, "user": m.user, "state": m.state})
}

fn notify_local(room: &Room, except: Option<ConnId>, frame: &ServerFrame) {
    // Serialised once; every member's queue shares the bytes.
    let text: Utf8Bytes = frame.text(None).into();
    for (conn, outbox) in &room.local {
        if Some(*conn) != except {
            outbox.push(Outgoing::Text(text.clone()));
        }
    }
}

/// A `presence` diff frame for a room.
fn diff(room: &str, joins: Vec<Value>, leaves: Vec<String>) -> ServerFrame {
    ServerFrame::Presence(PresenceEvent::Diff {
        room: room.to_string(),
        joins,
        leaves,
    })
}

/// Queues an event for the bus, replacing a waiting one of the same sender, room and kind.
fn queue(outbound: &mut VecDeque<Value>, event: Value) {
    let same = |e: &Value| {
        e["t"] == event["t"]
            && e["room"] == event["room"]
            && e["id"] == event["id"]
            && e["event"] == event["event"]
    };
    if let Some(waiting) = outbound.iter_mut().find(|e| same(e)) {
        *waiting = event;
    } else {
        outbound.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(outbox: &Outbox) -> Vec<Value> {
        outbox
            .drain()
            .into_iter()
            .map(|o| match o {
                Outgoing::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn two_bridges_see_each_others_members_and_typing_coalesces() {
        let a = Presence::new("a".into(), Duration::from_secs(30), 64 * 1024);
        let b = Presence::new("b".into(), Duration::from_secs(30), 64 * 1024);
        let (alice, bob) = (Arc::new(Outbox::new(100)), Arc::new(Outbox::new(100)));
        a.join(1, &alice, "room", Some("alice"), json!({"cursor": 1}));
        b.join(1, &bob, "room", Some("bob"), json!({}));
        texts(&alice);
        texts(&bob);
        for i in 0..100 {
            assert!(a.broadcast(1, "room", Some("alice"), "typing", json!({"n": i})));
        }
        let events = a.tick(false);
        let typing = events.iter().filter(|e| e["t"] == "broadcast").count();
        assert_eq!(typing, 1, "a hundred keystrokes, one event: {events:?}");
        b.inbound().push("a".into(), Value::Array(events));
        b.tick(false);
        let frames = texts(&bob);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0]["joins"][0]["user"], json!("alice"));
        assert_eq!(frames[1]["payload"], json!({"n": 99}));
        a.leave(1, "room");
        b.inbound().push("a".into(), Value::Array(a.tick(false)));
        b.tick(false);
        assert_eq!(texts(&bob)[0]["leaves"], json!(["a/1"]));
    }

    #[test]
    fn a_bridge_speaks_only_for_its_own_members() {
        let a = Presence::new("a".into(), Duration::from_secs(30), 64 * 1024);
        let b = Presence::new("b".into(), Duration::from_secs(30), 64 * 1024);
        let (alice, bob) = (Arc::new(Outbox::new(100)), Arc::new(Outbox::new(100)));
        a.join(1, &alice, "room", Some("alice"), json!({}));
        b.join(1, &bob, "room", Some("bob"), json!({}));
        b.inbound().push("a".into(), Value::Array(a.tick(false)));
        b.tick(false);
        texts(&bob);
        let forged = json!([
            {"t": "leave", "room": "room", "id": "a/1"},
            {"t": "join", "room": "room", "id": "a/1", "user": "mallory", "state": {}},
            {"t": "broadcast", "room": "room", "id": "b/1", "user": "bob", "event": "x", "payload": 1},
        ]);
        b.inbound().push("c".into(), forged.clone());
        b.inbound().push("b".into(), forged);
        b.tick(false);
        assert_eq!(texts(&bob), Vec::<Value>::new());
    }

    #[test]
    fn broadcast_needs_membership() {
        let p = Presence::new("a".into(), Duration::from_secs(30), 1024);
        assert!(!p.broadcast(1, "room", None, "typing", Value::Null));
    }
}
