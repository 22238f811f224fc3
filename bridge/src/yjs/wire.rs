//! The y-websocket wire format (y-protocols): one message per WebSocket binary message, a
//! varUint type, then its payload. docs/protocol.md lists what the bridge sends and
//! accepts.

use rowsync_core::ydoc::{self, Reader, ScanError};

const SYNC: u64 = 0;
const AWARENESS: u64 = 1;
const AUTH: u64 = 2;
const QUERY_AWARENESS: u64 = 3;
const STEP1: u64 = 0;
const STEP2: u64 = 1;
const UPDATE: u64 = 2;

/// A message from a client, its payload checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// "Here is my state vector; send what I lack."
    SyncStep1(&'a [u8]),
    /// A Yjs update: the reply to our step 1 (content made offline), or a live edit.
    Update(&'a [u8]),
    Awareness(Vec<AwarenessEntry<'a>>),
    QueryAwareness,
    /// Auth messages and types this server does not know: ignored, as y-websocket's
    /// own server does.
    Ignored,
}

/// One client's awareness (cursor, name…): its Yjs client id, a clock that grows with
/// each change, and the state as JSON text (`null` when the client left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessEntry<'a> {
    pub client: u64,
    pub clock: u64,
    pub state: &'a str,
}

/// Why a message was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

impl From<ScanError> for Malformed {
    fn from(e: ScanError) -> Malformed {
        Malformed(e.to_string())
    }
}

/// Reads one message. Updates and state vectors are scanned whole (rowsync-core's
/// ydoc), so that nothing malformed reaches yrs, other clients or Postgres.
pub fn decode(message: &[u8]) -> Result<Incoming<'_>, Malformed> {
    let mut r = Reader::new(message);
    let incoming = match r.var_uint("a message type")? {
        SYNC => match r.var_uint("a sync message type")? {
            STEP1 => {
                let sv = r.bytes("a state vector")?;
                ydoc::scan_state_vector(sv)?;
                Incoming::SyncStep1(sv)
            }
            STEP2 | UPDATE => {
                let update = r.bytes("an update")?;
                ydoc::scan_update(update)?;
                Incoming::Update(update)
            }
            _ => return Err(Malformed("an unknown sync message".into())),
        },
        AWARENESS => {
            let payload = r.bytes("an awareness update")?;
            let entries = awareness_entries(payload)?;
            Incoming::Awareness(entries)
        }
        QUERY_AWARENESS => Incoming::QueryAwareness,
        AUTH => return Ok(Incoming::Ignored),
        _ => return Ok(Incoming::Ignored),
    };
    r.end()?;
    Ok(incoming)
}

fn awareness_entries(payload: &[u8]) -> Result<Vec<AwarenessEntry<'_>>, Malformed> {
    let mut r = Reader::new(payload);
    // Each entry takes at least three bytes: never allocate from a count alone.
    let n = r.count(3, "awareness entries")?;
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let client = r.var_uint("a client id")?;
        let clock = r.var_uint("a clock")?;
        let state = r.string("an awareness state")?;
        entries.push(AwarenessEntry {
            client,
            clock,
            state,
        });
    }
    r.end()?;
    Ok(entries)
}

fn var_uint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn with_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    var_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `[0, 0, sv]`: the server's state vector, so that the client sends what it has that
/// the server lacks (which is how edits made offline come back).
pub fn sync_step1(sv: &[u8]) -> Vec<u8> {
    let mut out = vec![SYNC as u8, STEP1 as u8];
    with_bytes(&mut out, sv);
    out
}

/// `[0, 1, update]`: what the client lacks, in reply to its step 1.
pub fn sync_step2(update: &[u8]) -> Vec<u8> {
    let mut out = vec![SYNC as u8, STEP2 as u8];
    with_bytes(&mut out, update);
    out
}

/// `[0, 2, update]`: an edit made elsewhere.
pub fn update(update: &[u8]) -> Vec<u8> {
    let mut out = vec![SYNC as u8, UPDATE as u8];
    with_bytes(&mut out, update);
    out
}

/// `[1, entries]`: awareness states. With no entries, a no-op message that keeps the
/// client's 30-second silence timer from firing.
pub fn awareness<'a>(entries: impl IntoIterator<Item = AwarenessEntry<'a>>) -> Vec<u8> {
    let entries: Vec<AwarenessEntry<'a>> = entries.into_iter().collect();
    let mut payload = Vec::new();
    var_uint(&mut payload, entries.len() as u64);
    for e in &entries {
        var_uint(&mut payload, e.client);
        var_uint(&mut payload, e.clock);
        with_bytes(&mut payload, e.state.as_bytes());
    }
    let mut out = vec![AWARENESS as u8];
    with_bytes(&mut out, &payload);
    out
}

/// `[2, 0, reason]`: permission denied; y-websocket logs it. Sent before refusing.
pub fn denied(reason: &str) -> Vec<u8> {
    let mut out = vec![AUTH as u8, 0];
    with_bytes(&mut out, reason.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HI: [u8; 12] = [1, 1, 7, 0, 4, 1, 1, b't', 2, b'h', b'i', 0];

    #[test]
    fn round_trips() {
        assert_eq!(decode(&update(&HI)).unwrap(), Incoming::Update(&HI));
        assert_eq!(decode(&sync_step2(&HI)).unwrap(), Incoming::Update(&HI));
        assert_eq!(
            decode(&sync_step1(&[1, 7, 2])).unwrap(),
            Incoming::SyncStep1(&[1, 7, 2])
        );
        let entry = AwarenessEntry {
            client: 300,
            clock: 2,
            state: r#"{"user":"bob"}"#,
        };
        assert_eq!(
            decode(&awareness([entry.clone()])).unwrap(),
            Incoming::Awareness(vec![entry])
        );
        assert_eq!(awareness([]), vec![1, 1, 0], "the keep-alive");
        assert_eq!(decode(&[3]).unwrap(), Incoming::QueryAwareness);
        assert_eq!(decode(&denied("x")).unwrap(), Incoming::Ignored);
        assert_eq!(decode(&[9, 9, 9]).unwrap(), Incoming::Ignored);
    }

    #[test]
    fn refuses_malformed_messages() {
        let truncated = update(&HI[..HI.len() - 1]);
        assert!(decode(&truncated).is_err());
        let mut trailing = update(&HI);
        trailing.push(0);
        assert!(decode(&trailing)
            .unwrap_err()
            .0
            .starts_with("bytes after the message"));
        assert!(decode(&[]).is_err());
        assert!(decode(&[0, 7]).is_err());
        assert!(
            decode(&[0, 2, 0xff, 0xff, 0xff, 0x7f]).is_err(),
            "a length past the end"
        );
        assert!(
            decode(&[1, 4, 0xff, 0xff, 0xff, 0x7f]).is_err(),
            "a count past the end"
        );
        assert!(
            decode(&[0, 0, 2, 1, 7]).is_err(),
            "a truncated state vector"
        );
    }
}
