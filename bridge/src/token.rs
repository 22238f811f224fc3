//! Resume tokens: where a client stands in the feed, opaque to it (docs/protocol.md).
//!
//! A position is "everything visible at tick `lo`, and the changes of the batch
//! (`lo`, `hi`] up to the log key `after`". A complete position (`lo` = `hi`, no key) is
//! where every batch ends; the long form lets a catch-up cut off mid-batch resume exactly
//! where it stopped. A token carries the feed it belongs to, so a token from another
//! database or cluster resyncs instead of resuming in the wrong place; a check of tick
//! `hi`'s snapshot, so that one naming a tick lost in a crash and reused since resyncs
//! too; and last a MAC of every byte before it under the feed's key
//! (`rowsync.token_key`, which only feed roles read), so that a corrupted or hand-made
//! token resyncs instead of resuming past changes. What a token could gain is small (it
//! only chooses where in the feed to read from, and what is read is filtered by the
//! connection's subscriptions), but a silent gap is data lost to the client.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use siphasher::sip::SipHasher24;
use std::hash::Hasher;

/// A change log: the first 8 bytes of `rowsync.settings.feed_id`, which tokens carry, and
/// the key of their MAC, which they do not.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FeedId {
    pub id: [u8; 8],
    key: [u8; 16],
}

impl std::fmt::Debug for FeedId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FeedId({:02x?})", self.id)
    }
}

impl FeedId {
    /// Stands in for a feed whose settings cannot be read: its tokens resume nowhere else.
    pub const NONE: FeedId = FeedId {
        id: [0; 8],
        key: [0; 16],
    };

    /// From the text forms of `feed_id` and `token_key` (both uuids).
    pub fn parse(feed_id: &str, token_key: &str) -> Option<FeedId> {
        let id = uuid_bytes(feed_id)?;
        Some(FeedId {
            id: id[..8].try_into().ok()?,
            key: uuid_bytes(token_key)?,
        })
    }

    fn mac(&self, bytes: &[u8]) -> [u8; MAC_BYTES] {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(bytes);
        hasher.finish().to_be_bytes()
    }
}

fn uuid_bytes(uuid: &str) -> Option<[u8; 16]> {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    let value = u128::from_str_radix(&hex, 16).ok()?;
    (hex.len() == 32).then_some(value.to_be_bytes())
}

const MAC_BYTES: usize = 8;

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
    let mut bytes = Vec::with_capacity(61);
    let complete = position.after.is_none() && position.lo == position.hi.id;
    bytes.push(if complete { COMPLETE } else { PARTIAL });
    bytes.extend_from_slice(&feed.id);
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
    let mac = feed.mac(&bytes);
    bytes.extend_from_slice(&mac);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode(feed: FeedId, token: &str) -> Result<Position, TokenError> {
    if token.len() > 128 {
        return Err(TokenError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::Malformed)?;
    let signed = bytes
        .len()
        .checked_sub(MAC_BYTES)
        .ok_or(TokenError::Malformed)?;
    let (bytes, mac) = bytes.split_at(signed);
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
    if id != feed.id {
        return Err(TokenError::OtherFeed);
    }
    // Every byte compared, whatever the first difference: how long a refusal takes tells
    // nothing about how much of a guessed MAC was right.
    let difference = feed
        .mac(bytes)
        .iter()
        .zip(mac)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if difference != 0 {
        return Err(TokenError::Malformed);
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

    const FEED: FeedId = FeedId {
        id: [1, 2, 3, 4, 5, 6, 7, 8],
        key: [7; 16],
    };

    #[test]
    fn positions_round_trip_and_complete_ones_are_short() {
        let tick = Tick {
            id: 42,
            check: -7,
            at: 1_796_000_000_000,
        };
        let complete = Position::at(tick);
        let token = encode(FEED, &complete);
        assert!(token.len() <= 51, "{token}");
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
        let other = FeedId { id: [9; 8], ..FEED };
        assert_eq!(decode(other, &token), Err(TokenError::OtherFeed));
        for bad in [
            "",
            "!!",
            "AQ",
            &token[..token.len() - 2],
            &format!("{token}AA"),
        ] {
            assert_eq!(decode(FEED, bad), Err(TokenError::Malformed), "{bad}");
        }
        assert_eq!(FeedId::parse("not-a-uuid", "not-a-uuid"), None);
        assert_eq!(
            FeedId::parse(
                "01020304-0506-0708-0000-000000000000",
                "07070707-0707-0707-0707-070707070707"
            ),
            Some(FEED)
        );
    }

    /// Every field is covered: a partial token with any one byte changed, or made by
    /// someone without the key, resyncs.
    #[test]
    fn a_changed_or_hand_made_token_is_refused() {
        let partial = Position {
            lo: 40,
            hi: Tick {
                id: 42,
                check: -7,
                at: 1_796_000_000_000,
            },
            after: Some((1_000_000_007, 99)),
        };
        let bytes = URL_SAFE_NO_PAD.decode(encode(FEED, &partial)).unwrap();
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x10;
            let token = URL_SAFE_NO_PAD.encode(&changed);
            assert!(decode(FEED, &token).is_err(), "byte {i} changed: {token}");
        }
        let guessed_key = FeedId {
            key: [0; 16],
            ..FEED
        };
        let later = Position {
            after: Some((1_000_000_007, 5_000)),
            ..partial
        };
        assert_eq!(
            decode(FEED, &encode(guessed_key, &later)),
            Err(TokenError::Malformed)
        );
    }
}
