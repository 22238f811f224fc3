//! Runs the shared vectors against the Rust core.

use rowsync_core::vectors::{check, normalise, with_now, Case, Expected, VectorFile};
use rowsync_core::{apply_tx, Rows, Transaction};
use serde_json::{json, Value};
use std::path::Path;

const NOW: &str = "2026-01-02T03:04:05.678901+00:00";

fn run_case(case: &Case) -> Result<(), String> {
    let now = json!(NOW);
    let mut rows = Rows::new();
    for (table, list) in &case.before {
        for row in list.as_array().ok_or("rows must be an array")? {
            let id = row["id"].as_str().ok_or("row id must be text")?.to_string();
            let mut full = case.defaults.clone();
            full.extend(row.as_object().cloned().ok_or("a row must be an object")?);
            rows.insert((table.clone(), id), Some(full));
        }
    }
    let tx = match Transaction::parse(&case.tx, 1000) {
        Ok(tx) => tx,
        Err(e) => {
            return match &case.expected {
                Expected::Error { code, index, field } if code == "invalid_op" => {
                    check("error", &json!([e.index, e.field]), &json!([index, field]))
                }
                _ => Err(format!("unexpected parse error: {e}")),
            }
        }
    };
    let result = apply_tx(&mut rows, &tx.ops, &now);
    match (&case.expected, result) {
        (
            Expected::Applied {
                after,
                inverse,
                skipped,
            },
            Ok(outcome),
        ) => {
            for (table, expected_rows) in after {
                let actual: Vec<Value> = rows
                    .iter()
                    .filter(|((t, _), _)| t == table)
                    .filter_map(|(_, row)| row.clone().map(Value::Object))
                    .collect();
                let expected_rows = expected_rows.as_array().ok_or("after rows")?;
                check(
                    &format!("rows of {table}"),
                    &Value::Array(normalise(&actual, &case.defaults)),
                    &with_now(
                        &Value::Array(normalise(expected_rows, &case.defaults)),
                        &now,
                    ),
                )?;
            }
            let actual_inverse: Vec<Value> =
                outcome.inverse.iter().map(|op| op.to_json()).collect();
            check(
                "inverse",
                &Value::Array(actual_inverse.clone()),
                &with_now(&Value::Array(inverse.clone()), &now),
            )?;
            let actual_skipped: Vec<Value> = outcome.skipped.iter().map(|s| s.to_json()).collect();
            check(
                "skipped",
                &Value::Array(actual_skipped),
                &Value::Array(skipped.clone()),
            )?;
            // The round trip: applying the inverse restores every row as it was before
            // (versions aside), and an inverse always applies, an empty one too.
            if skipped.is_empty() {
                let undo = Transaction::parse(&json!({ "ops": actual_inverse }), 1000)
                    .map_err(|e| format!("the inverse does not parse: {e}"))?;
                apply_tx(&mut rows, &undo.ops, &now)
                    .map_err(|e| format!("the inverse does not apply: {}", e.error))?;
                for (table, expected_rows) in &case.before {
                    let actual: Vec<Value> = rows
                        .iter()
                        .filter(|((t, _), _)| t == table)
                        .filter_map(|(_, row)| row.clone().map(Value::Object))
                        .collect();
                    check(
                        &format!("rows of {table} after the inverse"),
                        &Value::Array(normalise(&actual, &case.defaults)),
                        &Value::Array(normalise(
                            expected_rows.as_array().ok_or("before rows")?,
                            &case.defaults,
                        )),
                    )?;
                }
            }
            Ok(())
        }
        (Expected::Error { code, index, .. }, Err(e)) => check(
            "error",
            &json!([e.error.code(), e.index]),
            &json!([code, index]),
        ),
        (Expected::Error { code, .. }, Ok(_)) => Err(format!("expected error {code}, it applied")),
        (Expected::Applied { .. }, Err(e)) => {
            Err(format!("unexpected error at op {}: {}", e.index, e.error))
        }
    }
}

#[test]
fn shared_vectors() {
    let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../tests/vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/vectors")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "vector files missing in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut count = 0;
    for path in files {
        let file = VectorFile::parse(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for case in &file.cases {
            count += 1;
            if let Err(e) = run_case(case) {
                failures.push(format!("{} / {}: {e}", path.display(), case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
