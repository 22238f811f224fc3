//! A structural scanner for Yjs v1 updates: checks that bytes are a well-formed update, and
//! says which (client, clock) ranges it carries and which it deletes. It does not
//! integrate anything: no CRDT engine runs where this runs (a Postgres backend, or the
//! bridge before yrs sees the bytes).
//!
//! It never recurses (nested `Any` values are walked with an explicit stack, to a bounded
//! depth), never allocates from a count it read (counts are checked against the bytes
//! left), and never reads past the end. The layout is Yjs 13's `UpdateEncoderV1`
//! (docs/design-yjs.md has the reference).

use std::collections::BTreeMap;

/// Deepest nesting of `Any` arrays and maps accepted (Yjs's decoder recurses on them).
pub const MAX_ANY_DEPTH: usize = 32;
/// Yjs numbers are JS numbers: client ids stay below 2^53.
const MAX_SAFE: u64 = (1 << 53) - 1;
/// yrs, which merges on the bridge, keeps clocks in 32 bits and would wrap a larger one
/// silently: clocks and lengths stay below 2^32.
const MAX_CLOCK: u64 = u32::MAX as u64;

/// Why bytes are not an update, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    /// Offset of the byte the scanner could not take.
    pub at: usize,
    pub reason: &'static str,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.at)
    }
}

impl std::error::Error for ScanError {}

/// What an update carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Per client, the clock ranges `[start, end)` of its structs (items and GC; the
    /// gaps an update skips are not in them), in order.
    pub structs: BTreeMap<u64, Vec<(u64, u64)>>,
    /// Per client, the deleted clock ranges `[start, end)`.
    pub deletes: BTreeMap<u64, Vec<(u64, u64)>>,
}

impl Scan {
    /// An update with no structs and no deletions (`00 00`).
    pub fn is_empty(&self) -> bool {
        self.structs.is_empty() && self.deletes.is_empty()
    }

    /// The state vector of the update as Yjs computes it: for each client whose structs
    /// start at clock 0, the end of its first contiguous run.
    pub fn state_vector(&self) -> BTreeMap<u64, u64> {
        self.structs
            .iter()
            .filter_map(|(&client, runs)| match runs.first() {
                Some(&(0, end)) => Some((client, end)),
                _ => None,
            })
            .collect()
    }

    /// Whether this update carries every struct range and every deleted range of
    /// `inputs`: a merge of them that loses nothing covers them.
    pub fn covers<'a>(&self, inputs: impl IntoIterator<Item = &'a Scan>) -> bool {
        let (structs, deletes) = (unions(&self.structs), unions(&self.deletes));
        inputs.into_iter().all(|input| {
            contains_all(&structs, &input.structs) && contains_all(&deletes, &input.deletes)
        })
    }
}

/// Each client's ranges, sorted and joined: built once per check.
fn unions(ranges: &BTreeMap<u64, Vec<(u64, u64)>>) -> BTreeMap<u64, Vec<(u64, u64)>> {
    ranges.iter().map(|(c, r)| (*c, merged(r))).collect()
}

/// Whether every range of `inner` lies within `unions`, per client. Each range is found by
/// binary search: this runs inside a Postgres backend, on ranges a client chose, and must
/// stay n log n.
fn contains_all(
    unions: &BTreeMap<u64, Vec<(u64, u64)>>,
    inner: &BTreeMap<u64, Vec<(u64, u64)>>,
) -> bool {
    inner.iter().all(|(client, ranges)| {
        let union = unions.get(client).map(Vec::as_slice).unwrap_or_default();
        ranges.iter().filter(|(s, e)| s < e).all(|&(start, end)| {
            // The last joined range that starts at or before `start`.
            let i = union.partition_point(|&(s, _)| s <= start);
            i > 0 && end <= union[i - 1].1
        })
    })
}

