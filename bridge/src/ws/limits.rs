//! What a connection may not do: close codes, and the rate limit.

use std::time::Instant;

/// Close codes (docs/protocol.md). 4000–4099: fix something before reconnecting;
/// 4100–4199: reconnect (with backoff, a fresh token, or from the last cursor).
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// The database is unavailable: reconnect later.
    pub const UNAVAILABLE: u16 = 1013;
    pub const UNAUTHORIZED: u16 = 4001;
    pub const TOKEN_EXPIRED: u16 = 4100;
    pub const SLOW: u16 = 4101;
    pub const RATE_LIMITED: u16 = 4102;
    pub const HEARTBEAT_TIMEOUT: u16 = 4103;
}

/// Allows `rate` messages a second, in bursts of up to `rate`.
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    refused: u32,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32) -> TokenBucket {
        TokenBucket {
            rate: rate as f64,
            tokens: rate as f64,
            refused: 0,
            last: Instant::now(),
        }
    }

    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// A client that keeps sending after being refused a second's worth of messages.
    pub(crate) fn flooding(&self) -> bool {
        self.refused as f64 > self.rate
    }
}
