//! The SQL reference's examples: every ```sql block of docs/sql.md and docs/sql/*.md runs
//! in psql, one session per page against a fresh database with the example app (so each
//! page stands alone, and its examples run in order), with the psql settings the
//! reference's introduction states. Where a block is followed by a plain ``` block, that
//! is its output and must match what psql printed; a block without one must print
//! nothing. A ```sql excerpt block quotes sql/demo.sql and is checked against it instead.
//! ROWSYNC_BLESS=1 rewrites the outputs in the pages (read the diff before
//! committing).
//!
//! What differs from run to run is masked on both sides: timestamps, process ids and
//! transaction ids. Column widths follow the values, so runs of spaces and of table
//! rules compare as one.

use regex::Regex;
use rowsync_tests::{Cluster, PG_BIN};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The page about installing starts from a database without the extension, and comes back
/// to it by the name it gives.
const INSTALLING_PAGE: &str = "installing";
const INSTALLING_DATABASE: &str = "rowsync";

struct Block {
    info: String,
    /// The line after the opening fence, 0-based.
    first: usize,
    /// The closing fence's line.
    end: usize,
    text: String,
}

struct Example {
    sql: String,
    line: usize,
    /// The output block's lines `first..end`, when the page shows one.
    output: Option<(usize, usize, String)>,
}

fn blocks(lines: &[&str]) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<(String, usize)> = None;
    for (n, line) in lines.iter().enumerate() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        match open.take() {
            None => open = Some((info.trim().to_string(), n + 1)),
            Some((info, first)) => found.push(Block {
                info,
                first,
                end: n,
                text: lines[first..n].join("\n"),
            }),
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    found
}

/// The page's sql blocks, each with the plain block that directly follows it.
fn examples(page: &str) -> Vec<Example> {
    let lines: Vec<&str> = page.lines().collect();
    let blocks = blocks(&lines);
    let mut examples = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if block.info != "sql" {
            continue;
        }
        let output = blocks.get(i + 1).filter(|next| {
            next.info.is_empty()
                && lines[block.end + 1..next.first - 1]
                    .iter()
                    .all(|l| l.trim().is_empty())
        });
        examples.push(Example {
            sql: block.text.clone(),
            line: block.first,
            output: output.map(|o| (o.first, o.end, o.text.clone())),
        });
    }
    examples
}

fn masks() -> &'static [(Regex, &'static str)] {
    static MASKS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    MASKS.get_or_init(|| {
        [
            (
                r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d(:\d\d)?|Z)?",
                "<time>",
            ),
            (r"(?i)(process with pid|pid) \d+", "$1 <pid>"),
            (r"\b(xid|xmin|xmax)(\s*[=:]\s*)\d+", "$1$2<xid>"),
            (r" +", " "),
            (r"-{2,}", "-"),
        ]
        .into_iter()
        .map(|(pattern, to)| (Regex::new(pattern).expect("mask"), to))
        .collect()
    })
}

/// The text as compared: the cuts the introduction lists, then the masks.
fn normalize(text: &str) -> String {
    let kept: Vec<String> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.starts_with("LOCATION:"))
        .map(|l| {
            masks()
                .iter()
                .fold(l.to_string(), |acc, (re, to)| {
                    re.replace_all(&acc, *to).into_owned()
                })
                .trim_end()
                .to_string()
        })
        .collect();
    kept.join("\n").trim_matches('\n').to_string()
}

fn marker(n: usize) -> String {
    format!("@@ example {n} @@")
}

/// Runs the page's examples in one psql session; returns each example's output.
fn run_page(cluster: &Cluster, db: &str, examples: &[Example]) -> Vec<String> {
    let mut script = psql_settings();
    script.push('\n');
    for (n, example) in examples.iter().enumerate() {
        script.push_str(&format!("\\echo '{}'\n", marker(n)));
        script.push_str(&example.sql);
        script.push('\n');
    }
    let script_path = std::env::temp_dir().join(format!("rowsync-{db}.sql"));
    std::fs::write(&script_path, &script).unwrap();
    // Read from stdin, so that errors carry no file name and line; one pipe for stdout
    // and stderr keeps errors and notices in order with the results.
    let output = Command::new("sh")
        .args(["-c", "exec \"$0\" \"$@\" 2>&1 < \"$SCRIPT\""])
        .arg(format!("{PG_BIN}/psql"))
        .args(["-X", "-q", "-P", "pager=off"])
        .arg(cluster.url("postgres", db))
        .env("SCRIPT", &script_path)
        .env("PGTZ", "UTC")
        .output()
        .expect("psql");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let mut outputs = Vec::new();
    let mut rest = text.as_str();
    for n in 0..examples.len() {
        let (before, after) = rest
            .split_once(&format!("{}\n", marker(n)))
            .unwrap_or_else(|| panic!("psql stopped before example {n}:\n{text}"));
        if n > 0 {
            outputs.push(before.to_string());
        } else {
            assert!(before.trim().is_empty(), "the settings printed: {before}");
        }
        rest = after;
    }
    outputs.push(rest.to_string());
    outputs
}

