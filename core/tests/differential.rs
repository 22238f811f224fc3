//! The differential test: random rows and transactions, run through the Rust core and
//! through the client's JavaScript port (client/src/ops.js, by tests/apply-stdin.mjs under
//! node), compared result for result: parse errors, apply errors, rows, inverses,
//! skipped ops, and the rows after applying each inverse. On the same cases, two properties
//! of the core: an inverse restores the rows, and a list op applied twice changes nothing
//! the second time.
//!
//! `ROWSYNC_DIFF_CASES` (default 3000) and `ROWSYNC_DIFF_SEED` (default fixed) choose the
//! cases; a failure prints the seed and the first differing cases.

use rowsync_core::json::deep_eq;
use rowsync_core::{apply_tx, Rows, Transaction};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const NOW: &str = "2026-01-02T03:04:05.678901+00:00";

/// xorshift64*: small, seedable, and the same on every machine.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const IDS: [&str; 3] = ["t1", "t2", "t3"];
const KEYS: [&str; 7] = [
    "title",
    "n",
    "tags",
    "meta",
    "meta.a",
    "meta.a.b",
    "meta.list",
];

fn scalar(r: &mut Random) -> Value {
    match r.below(7) {
        0 => Value::Null,
        1 => json!(r.below(3)),
        2 => json!(r.below(3) as f64),
        3 => json!(["x", "y", "z"][r.below(3)]),
        4 => json!(r.chance(50)),
        5 => json!({"k": r.below(2)}),
        _ => json!([r.below(2)]),
    }
}

fn value(r: &mut Random) -> Value {
    match r.below(4) {
        0 => json!({"a": scalar(r)}),
        1 => json!([scalar(r), scalar(r)]),
        _ => scalar(r),
    }
}

fn row(r: &mut Random, id: &str) -> Value {
    let mut row = Map::new();
    row.insert("id".into(), json!(id));
    row.insert("version".into(), json!(1 + r.below(3)));
    if r.chance(70) {
        row.insert("title".into(), scalar(r));
    }
    if r.chance(70) {
        row.insert("n".into(), json!(r.below(5)));
    }
    if r.chance(70) {
        let tags: Vec<Value> = (0..r.below(4)).map(|_| scalar(r)).collect();
        row.insert(
            "tags".into(),
            if r.chance(20) {
                Value::Null
            } else {
                json!(tags)
            },
        );
    }
    if r.chance(70) {
        let meta = match r.below(4) {
            0 => Value::Null,
            1 => json!({}),
            2 => json!({"a": {"b": scalar(r)}}),
            _ => json!({"a": scalar(r), "list": [scalar(r)]}),
        };
        row.insert("meta".into(), meta);
    }
    Value::Object(row)
}

fn position(r: &mut Random) -> Option<Value> {
    match r.below(6) {
        0 => None,
        1 => Some(json!("append")),
        2 => Some(json!("prepend")),
        3 => Some(json!({"before": scalar(r)})),
        4 => Some(json!({"after": scalar(r)})),
        _ => {
            let invalid = [json!("middle"), json!(1), json!({"before": 1, "after": 2})];
            Some(invalid[r.below(3)].clone())
        }
    }
}

