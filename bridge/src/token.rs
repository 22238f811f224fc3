//! Resume tokens: where a client stands in the feed, opaque to it (docs/protocol.md).
//!
//! A position is "everything visible at tick `lo`, and the changes of the batch
//! (`lo`, `hi`] up to the log key `after`". A complete position (`lo` = `hi`, no key) is
//! where every batch ends; the long form lets a catch-up cut off mid-batch resume exactly
//! where it stopped. A token carries the feed it belongs to, so a token from another
//! database or cluster resyncs instead of resuming in the wrong place, and a check of
//! tick `hi`'s snapshot, so a corrupted token, or one naming a tick lost in a crash and
//! reused since, resyncs too. Forging a token gains nothing: it only chooses where in the
//! feed to read from, and what is read is filtered by the connection's subscriptions.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The first 8 bytes of `rowsync.settings.feed_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedId(pub [u8; 8]);

impl FeedId {
    /// From the uuid's text form.
    pub fn parse(uuid: &str) -> Option<FeedId> {
        let hex: String = uuid.chars().filter(|c| *c != '-').take(16).collect();
        let value = u64::from_str_radix(&hex, 16).ok()?;
        (hex.len() == 16).then_some(FeedId(value.to_be_bytes()))
    }
}

/// A tick, the check of its snapshot (computed by Postgres: `rowsync.tick_marks`), and
/// when it was taken (milliseconds since the epoch). When a token's tick is gone, only
/// ticks taken no later than it may stand in: a crash can hand a lost tick's id to a
/// later snapshot, and thinning can then remove that one too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tick {
    pub id: i64,
    pub check: i32,
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub lo: i64,
    pub hi: Tick,
    /// The last change delivered of the batch (`lo`, `hi`], as (xid, cursor).
    pub after: Option<(i64, i64)>,
}

impl Position {
    /// Where a batch ending at `tick` leaves a reader.
    pub fn at(tick: Tick) -> Position {
        Position {
            lo: tick.id,
            hi: tick,
            after: None,
        }
    }
}

const COMPLETE: u8 = 1;
const PARTIAL: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this bridge writes.
    Malformed,
    /// A token of another change log.
    OtherFeed,
}

pub fn encode(feed: FeedId, position: &Position) -> String {
    let mut bytes = Vec::with_capacity(53);
    let complete = position.after.is_none() && position.lo == position.hi.id;
    bytes.push(if complete { COMPLETE } else { PARTIAL });
    bytes.extend_from_slice(&feed.0);
    if !complete {
        bytes.extend_from_slice(&position.lo.to_be_bytes());
    }
    bytes.extend_from_slice(&position.hi.id.to_be_bytes());
    bytes.extend_from_slice(&position.hi.check.to_be_bytes());
    bytes.extend_from_slice(&position.hi.at.to_be_bytes());
    if let Some((xid, cursor)) = position.after {
        bytes.extend_from_slice(&xid.to_be_bytes());
        bytes.extend_from_slice(&cursor.to_be_bytes());
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode(feed: FeedId, token: &str) -> Result<Position, TokenError> {
    if token.len() > 128 {
        return Err(TokenError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::Malformed)?;
    let (&kind, rest) = bytes.split_first().ok_or(TokenError::Malformed)?;
    let mut fields = Reader(rest);
    let id = fields.take::<8>()?;
    let lo = if kind == PARTIAL {
        Some(i64::from_be_bytes(fields.take()?))
    } else {
        None
    };
    let hi = Tick {
        id: i64::from_be_bytes(fields.take()?),
        check: i32::from_be_bytes(fields.take()?),
        at: i64::from_be_bytes(fields.take()?),
    };
    let after = match (kind, fields.0.len()) {
        (COMPLETE, 0) => None,
        (PARTIAL, 0) => None,
        (PARTIAL, 16) => Some((
            i64::from_be_bytes(fields.take()?),
            i64::from_be_bytes(fields.take()?),
        )),
        _ => return Err(TokenError::Malformed),
    };
    let lo = lo.unwrap_or(hi.id);
    if lo < 0 || lo > hi.id {
        return Err(TokenError::Malformed);
    }
    if id != feed.0 {
        return Err(TokenError::OtherFeed);
    }
    Ok(Position { lo, hi, after })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        if self.0.len() < N {
            return Err(TokenError::Malformed);
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().map_err(|_| TokenError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEED: FeedId = FeedId([1, 2, 3, 4, 5, 6, 7, 8]);

    #[test]
    fn positions_round_trip_and_complete_ones_are_short() {
        let tick = Tick {
            id: 42,
            check: -7,
            at: 1_796_000_000_000,
        };
        let complete = Position::at(tick);
        let token = encode(FEED, &complete);
        assert!(token.len() <= 40, "{token}");
        assert_eq!(decode(FEED, &token), Ok(complete));
        let partial = Position {
            lo: 40,
            hi: tick,
            after: Some((1_000_000_007, 99)),
        };
        assert_eq!(decode(FEED, &encode(FEED, &partial)), Ok(partial));
    }

    #[test]
    fn foreign_and_damaged_tokens_are_refused() {
        let token = encode(
            FEED,
            &Position::at(Tick {
                id: 3,
                check: 1,
                at: 5,
            }),
        );
        assert_eq!(decode(FeedId([9; 8]), &token), Err(TokenError::OtherFeed));
        for bad in [
            "",
            "!!",
            "AQ",
            &token[..token.len() - 2],
            &format!("{token}AA"),
        ] {
            assert_eq!(decode(FEED, bad), Err(TokenError::Malformed), "{bad}");
        }
        assert_eq!(FeedId::parse("not-a-uuid"), None);
        assert_eq!(
            FeedId::parse("01020304-0506-0708-0000-000000000000"),
            Some(FEED)
        );
    }
}