/// The psql settings every example ran with: the first block of the reference's
/// introduction (docs/sql.md).
fn psql_settings() -> String {
    let index = std::fs::read_to_string(pages().pop().expect("docs/sql.md")).unwrap();
    let settings = examples(&index).swap_remove(0).sql;
    assert!(settings.contains("VERBOSITY"), "{settings}");
    settings
}

/// docs/sql/*.md, then docs/sql.md.
fn pages() -> Vec<PathBuf> {
    let docs = rowsync_tests::tests_dir().join("../docs");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(docs.join("sql"))
        .expect("docs/sql")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages.push(docs.join("sql.md"));
    pages
}

/// The page with its output blocks replaced by what psql printed.
fn blessed(page: &str, examples: &[Example], actual: &[String]) -> String {
    let mut lines: Vec<String> = page.lines().map(str::to_string).collect();
    for (example, actual) in examples.iter().zip(actual).rev() {
        let printed: Vec<String> = actual
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.starts_with("LOCATION:"))
            .map(str::to_string)
            .collect();
        let printed = trim_blank(printed);
        match &example.output {
            // What differs only where the masks hide stays as recorded: a bless rewrites
            // what changed, not every timestamp.
            Some((_, _, shown)) if normalize(shown) == normalize(actual) => {}
            Some((first, end, _)) => {
                lines.splice(*first..*end, printed);
            }
            None if !printed.is_empty() => {
                let after_sql = example.line + example.sql.lines().count() + 1;
                let mut block = vec![String::new(), "```".to_string()];
                block.extend(printed);
                block.push("```".to_string());
                lines.splice(after_sql..after_sql, block);
            }
            None => {}
        }
    }
    lines.join("\n") + "\n"
}

fn trim_blank(mut lines: Vec<String>) -> Vec<String> {
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    while lines.first().is_some_and(|l| l.is_empty()) {
        lines.remove(0);
    }
    lines
}

#[tokio::test]
async fn sql_reference_examples_run() {
    let cluster = Cluster::private("sql-examples");
    let bless = std::env::var("ROWSYNC_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in pages() {
        let page = std::fs::read_to_string(&path).unwrap();
        let examples = examples(&page);
        if examples.is_empty() {
            continue;
        }
        let name = path
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace('-', "_");
        let db = if name == INSTALLING_PAGE {
            let admin = cluster.connect("postgres", "postgres").await;
            admin
                .batch_execute(&format!("CREATE DATABASE {INSTALLING_DATABASE}"))
                .await
                .expect("create database");
            INSTALLING_DATABASE.to_string()
        } else {
            cluster.database(&format!("docs_{name}")).await
        };
        let actual = run_page(&cluster, &db, &examples);
        ran += examples.len();
        if bless {
            std::fs::write(&path, blessed(&page, &examples, &actual)).unwrap();
            continue;
        }
        for (example, actual) in examples.iter().zip(&actual) {
            let expected = example.output.as_ref().map_or("", |(_, _, text)| text);
            let (expected, printed) = (normalize(expected), normalize(actual));
            if expected != printed {
                let (line, (shown, got)) = expected
                    .lines()
                    .chain(std::iter::repeat("<end>"))
                    .zip(printed.lines().chain(std::iter::repeat("<end>")))
                    .enumerate()
                    .find(|(_, (a, b))| a != b)
                    .expect("a differing line");
                failures.push(format!(
                    "{}:{}: output line {} differs\n  page:  {shown}\n  psql:  {got}\n(the whole output:)\n{}",
                    path.display(),
                    example.line,
                    line + 1,
                    actual.trim_end()
                ));
            }
        }
    }
    assert!(ran > 0, "no examples found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A ```sql excerpt block quotes the example app's SQL instead of running it: it must
/// still be there, word for word.
#[test]
fn excerpts_quote_the_example_app() {
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let demo = words(&rowsync_tests::demo_sql());
    let mut quoted = 0;
    for path in pages() {
        let page = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = page.lines().collect();
        for block in blocks(&lines).iter().filter(|b| b.info == "sql excerpt") {
            quoted += 1;
            assert!(
                demo.contains(&words(&block.text)),
                "{}:{}: the excerpt is not in sql/demo.sql",
                path.display(),
                block.first
            );
        }
    }
    assert!(quoted > 0);
}

#[test]
fn masks_hide_only_what_varies() {
    assert_eq!(
        normalize(" at \n------+----\n 2026-11-30 12:00:01.5+00 \nLOCATION:  x.c:1"),
        " at\n-+-\n <time>"
    );
    assert_eq!(
        normalize("received from server process with PID 4242."),
        "received from server process with PID <pid>."
    );
    assert_ne!(normalize("version 3"), normalize("version 4"));
}
