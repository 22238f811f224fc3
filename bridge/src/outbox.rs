//! A connection's bounded send queue. Items of one row coalesce (each carries the row as it
//! is now, so the newest says all); past the bound the connection is closed as slow, never
//! silently dropped from.

use crate::protocol::{EventFrame, RowItem};
use axum::extract::ws::Utf8Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    Row(Arc<RowItem>),
    /// A server event: never coalesced, every one counts.
    Event(Arc<EventFrame>),
    /// Any other push, already serialised.
    Text(Utf8Bytes),
}

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    limit: usize,
}

/// Up to this many queued frames, finding a record's pending change scans the queue; past
/// it, `State::pending` indexes them. A connection that keeps up queues one or two frames
/// at a time, and the frames it scans are shared by every subscriber, so they are in
/// cache: the map would be one more cold cache line per connection per change.
const SCAN: usize = 16;

#[derive(Default)]
struct State {
    /// `None` marks a change that a newer change of the same record replaced.
    frames: VecDeque<Option<Outgoing>>,
    /// Record hash to its pending change's index in `frames`, counted from `popped`.
    /// Kept only while more than `SCAN` frames are queued. Two records with one hash
    /// only cost a coalescing: `take_pending` checks the record it finds.
    pending: HashMap<u64, u64>,
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
    pub fn push(&self, frame: Outgoing) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if state.overflowed {
            return false;
        }
        // A queue that already held frames has a wake-up pending: its task drains
        // everything, this frame too, under this lock.
        let wake = state.frames.is_empty();
        if let Outgoing::Row(item) = &frame {
            // Later items keep their place after earlier ones: a client resuming from the
            // last cursor it saw must not skip anything queued before it.
            if let Some(position) = state.take_pending(item) {
                if let Some(Some(_)) = state.frames.get_mut(position).map(Option::take) {
                    state.live -= 1;
                }
            }
        }
        state.frames.push_back(Some(frame));
        state.live += 1;
        match state.frames.len() {
            n if n == SCAN + 1 => state.index(),
            n if n > SCAN + 1 => {
                if let Some(Some(Outgoing::Row(item))) = state.frames.back() {
                    let (record, index) = (item.record, state.popped + n as u64 - 1);
                    state.pending.insert(record, index);
                }
            }
            _ => {}
        }
        if state.live > self.limit {
            state.overflowed = true;
        } else if state.frames.len() > 2 * self.limit {
            state.compact();
        }
        let open = !state.overflowed;
        drop(state);
        if wake || !open {
            self.notify.notify_one();
        }
        open
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
    /// Where a pending item of `item`'s row is queued, forgetting it.
    fn take_pending(&mut self, item: &RowItem) -> Option<usize> {
        let same =
            |f: &Option<Outgoing>| matches!(f, Some(Outgoing::Row(c)) if c.same_record(item));
        if self.frames.len() <= SCAN {
            return self.frames.iter().rposition(same);
        }
        let index = self.pending.remove(&item.record)?;
        let position = (index - self.popped) as usize;
        self.frames
            .get(position)
            .filter(|f| same(f))
            .map(|_| position)
    }

    /// Indexes every queued change by record.
    fn index(&mut self) {
        self.pending.clear();
        for (i, frame) in self.frames.iter().enumerate() {
            if let Some(Outgoing::Row(c)) = frame {
                self.pending.insert(c.record, self.popped + i as u64);
            }
        }
    }

    /// Drops the holes replaced changes left, keeping indices valid.
    fn compact(&mut self) {
        let frames: Vec<Option<Outgoing>> = self.frames.drain(..).filter(Option::is_some).collect();
        self.popped = 0;
        self.frames = frames.into();
        self.index();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: &str, cursor: i64) -> Outgoing {
        Outgoing::Row(Arc::new(RowItem {
            log_key: (1, cursor),
            cursor: cursor.to_string(),
            record: {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(id, &mut hasher);
                std::hash::Hasher::finish(&hasher)
            },
            table: "t".into(),
            id: id.into(),
            upsert: true,
            keys: vec![format!("t:{id}")],
            at: 0.0,
            text: format!(r#"{{"op":"upsert","id":"{id}","version":{cursor}}}"#).into(),
        }))
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
    fn coalesces_past_the_scan_window() {
        let outbox = Outbox::new(100);
        for i in 0..40 {
            outbox.push(change(&format!("r{i}"), i));
        }
        for i in 0..10 {
            outbox.push(change(&format!("r{i}"), 100 + i));
        }
        let cursors: Vec<i64> = outbox
            .drain()
            .iter()
            .map(|f| match f {
                Outgoing::Row(c) => c.log_key.1,
                Outgoing::Text(_) | Outgoing::Event(_) => -1,
            })
            .collect();
        let expected: Vec<i64> = (10..40).chain(100..110).collect();
        assert_eq!(cursors, expected);
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