/// Ranges sorted and joined where they touch or overlap.
fn merged(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut sorted: Vec<(u64, u64)> = ranges.iter().copied().filter(|(s, e)| s < e).collect();
    sorted.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (start, end) in sorted {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// Scans one v1 update.
pub fn scan_update(bytes: &[u8]) -> Result<Scan, ScanError> {
    let mut r = Reader::new(bytes);
    let mut scan = Scan::default();
    let clients = r.count(1, "client count")?;
    for _ in 0..clients {
        let structs = r.count(1, "struct count")?;
        let client = r.var_uint("client id")?;
        let mut clock = r.var_uint("clock")?;
        let runs = scan.structs.entry(client).or_default();
        for _ in 0..structs {
            let info = r.byte("struct info")?;
            let len = match info & 0b1_1111 {
                0 => r.var_uint("GC length")?,
                10 => {
                    let skip = r.var_uint("skip length")?;
                    clock = r.advance(clock, skip)?;
                    continue;
                }
                content => item(&mut r, info, content)?,
            };
            let end = r.advance(clock, len)?;
            match runs.last_mut() {
                Some(last) if last.1 == clock => last.1 = end,
                _ => runs.push((clock, end)),
            }
            clock = end;
        }
        if runs.is_empty() {
            scan.structs.remove(&client);
        }
    }
    let clients = r.count(1, "delete set client count")?;
    for _ in 0..clients {
        let client = r.var_uint("delete set client")?;
        let ranges = r.count(2, "delete range count")?;
        let deletes = scan.deletes.entry(client).or_default();
        for _ in 0..ranges {
            let clock = r.var_uint("deleted clock")?;
            let len = r.var_uint("deleted length")?;
            let end = r.advance(clock, len)?;
            deletes.push((clock, end));
        }
        if deletes.is_empty() {
            scan.deletes.remove(&client);
        }
    }
    if r.at != bytes.len() {
        return Err(r.error("bytes after the delete set"));
    }
    Ok(scan)
}

/// Scans a v1 state vector (a SyncStep1's payload): pairs of client and clock.
pub fn scan_state_vector(bytes: &[u8]) -> Result<BTreeMap<u64, u64>, ScanError> {
    let mut r = Reader::new(bytes);
    let mut sv = BTreeMap::new();
    let n = r.count(2, "state vector length")?;
    for _ in 0..n {
        let client = r.var_uint("client id")?;
        let clock = r.var_uint("clock")?;
        sv.insert(client, clock);
    }
    if r.at != bytes.len() {
        return Err(r.error("bytes after the state vector"));
    }
    Ok(sv)
}

/// Reads an item's origins, parent and content; returns its length in clock units.
fn item(r: &mut Reader, info: u8, content: u8) -> Result<u64, ScanError> {
    const HAS_ORIGIN: u8 = 0b1000_0000;
    const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
    const HAS_PARENT_SUB: u8 = 0b0010_0000;
    if info & HAS_ORIGIN != 0 {
        r.var_uint("origin client")?;
        r.var_uint("origin clock")?;
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        r.var_uint("right origin client")?;
        r.var_uint("right origin clock")?;
    }
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        // Without origins the item names its parent: a root type's name or an item's id.
        match r.var_uint("parent kind")? {
            1 => {
                r.string("parent name")?;
            }
            0 => {
                r.var_uint("parent client")?;
                r.var_uint("parent clock")?;
            }
            _ => return Err(r.error("parent kind is neither 0 nor 1")),
        }
        if info & HAS_PARENT_SUB != 0 {
            r.string("parent key")?;
        }
    }
    match content {
        // Deleted
        1 => r.var_uint("deleted length"),
        // JSON: strings of JSON text, or `undefined`
        2 => {
            let n = r.count(1, "JSON count")?;
            for _ in 0..n {
                let text = r.string("JSON value")?;
                if text != "undefined" {
                    json(r, text)?;
                }
            }
            Ok(n)
        }
        // Binary
        3 => {
            r.bytes("binary content")?;
            Ok(1)
        }
        // String: its length is in UTF-16 code units, as JS counts it
        4 => {
            let text = r.string("string content")?;
            Ok(text.encode_utf16().count() as u64)
        }
        // Embed
        5 => {
            let text = r.string("embed")?;
            json(r, text)?;
            Ok(1)
        }
        // Format
        6 => {
            r.string("format key")?;
            let text = r.string("format value")?;
            json(r, text)?;
            Ok(1)
        }
        // Type: array, map, text, XML element (named), fragment, hook (named), XML text
        7 => {
            match r.var_uint("type ref")? {
                3 | 5 => {
                    r.string("type name")?;
                }
                0 | 1 | 2 | 4 | 6 => {}
                _ => return Err(r.error("unknown type ref")),
            }
            Ok(1)
        }
        // Any
        8 => {
            let n = r.count(1, "any count")?;
            for _ in 0..n {
                any(r)?;
            }
            Ok(n)
        }
        // Doc: a guid and options
        9 => {
            r.string("subdocument guid")?;
            any(r)?;
            Ok(1)
        }
        _ => Err(r.error("unknown content ref")),
    }
}

/// JSON text, as Yjs writes it for JSON, embed and format content.
fn json(r: &Reader, text: &str) -> Result<(), ScanError> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|_| ())
        .map_err(|_| r.error("not JSON"))
}