fn op(r: &mut Random) -> Value {
    let mut op = Map::new();
    op.insert("table".into(), json!("tasks"));
    op.insert("id".into(), json!(r.pick(&IDS)));
    let key = json!(r.pick(&KEYS));
    match r.below(7) {
        0 | 1 => {
            op.insert("type".into(), json!("set"));
            op.insert("key".into(), key);
            if r.chance(15) {
                op.insert("remove".into(), json!(true));
            } else {
                op.insert("value".into(), value(r));
            }
            if r.chance(20) {
                op.insert("expect".into(), scalar(r));
            }
        }
        2 => {
            op.insert("type".into(), json!("set-now"));
            op.insert("key".into(), key);
        }
        3 => {
            op.insert("type".into(), json!("listInsert"));
            op.insert("key".into(), key);
            op.insert("value".into(), scalar(r));
            if let Some(p) = position(r) {
                op.insert("position".into(), p);
            }
        }
        4 => {
            op.insert("type".into(), json!("listRemove"));
            op.insert("key".into(), key);
            op.insert("value".into(), scalar(r));
        }
        5 => {
            op.insert("type".into(), json!("create"));
            op.insert(
                "value".into(),
                json!({"title": scalar(r), "tags": [scalar(r)]}),
            );
            if r.chance(30) {
                op.insert("expect_absent".into(), json!(true));
            }
        }
        _ => {
            op.insert("type".into(), json!("delete"));
            if r.chance(30) {
                op.insert("expect_version".into(), json!(1 + r.below(3)));
            }
        }
    }
    if r.chance(15) {
        op.insert("version".into(), json!(1 + r.below(3)));
    }
    if r.chance(3) {
        op.insert(
            ["colour", "remove", "position"][r.below(3)].into(),
            json!(1),
        );
    }
    Value::Object(op)
}

fn case(r: &mut Random) -> Value {
    let mut rows = Map::new();
    for id in IDS {
        if r.chance(75) {
            rows.insert(format!("tasks:{id}"), row(r, id));
        }
    }
    let ops: Vec<Value> = (0..r.below(5)).map(|_| op(r)).collect();
    json!({"rows": rows, "tx": {"ops": ops}})
}

/// A result map without its null rows: one side lists rows a transaction looked up and
/// found missing, the other may not.
fn present(rows: Map<String, Value>) -> Value {
    Value::Object(rows.into_iter().filter(|(_, v)| !v.is_null()).collect())
}

fn rows_json(rows: &Rows) -> Map<String, Value> {
    rows.iter()
        .map(|((t, id), row)| {
            let value = row.clone().map(Value::Object).unwrap_or(Value::Null);
            (format!("{t}:{id}"), value)
        })
        .collect()
}

/// What the core makes of one case, in apply-stdin.mjs's shape.
fn core_result(case: &Value) -> Value {
    let now = json!(NOW);
    let tx = match Transaction::parse(&case["tx"], 1000) {
        Ok(tx) => tx,
        Err(e) => return json!({"parse_error": {"index": e.index, "field": e.field}}),
    };
    let mut rows = rows_of(case);
    let outcome = match apply_tx(&mut rows, &tx.ops, &now) {
        Ok(outcome) => outcome,
        Err(e) => return json!({"error": {"code": e.error.code(), "index": e.index}}),
    };
    let after = rows_json(&rows);
    let inverse: Vec<Value> = outcome.inverse.iter().map(|op| op.to_json()).collect();
    let undo = Transaction::parse(&json!({ "ops": inverse }), 1000).expect("an inverse parses");
    apply_tx(&mut rows, &undo.ops, &now).expect("an inverse applies");
    json!({
        "rows": present(after),
        "inverse": inverse,
        "skipped": outcome.skipped.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        "undone": present(rows_json(&rows)),
    })
}

fn javascript_results(cases: &[Value]) -> Vec<Value> {
    let script = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/apply-stdin.mjs");
    let mut node = Command::new("node")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs (the differential test needs it)");
    let input = json!({"now": NOW, "cases": cases}).to_string();
    node.stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write the cases");
    let output = node.wait_with_output().expect("node's output");
    assert!(output.status.success(), "apply-stdin.mjs failed");
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON results");
    results
        .into_iter()
        .map(|mut r| {
            for field in ["rows", "undone"] {
                if let Some(Value::Object(rows)) = r.get_mut(field).map(Value::take) {
                    r[field] = present(rows);
                }
            }
            r
        })
        .collect()
}

/// The number of cases and the seed, from the environment.
fn cases() -> (Vec<Value>, u64) {
    let count: usize = std::env::var("ROWSYNC_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("ROWSYNC_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_2026_1130);
    let mut random = Random(seed.max(1));
    ((0..count).map(|_| case(&mut random)).collect(), seed)
}

