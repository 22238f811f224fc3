//! The Yjs scanner against the real Yjs: tests/yjs/corpus.mjs makes updates with every
//! content type Yjs encodes (text with formats and embeds, maps of every `Any` value,
//! arrays, XML, subdocuments, deletions, two clients, merged updates), and each must scan,
//! with the state vector Yjs computes for it. Every truncation of them is refused, and bit
//! flips are refused or scanned, never a panic.

use rowsync_core::ydoc::scan_update;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn corpus() -> Vec<(Vec<u8>, BTreeMap<u64, u64>)> {
    let script = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../tests/yjs/corpus.mjs");
    let output = Command::new("node")
        .arg(script)
        .args(["7", "150"])
        .output()
        .expect(
            "node runs the corpus (npm packages of tests/yjs are installed by scripts/setup.sh)",
        );
    assert!(
        output.status.success(),
        "corpus.mjs: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (hex, sv) = line.split_once(' ').expect("hex and state vector");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let sv: BTreeMap<String, u64> = serde_json::from_str(sv).unwrap();
            let sv = sv
                .into_iter()
                .map(|(c, k)| (c.parse().unwrap(), k))
                .collect();
            (bytes, sv)
        })
        .collect()
}

#[test]
fn every_update_yjs_makes_scans_with_its_state_vector() {
    let corpus = corpus();
    assert!(corpus.len() > 1000, "{} updates", corpus.len());
    for (bytes, sv) in &corpus {
        let scan = scan_update(bytes).unwrap_or_else(|e| panic!("{e}: {}", hex(bytes)));
        assert_eq!(&scan.state_vector(), sv, "state vector of {}", hex(bytes));
    }
    // The scan follows one path through the bytes and ends exactly at the last one, so
    // every proper prefix runs out: a truncated update is always refused.
    for (bytes, _) in corpus.iter().take(300) {
        for cut in 0..bytes.len() {
            assert!(
                scan_update(&bytes[..cut]).is_err(),
                "{} cut at {cut}",
                hex(bytes)
            );
        }
    }
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for (bytes, _) in &corpus {
        for _ in 0..20 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut flipped = bytes.clone();
            let i = (seed % flipped.len() as u64) as usize;
            flipped[i] ^= 1 << (seed >> 61);
            let _ = scan_update(&flipped);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
