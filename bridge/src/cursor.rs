//! Where this bridge's feed stands, shared by the feed (which moves it) and the
//! connections (which resume and subscribe from it).

use crate::token::{FeedId, Position, Tick};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

/// Where this bridge's feed stands: every change up to its tick has been routed, and
/// the batch up to `routing` may be partly routed.
#[derive(Default)]
pub struct Cursor {
    at: Mutex<Option<Head>>,
    /// Set when a doorbell rang on the bus channel; the presence task reads the bus.
    pub bus_rang: AtomicBool,
}

#[derive(Clone, Copy)]
struct Head {
    feed: FeedId,
    routed: Tick,
    routing: Option<Tick>,
}

impl Cursor {
    /// The feed and the tick up to which every change has been routed.
    pub fn get(&self) -> Option<(FeedId, Tick)> {
        let head = self.at.lock().ok().and_then(|at| *at)?;
        Some((head.feed, head.routed))
    }

    /// The feed and the tick a catch-up must read up to: the end of the batch being
    /// routed, if any. A subscription made while a batch is routed page by page misses
    /// the pages routed before it; catch-up reads them, and its duplicates of the pages
    /// routed after it are dropped by their log keys.
    pub fn catch_up_to(&self) -> Option<(FeedId, Tick)> {
        let head = self.at.lock().ok().and_then(|at| *at)?;
        Some((head.feed, head.routing.unwrap_or(head.routed)))
    }

    pub fn set(&self, feed: FeedId, tick: Tick) {
        if let Ok(mut at) = self.at.lock() {
            *at = Some(Head {
                feed,
                routed: tick,
                routing: None,
            });
        }
    }

    pub fn begin_routing(&self, upto: Tick) {
        if let Ok(mut at) = self.at.lock() {
            if let Some(head) = at.as_mut() {
                head.routing = Some(upto);
            }
        }
    }

    /// The resume token of the current position; `None` before the feed first connected.
    pub fn token(&self) -> Option<String> {
        self.get()
            .map(|(feed, tick)| crate::token::encode(feed, &Position::at(tick)))
    }
}
