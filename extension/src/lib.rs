//! The rowsync extension. Schema, triggers and the feed are SQL (`extension/sql/`, one
//! file per topic); the operation semantics run in Rust, from `rowsync-core`, in
//! `rowsync._apply`.

use pgrx::prelude::*;

mod apply;
mod capture;
mod catalog;
mod changelog;
mod docs;
mod failure;
mod get;
mod jsonb;
mod sql;
mod values;
mod visible;
mod wakeup;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

pgrx::pg_module_magic!(name, version);

/// Postgres errors raised inside SPI reach the client with a Rust backtrace in their
/// DETAIL when the server's environment enables backtraces (RUST_BACKTRACE). That would
/// show internals to every user, so backtraces are off in every backend that loads us.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: a backend runs one thread; nothing reads the environment concurrently.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    catalog::watch_definitions();
    wakeup::register();
}

// The SQL surface by topic, in the order it is created: tables, writes, the registry,
// reading scopes, visibility, the feed, wake-ups and the bus, and last the grants, which
// name functions from all of them.
extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!(
    "../sql/writes.sql",
    name = "writes",
    requires = ["bootstrap"]
);
extension_sql_file!(
    "../sql/registry.sql",
    name = "registry",
    requires = ["writes"]
);
extension_sql_file!(
    "../sql/scopes.sql",
    name = "scopes",
    requires = ["registry"]
);
extension_sql_file!(
    "../sql/visibility.sql",
    name = "visibility",
    requires = ["scopes"]
);
extension_sql_file!("../sql/feed.sql", name = "feed", requires = ["visibility"]);
extension_sql_file!(
    "../sql/listeners.sql",
    name = "listeners",
    requires = ["feed"]
);
extension_sql_file!(
    "../sql/docs.sql",
    name = "docs",
    requires = [
        "listeners",
        doc_access_entry,
        doc_append_entry,
        doc_parts_entry,
        doc_compaction_finish_entry
    ]
);
extension_sql_file!("../sql/grants.sql", name = "grants", finalize);

/// Applies a transaction as the caller. Returns `{"error": …}` instead of raising, so that
/// `rowsync.apply` can raise it with rowsync's own SQLSTATE (pgrx can only raise the
/// built-in codes); every such error is found before the first write.
#[pg_extern(volatile, parallel_unsafe, name = "_apply")]
#[search_path(pg_catalog, pg_temp)]
fn apply_entry(tx: jsonb::Jsonb) -> jsonb::Jsonb {
    jsonb::Jsonb(apply::run(&tx.0).unwrap_or_else(|failure| failure.to_json()))
}

/// The rows behind `pointers` that the caller may see. Errors as for `_apply`.
#[pg_extern(stable, parallel_safe, name = "_get")]
#[search_path(pg_catalog, pg_temp)]
fn get_entry(pointers: jsonb::Jsonb) -> jsonb::Jsonb {
    jsonb::Jsonb(get::run(&pointers.0).unwrap_or_else(|failure| failure.to_json()))
}

/// The rows of a batch the caller may see, with their data: one identity's probe for
/// `rowsync.visible_rows` (extension/sql/visibility.sql). Grants nothing: it reads as
/// the caller.
#[pg_extern(stable, parallel_safe, name = "_visible_for")]
#[search_path(pg_catalog, pg_temp)]
fn visible_for_entry(
    tables: Vec<String>,
    ids: Vec<String>,
    wanted: Vec<i32>,
    known: Vec<i32>,
) -> TableIterator<'static, (name!(row_index, i32), name!(data, Option<jsonb::Jsonb>))> {
    let rows = visible::rows(&tables, &ids, &wanted, &known);
    TableIterator::new(
        rows.into_iter()
            .map(|(i, data)| (i, data.map(jsonb::Jsonb))),
    )
}

/// Marks the calling transaction as one that logged something for the feed, so that it
/// wakes a sleeping listener when it commits (rowsync.send calls it). Anyone may: the
/// most it causes is one wake-up, which any role can cause with NOTIFY.
#[pg_extern(volatile, parallel_unsafe, name = "_changed")]
fn changed_entry() {
    wakeup::changed();
}

/// Whether values of a type may be a scope: converted to JSON by built-in code only
/// (`rowsync.enable` refuses the others early; the capture trigger checks every write).
#[pg_extern(stable, parallel_safe, name = "_scope_type_safe")]
fn scope_type_safe(typ: pg_sys::Oid) -> bool {
    capture::json_safe(typ)
}

/// Called by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}

/// What the caller may do with a document: `{"access": "write" | "read" | null}`, or an
/// error for what is not a document. Errors as for `_apply`.
#[pg_extern(volatile, parallel_unsafe, name = "_doc_access")]
#[search_path(pg_catalog, pg_temp)]
fn doc_access_entry(tbl: &str, id: &str, col: &str) -> jsonb::Jsonb {
    jsonb::Jsonb(docs::access_entry(tbl, id, col))
}

/// Appends Yjs updates to a document as the caller: `{"cursor": n}` or an error, found
/// before anything is written.
#[pg_extern(volatile, parallel_unsafe, name = "_doc_append")]
#[search_path(pg_catalog, pg_temp)]
fn doc_append_entry(
    tbl: &str,
    id: &str,
    col: &str,
    updates: pgrx::Array<'_, &[u8]>,
    origin: Option<&str>,
) -> jsonb::Jsonb {
    let updates: Vec<Option<&[u8]>> = updates.iter().collect();
    jsonb::Jsonb(docs::append_entry(tbl, id, col, &updates, origin))
}

/// A document's snapshot and log, if the caller may read it; else one row with `error`.
// pgrx reads the columns' names from the `name!`s in the signature, so the type stays inline.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe, name = "_doc_parts")]
#[search_path(pg_catalog, pg_temp)]
fn doc_parts_entry(
    tbl: &str,
    id: &str,
    col: &str,
) -> TableIterator<
    'static,
    (
        name!(snapshot, Option<Vec<u8>>),
        name!(updates, Vec<Vec<u8>>),
        name!(error, Option<jsonb::Jsonb>),
    ),
> {
    let (snapshot, updates, error) = docs::parts_entry(tbl, id, col);
    TableIterator::once((snapshot, updates, error.map(jsonb::Jsonb)))
}

/// Replaces a document's snapshot with a compacted one that provably loses nothing. For
/// bridges (a feed function: revoked from PUBLIC, granted by grant_feed); it runs as the
/// owner of the document tables.
#[pg_extern(
    volatile,
    parallel_unsafe,
    security_definer,
    name = "_doc_compaction_finish"
)]
#[search_path(pg_catalog, pg_temp)]
fn doc_compaction_finish_entry(
    doc: i64,
    snapshot: &[u8],
    cursors: pgrx::Array<'_, i64>,
    ns: pgrx::Array<'_, i32>,
) -> jsonb::Jsonb {
    let cursors: Vec<Option<i64>> = cursors.iter().collect();
    let ns: Vec<Option<i32>> = ns.iter().collect();
    jsonb::Jsonb(docs::compaction_finish_entry(doc, snapshot, &cursors, &ns))
}