/// One lib0 `Any` value, nested values included, without recursion.
fn any(r: &mut Reader) -> Result<(), ScanError> {
    // Values still to read at each open level.
    let mut pending: Vec<u64> = vec![1];
    // Whether each open level is a map (its values follow a key).
    let mut is_map: Vec<bool> = vec![false];
    while let Some(left) = pending.last_mut() {
        if *left == 0 {
            pending.pop();
            is_map.pop();
            continue;
        }
        *left -= 1;
        if is_map.last() == Some(&true) {
            r.string("map key")?;
        }
        match r.byte("any tag")? {
            // undefined, null, false, true
            127 | 126 | 121 | 120 => {}
            125 => r.var_int()?,
            124 => r.take(4, "float32")?,
            123 | 122 => r.take(8, "float64 or bigint")?,
            119 => {
                r.string("any string")?;
            }
            116 => {
                r.bytes("any bytes")?;
            }
            tag @ (117 | 118) => {
                let map = tag == 118;
                let n = r.count(if map { 2 } else { 1 }, "any length")?;
                if pending.len() > MAX_ANY_DEPTH {
                    return Err(r.error("values nested too deep"));
                }
                pending.push(n);
                is_map.push(map);
            }
            _ => return Err(r.error("unknown any tag")),
        }
    }
    Ok(())
}