#[test]
fn core_and_javascript_agree_on_random_transactions() {
    let (cases, seed) = cases();
    let count = cases.len();
    let javascript = javascript_results(&cases);
    assert_eq!(javascript.len(), cases.len());
    let differences: Vec<String> = cases
        .iter()
        .zip(&javascript)
        .map(|(case, js)| (case, core_result(case), js))
        .filter(|(_, rust, js)| !deep_eq(rust, js))
        .take(5)
        .map(|(case, rust, js)| format!("case {case}\n  core {rust}\n  js   {js}"))
        .collect();
    assert!(
        differences.is_empty(),
        "seed {seed}: core and ops.js differ:\n{}",
        differences.join("\n")
    );
    let kinds = |key: &str| javascript.iter().filter(|r| r.get(key).is_some()).count();
    eprintln!(
        "{count} random transactions agree: {} applied, {} refused by apply, {} by parse",
        kinds("rows"),
        kinds("error"),
        kinds("parse_error")
    );
}

/// Rows as compared by the properties: versions aside, and a null column the same as a
/// missing one (the generated rows leave columns out; a table row has them all).
fn without_versions(rows: &Rows) -> Value {
    let mut map = rows_json(rows);
    for row in map.values_mut() {
        if let Value::Object(fields) = row {
            fields.remove("version");
            fields.retain(|_, v| !v.is_null());
        }
    }
    present(map)
}

fn rows_of(case: &Value) -> Rows {
    let mut rows = Rows::new();
    for (key, row) in case["rows"].as_object().into_iter().flatten() {
        let (table, id) = key.split_once(':').unwrap_or_default();
        rows.insert((table.into(), id.into()), row.as_object().cloned());
    }
    rows
}

/// Properties of the semantics on the same random transactions: applying a transaction
/// and then its inverse gives back every row as it was (versions aside), and a list op
/// applied twice changes nothing the second time.
#[test]
fn inverses_restore_and_list_ops_are_idempotent() {
    let (cases, seed) = cases();
    let now = json!(NOW);
    let (mut round_trips, mut repeats) = (0, 0);
    for case in &cases {
        let Ok(tx) = Transaction::parse(&case["tx"], 1000) else {
            continue;
        };
        let before = rows_of(case);
        let mut rows = before.clone();
        let Ok(outcome) = apply_tx(&mut rows, &tx.ops, &now) else {
            continue;
        };
        let inverse: Vec<Value> = outcome.inverse.iter().map(|op| op.to_json()).collect();
        let undo = Transaction::parse(&json!({ "ops": inverse }), 1000).expect("inverse parses");
        apply_tx(&mut rows, &undo.ops, &now).expect("inverse applies");
        assert_eq!(
            without_versions(&rows),
            without_versions(&before),
            "seed {seed}: apply then inverse of {case}"
        );
        round_trips += 1;

        for op in case["tx"]["ops"].as_array().into_iter().flatten() {
            if !matches!(op["type"].as_str(), Some("listInsert" | "listRemove")) {
                continue;
            }
            let single = Transaction::parse(&json!({ "ops": [op] }), 1000).expect("op parses");
            let mut rows = before.clone();
            if apply_tx(&mut rows, &single.ops, &now).is_err() {
                continue;
            }
            let once = without_versions(&rows);
            let again = apply_tx(&mut rows, &single.ops, &now).expect("applies twice");
            assert_eq!(
                without_versions(&rows),
                once,
                "seed {seed}: {op} applied twice"
            );
            assert!(
                again.inverse.is_empty(),
                "seed {seed}: {op} twice changed something"
            );
            repeats += 1;
        }
    }
    assert!(
        round_trips > cases.len() / 4 && repeats > cases.len() / 20,
        "too few cases applied: {round_trips} round trips, {repeats} repeats"
    );
    eprintln!("{round_trips} round trips restored, {repeats} list ops idempotent");
}
