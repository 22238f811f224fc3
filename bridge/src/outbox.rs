//! A connection's bounded send queue. Changes to one record coalesce (the client refetches
//! the row, so the newest change says all); past the bound the connection is closed as
//! slow, never silently dropped from.

use crate::protocol::ChangeFrame;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    Change(ChangeFrame),
    /// Any other push, already serialised.
    Text(String),
}

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    limit: usize,
}

#[derive(Default)]
struct State {
    /// `None` marks a change that a newer change of the same record replaced.
    frames: VecDeque<Option<Outgoing>>,
    /// Record key to its pending change's index in `frames`, counted from `popped`.
    pending: HashMap<String, u64>,
    popped: u64,
    live: usize,
    overflowed: bool,
}

impl Outbox {
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            limit,
        }
    }

    /// Queues a frame; `false` when the queue is over its bound (the connection is slow).
    pub fn push(&self, mut frame: Outgoing) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if state.overflowed {
            return false;
        }
        if let Outgoing::Change(change) = &mut frame {
            let record = format!("{}:{}", change.table, change.id.as_deref().unwrap_or(""));
            // Later changes keep their place after earlier ones: a client resuming from the
            // last cursor it saw must not skip anything queued before it. The keys merge:
            // a row that left a scope still tells that scope's subscriber.
            if let Some(index) = state.pending.remove(&record) {
                let position = (index - state.popped) as usize;
                if let Some(slot) = state.frames.get_mut(position) {
                    if let Some(Outgoing::Change(older)) = slot.take() {
                        state.live -= 1;
                        for key in older.keys {
                            if !change.keys.contains(&key) {
                                change.keys.push(key);
                                change.text = None;
                            }
                        }
                    }
                }
            }
            let index = state.popped + state.frames.len() as u64;
            state.pending.insert(record, index);
        }
        state.frames.push_back(Some(frame));
        state.live += 1;
        if state.live > self.limit {
            state.overflowed = true;
        } else if state.frames.len() > 2 * self.limit {
            state.compact();
        }
        drop(state);
        self.notify.notify_one();
        !self.overflowed()
    }

    /// Takes every queued frame, oldest first.
    pub fn drain(&self) -> Vec<Outgoing> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        state.popped += state.frames.len() as u64;
        state.pending.clear();
        state.live = 0;
        let frames: Vec<Outgoing> = state.frames.drain(..).flatten().collect();
        if state.frames.capacity() > 64 {
            state.frames.shrink_to_fit();
            state.pending.shrink_to_fit();
        }
        frames
    }

    pub fn overflowed(&self) -> bool {
        self.state.lock().map(|s| s.overflowed).unwrap_or(true)
    }

    pub async fn ready(&self) {
        self.notify.notified().await
    }
}

impl State {
    /// Drops the holes replaced changes left, keeping indices valid.
    fn compact(&mut self) {
        let frames: Vec<Option<Outgoing>> = self.frames.drain(..).filter(Option::is_some).collect();
        self.popped = 0;
        self.pending.clear();
        for (i, frame) in frames.iter().enumerate() {
            if let Some(Outgoing::Change(c)) = frame {
                self.pending.insert(
                    format!("{}:{}", c.table, c.id.as_deref().unwrap_or("")),
                    i as u64,
                );
            }
        }
        self.frames = frames.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: &str, cursor: i64) -> Outgoing {
        Outgoing::Change(ChangeFrame {
            table: "t".into(),
            id: Some(id.into()),
            version: Some(cursor),
            kind: "update".into(),
            cursor,
            keys: vec![format!("t:{id}")],
            at: 0.0,
            text: None,
        })
    }

    #[test]
    fn coalesces_by_record_and_keeps_feed_order() {
        let outbox = Outbox::new(10);
        outbox.push(change("a", 1));
        outbox.push(change("b", 2));
        outbox.push(change("a", 3));
        assert_eq!(outbox.drain(), vec![change("b", 2), change("a", 3)]);
        outbox.push(change("a", 4));
        outbox.push(change("a", 5));
        assert_eq!(outbox.drain(), vec![change("a", 5)]);
    }

    #[test]
    fn coalesced_changes_keep_every_key() {
        let outbox = Outbox::new(10);
        let mut left = change("a", 1);
        if let Outgoing::Change(c) = &mut left {
            c.keys = vec!["t?board=1".into()];
        }
        let mut entered = change("a", 2);
        if let Outgoing::Change(c) = &mut entered {
            c.keys = vec!["t?board=2".into()];
        }
        outbox.push(left);
        outbox.push(entered);
        let frames = outbox.drain();
        let Outgoing::Change(c) = &frames[0] else {
            panic!()
        };
        assert_eq!(c.keys, ["t?board=2", "t?board=1"]);
    }

    #[test]
    fn many_changes_to_one_record_never_overflow() {
        let outbox = Outbox::new(3);
        for i in 0..1000 {
            assert!(outbox.push(change("hot", i)));
        }
        assert_eq!(outbox.drain(), vec![change("hot", 999)]);
    }

    #[test]
    fn overflows_past_the_bound_and_stays_closed() {
        let outbox = Outbox::new(2);
        assert!(outbox.push(change("a", 1)));
        assert!(outbox.push(Outgoing::Text("x".into())));
        assert!(!outbox.push(change("b", 2)));
        assert!(outbox.overflowed());
        assert!(!outbox.push(change("c", 3)));
    }
}