/// A reader of lib0's encodings (the y-protocols messages around updates, and updates
/// themselves), bounded: every number below 2^53, every length within the bytes.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// That nothing is left.
    pub fn end(&self) -> Result<(), ScanError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(self.error("bytes after the message"))
        }
    }

    fn error(&self, reason: &'static str) -> ScanError {
        ScanError {
            at: self.at,
            reason,
        }
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, ScanError> {
        let b = *self.bytes.get(self.at).ok_or(self.error(what))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<(), ScanError> {
        if self.bytes.len() - self.at < n {
            return Err(self.error(what));
        }
        self.at += n;
        Ok(())
    }

    /// lib0's varUint, below 2^53.
    pub fn var_uint(&mut self, what: &'static str) -> Result<u64, ScanError> {
        let mut value: u64 = 0;
        for shift in (0..56).step_by(7) {
            let b = self.byte(what)?;
            value |= u64::from(b & 0x7f) << shift;
            if value > MAX_SAFE {
                return Err(self.error("number above 2^53"));
            }
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("number above 2^53"))
    }

    /// lib0's signed varInt: a sign bit and six bits, then seven bits a byte.
    fn var_int(&mut self) -> Result<(), ScanError> {
        let first = self.byte("varint")?;
        let mut more = first & 0x80 != 0;
        let mut bits = 6;
        while more {
            let b = self.byte("varint")?;
            bits += 7;
            if bits > 60 {
                return Err(self.error("number above 2^53"));
            }
            more = b & 0x80 != 0;
        }
        Ok(())
    }

    /// A count of things at least `min_bytes` long each: never more than the bytes left
    /// could hold, so that no loop runs on a count the bytes cannot back.
    pub fn count(&mut self, min_bytes: usize, what: &'static str) -> Result<u64, ScanError> {
        let n = self.var_uint(what)?;
        let left = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(min_bytes as u64) > left {
            return Err(self.error("a count larger than the bytes left"));
        }
        Ok(n)
    }

    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], ScanError> {
        let len = self.var_uint(what)?;
        if len > (self.bytes.len() - self.at) as u64 {
            return Err(self.error(what));
        }
        let start = self.at;
        self.at += len as usize;
        Ok(&self.bytes[start..self.at])
    }

    pub fn string(&mut self, what: &'static str) -> Result<&'a str, ScanError> {
        let start = self.at;
        let bytes = self.bytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| ScanError {
            at: start,
            reason: "a string that is not UTF-8",
        })
    }

    /// `clock + len`, below 2^32.
    fn advance(&self, clock: u64, len: u64) -> Result<u64, ScanError> {
        match clock.checked_add(len) {
            Some(end) if end <= MAX_CLOCK => Ok(end),
            _ => Err(self.error("clock above 2^32")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_update() {
        let scan = scan_update(&[0, 0]).unwrap();
        assert!(scan.is_empty());
        assert!(scan.state_vector().is_empty());
    }

    /// One client (id 7) inserting "hi" into the root text "t": `Y.encodeStateAsUpdate`
    /// of a doc where `getText('t').insert(0, 'hi')` ran.
    const HI: [u8; 10] = [1, 1, 7, 0, 4, 1, 1, b't', 2, b'h'];

    fn hi() -> Vec<u8> {
        let mut bytes = HI.to_vec();
        bytes.extend_from_slice(&[b'i', 0]);
        bytes
    }

    #[test]
    fn a_string_item() {
        let scan = scan_update(&hi()).unwrap();
        assert_eq!(scan.structs[&7], vec![(0, 2)]);
        assert_eq!(scan.state_vector(), BTreeMap::from([(7, 2)]));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = hi();
        for cut in 0..bytes.len() {
            assert!(scan_update(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            scan_update(&longer).unwrap_err().reason,
            "bytes after the delete set"
        );
    }

    #[test]
    fn strings_count_utf16_units() {
        // "😀" is one code point, two UTF-16 units, four UTF-8 bytes.
        let mut bytes = vec![1, 1, 7, 0, 4, 1, 1, b't', 4];
        bytes.extend_from_slice("😀".as_bytes());
        bytes.push(0);
        assert_eq!(scan_update(&bytes).unwrap().structs[&7], vec![(0, 2)]);
        let mut invalid = bytes.clone();
        invalid[9] = 0xff;
        assert_eq!(
            scan_update(&invalid).unwrap_err().reason,
            "a string that is not UTF-8"
        );
    }

    fn any_item(any: &[u8]) -> Vec<u8> {
        // client 1, clock 0, ContentAny (8) in root map "m" under key "k".
        let mut bytes = vec![1, 1, 1, 0, 8 | 0b0010_0000, 1, 1, b'm', 1, b'k', 1];
        bytes.extend_from_slice(any);
        bytes.push(0);
        bytes
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        let mut ok = Vec::new();
        for _ in 0..MAX_ANY_DEPTH {
            ok.extend_from_slice(&[117, 1]);
        }
        ok.push(126);
        assert!(scan_update(&any_item(&ok)).is_ok());
        let mut deep = Vec::new();
        for _ in 0..100_000 {
            deep.extend_from_slice(&[117, 1]);
        }
        deep.push(126);
        assert_eq!(
            scan_update(&any_item(&deep)).unwrap_err().reason,
            "values nested too deep"
        );
    }

    #[test]
    fn huge_counts_and_ids_are_refused() {
        // A struct count of 2^40 with a few bytes left.
        let bytes = [1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 7, 0];
        assert_eq!(
            scan_update(&bytes).unwrap_err().reason,
            "a count larger than the bytes left"
        );
        // Client id 2^53.
        let bytes = [
            1, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 1, 0,
        ];
        assert_eq!(scan_update(&bytes).unwrap_err().reason, "number above 2^53");
        // A GC run that ends past 2^32, where yrs would wrap it.
        let bytes = [1, 1, 7, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0, 5, 0];
        assert_eq!(scan_update(&bytes).unwrap_err().reason, "clock above 2^32");
    }

    #[test]
    fn state_vectors() {
        assert_eq!(scan_state_vector(&[0]).unwrap(), BTreeMap::new());
        assert_eq!(
            scan_state_vector(&[1, 7, 2]).unwrap(),
            BTreeMap::from([(7, 2)])
        );
        assert!(scan_state_vector(&[1, 7]).is_err());
        assert!(scan_state_vector(&[1, 7, 2, 0]).is_err());
        assert!(scan_state_vector(&[0xff, 0xff, 0xff, 0x7f]).is_err());
    }

    /// Half a million disjoint ranges check in n log n, not n².
    #[test]
    fn coverage_of_many_ranges_is_fast() {
        let ranges: Vec<(u64, u64)> = (0..500_000).map(|i| (2 * i, 2 * i + 1)).collect();
        let scan = Scan {
            structs: BTreeMap::new(),
            deletes: BTreeMap::from([(7, ranges)]),
        };
        let started = std::time::Instant::now();
        assert!(scan.covers([&scan, &scan]));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn coverage() {
        let a = scan_update(&hi()).unwrap();
        let gc_3 = scan_update(&[1, 1, 7, 0, 0, 3, 0]).unwrap();
        assert!(
            gc_3.covers([&a]),
            "a GC run over the same clocks covers the items"
        );
        assert!(!a.covers([&gc_3]), "two clocks do not cover three");
        let deleting = scan_update(&[0, 1, 7, 1, 0, 2]).unwrap();
        assert!(!gc_3.covers([&deleting]));
        let both = scan_update(&[1, 1, 7, 0, 0, 3, 1, 7, 1, 0, 2]).unwrap();
        assert!(both.covers([&a, &gc_3, &deleting]));
    }

    /// Random bytes and bit flips of a real update never panic or hang.
    #[test]
    fn garbage_is_refused_or_scanned() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = hi();
        for _ in 0..20_000 {
            let mut bytes = base.clone();
            let flips = 1 + next() % 3;
            for _ in 0..flips {
                let i = (next() % bytes.len() as u64) as usize;
                bytes[i] ^= 1 << (next() % 8);
            }
            let _ = scan_update(&bytes);
            let random: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
            let _ = scan_update(&random);
        }
    }
}
