//! Who follows what: subscription keys to connections, and which connections each row of
//! a batch concerns (its record, and the scopes it left and entered).

use crate::auth::Identity;
use crate::outbox::{Outbox, Outgoing};
use crate::protocol::ServerFrame;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub type ConnId = u64;

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

    /// The connections following a key (for a server event, its router topic).
    pub fn followers(&self, key: &str) -> Vec<(ConnId, Arc<Subscriber>)> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        inner
            .by_key
            .get(key)
            .map(|conns| conns.iter().map(|(c, s)| (*c, s.clone())).collect())
            .unwrap_or_default()
    }

    /// The connections that follow any of the rows' keys (`keys[row]`), with what each
    /// matched. Nothing is queued: what a connection receives depends on what its
    /// identity may see, which the feed decides.
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
            outbox.push(Outgoing::Text(
                ServerFrame::resync(keys, reason).text(None).into(),
            ));
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

    fn identity(sub: &str) -> Identity {
        Identity {
            role: "app_user".into(),
            claims: json!({"sub": sub}).to_string(),
        }
    }

    #[test]
    fn a_row_concerns_each_connection_once_with_every_key_it_matched() {
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
        // A task moved from board b1 to b2: its record, table and both scopes.
        let keys: Vec<String> = [
            "tasks:t1",
            "tasks",
            "tasks?board_id=b1",
            "tasks?board_id=b2",
        ]
        .map(String::from)
        .to_vec();
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
}
