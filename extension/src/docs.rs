//! Collaborative documents (extension/sql/docs.sql). Each entry point checks access as the
//! caller (the row under its policies, the column under its privileges), then reads or
//! writes rowsync's document tables as their owner, which nobody else may touch. Updates
//! are checked by rowsync-core's structural scanner before anything is written; no CRDT
//! engine runs here.

use crate::catalog::{Context, SyncedTable};
use crate::sql::{first_column, json_row};
use crate::values;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use rowsync_core::{codes, ydoc};
use serde_json::{json, Value};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::rc::Rc;

/// What a caller may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    None,
    Read,
    Write,
}

/// A document named by a call: its table, its row's canonical id, its column.
struct Doc {
    table: Rc<SyncedTable>,
    id: String,
    col: String,
    max_bytes: i64,
    /// rowsync.settings.doc_max_update_bytes.
    max_update_bytes: usize,
}

/// `{"error": …}`, raised with `sqlstate` by rowsync._raise_if_error.
fn error(sqlstate: &str, message: String, detail: String, hint: &str) -> Value {
    json!({"error": {"sqlstate": sqlstate, "message": message, "detail": detail, "hint": hint}})
}

fn not_visible(tbl: &str, id: &str) -> Value {
    error(
        codes::NOT_FOUND.sqlstate,
        format!("row {tbl}:{id} not found or not visible"),
        "a document is read and edited through its row".into(),
        "the row does not exist or your policies hide it",
    )
}

/// The document `tbl`/`id`/`col` names, or the error that it names none.
fn resolve(client: &mut SpiClient<'_>, tbl: &str, id: &str, col: &str) -> Result<Doc, Value> {
    let context = Context::read(client, vec![tbl.to_string()]);
    let table = context.table(client, tbl).ok_or_else(|| {
        error(
            codes::TABLE_NOT_SYNCED.sqlstate,
            format!("table \"{tbl}\" is not synced"),
            "no synced table has this name".into(),
            "call rowsync.enable(table) first",
        )
    })?;
    let max_bytes = first_column::<i64>(
        client,
        "SELECT d.max_bytes FROM rowsync.doc_columns d JOIN rowsync.synced s ON s.rel = d.rel \
         WHERE s.name = $1 AND d.col = $2",
        &[tbl.into(), col.into()],
    )
    .into_iter()
    .next()
    .ok_or_else(|| {
        error(
            codes::UNKNOWN_COLUMN.sqlstate,
            format!("column \"{col}\" of table \"{tbl}\" is not a document"),
            "documents are columns registered with rowsync.enable_doc".into(),
            "call rowsync.enable_doc(table, column) first",
        )
    })?;
    let id = values::canonical_id(&table.pk_type, id).ok_or_else(|| not_visible(tbl, id))?;
    Ok(Doc {
        table,
        id,
        col: col.to_string(),
        max_bytes,
        max_update_bytes: context.doc_max_update_bytes,
    })
}

/// What the caller may do: read needs the row visible and SELECT on the column; write
/// also UPDATE on the column and the row passing the table's UPDATE policies, which
/// Postgres applies to a row lock (`FOR KEY SHARE`, which also holds off a DELETE of the
/// row until this transaction ends).
fn access(client: &mut SpiClient<'_>, doc: &Doc) -> Access {
    let privilege = |client: &mut SpiClient<'_>, kind: &str| {
        first_column::<bool>(
            client,
            "SELECT pg_catalog.has_column_privilege($1::regclass, $2::name, $3)",
            &[
                doc.table.qualified.as_str().into(),
                doc.col.as_str().into(),
                kind.into(),
            ],
        )
        .first()
            == Some(&true)
    };
    let row = |client: &mut SpiClient<'_>, lock: &str| {
        let sql = format!(
            "SELECT 1 FROM {} AS t WHERE t.{} = $1::{} {lock}",
            doc.table.qualified,
            doc.table.quoted_pk(),
            doc.table.pk_type
        );
        !first_column::<i32>(client, &sql, &[doc.id.as_str().into()]).is_empty()
    };
    if !privilege(client, "SELECT") || !row(client, "") {
        return Access::None;
    }
    if privilege(client, "UPDATE") && row(client, "FOR KEY SHARE") {
        Access::Write
    } else {
        Access::Read
    }
}

/// Runs `work` as the owner of rowsync's tables. A Postgres error inside aborts the
/// (sub)transaction, which restores the caller's identity.
fn as_owner<R>(client: &mut SpiClient<'_>, work: impl FnOnce(&mut SpiClient<'_>) -> R) -> R {
    thread_local! {
        static OWNER: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    }
    let owner = OWNER.get().unwrap_or_else(|| {
        let oid = first_column::<pg_sys::Oid>(
            client,
            "SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = 'rowsync.docs'::regclass",
            &[],
        )[0];
        OWNER.set(Some(oid));
        oid
    });
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    // SAFETY: plain reads and writes of the backend's current user; the flags are the ones
    // SECURITY DEFINER functions use, plus the restriction on what may run meanwhile.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
    }
    let result = work(client);
    // SAFETY: as above, back to the caller.
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    result
}

pub fn access_entry(tbl: &str, id: &str, col: &str) -> Value {
    Spi::connect_mut(|client| match resolve(client, tbl, id, col) {
        // The id as Postgres spells it: `07` and `7` are one row, and one document.
        Ok(doc) => {
            let access = access(client, &doc);
            if access == Access::None {
                return json!({"id": doc.id, "access": null});
            }
            // What appends will be held to, for a bridge to refuse an edit before relaying
            // it: the size stored now, the document's limit and one update's.
            let stored = as_owner(client, |client| {
                first_column::<i64>(
                    client,
                    "SELECT d.snapshot_bytes + d.tail_bytes FROM rowsync.docs d \
                     WHERE d.rel = $1::regclass AND d.row_id = $2 AND d.col = $3",
                    &[
                        doc.table.qualified.as_str().into(),
                        doc.id.as_str().into(),
                        doc.col.as_str().into(),
                    ],
                )
            });
            json!({
                "id": doc.id,
                "access": if access == Access::Write { "write" } else { "read" },
                "bytes": stored.first().copied().unwrap_or(0),
                "max_bytes": doc.max_bytes,
                "max_update_bytes": doc.max_update_bytes,
            })
        }
        Err(e) => e,
    })
}

pub fn append_entry(
    tbl: &str,
    id: &str,
    col: &str,
    updates: &[Option<&[u8]>],
    origin: Option<&str>,
) -> Value {
    Spi::connect_mut(|client| append(client, tbl, id, col, updates, origin).unwrap_or_else(|e| e))
}

fn append(
    client: &mut SpiClient<'_>,
    tbl: &str,
    id: &str,
    col: &str,
    updates: &[Option<&[u8]>],
    origin: Option<&str>,
) -> Result<Value, Value> {
    let doc = resolve(client, tbl, id, col)?;
    match access(client, &doc) {
        Access::Write => {}
        Access::None => return Err(not_visible(tbl, id)),
        Access::Read => {
            return Err(error(
                "42501",
                format!("permission denied to edit document {tbl}:{}/{col}", doc.id),
                "you may read the row, but not update it or the column".into(),
                "check the table's UPDATE policies and column privileges",
            ))
        }
    }
    let limit = doc.max_update_bytes;
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(updates.len());
    for (i, update) in updates.iter().enumerate() {
        let invalid = |detail: String| {
            error(
                codes::INVALID_UPDATE.sqlstate,
                format!("update {i} is not a Yjs update"),
                detail,
                "send Yjs v1 updates as Y.encodeStateAsUpdate or doc.on('update') give them",
            )
        };
        let bytes = update.ok_or_else(|| invalid("it is NULL".into()))?;
        if bytes.len() > limit {
            return Err(error(
                codes::UPDATE_TOO_LARGE.sqlstate,
                format!("update {i} is {} bytes", bytes.len()),
                format!("rowsync.settings.doc_max_update_bytes is {limit}"),
                "send smaller updates",
            ));
        }
        let scan = ydoc::scan_update(bytes).map_err(|e| invalid(e.to_string()))?;
        if !scan.is_empty() {
            kept.push(bytes.to_vec());
        }
    }
    if kept.is_empty() {
        return Ok(json!({"cursor": null}));
    }
    let added: i64 = kept.iter().map(|u| u.len() as i64).sum();
    let count = kept.len() as i64;
    as_owner(client, |client| {
        // The row first, then its lock: appends to one document take turns, and the size
        // checked is the size written to.
        first_column::<i64>(
            client,
            "INSERT INTO rowsync.docs (rel, tbl, row_id, col) VALUES ($1::regclass, $2, $3, $4) \
             ON CONFLICT (rel, row_id, col) DO NOTHING RETURNING id",
            &[
                doc.table.qualified.as_str().into(),
                tbl.into(),
                doc.id.as_str().into(),
                col.into(),
            ],
        );
        let state = json_row(
            client,
            "SELECT jsonb_build_object('id', d.id, 'bytes', d.snapshot_bytes + d.tail_bytes) \
             FROM rowsync.docs d WHERE d.rel = $1::regclass AND d.row_id = $2 AND d.col = $3 FOR UPDATE",
            &[doc.table.qualified.as_str().into(), doc.id.as_str().into(), col.into()],
        )
        .unwrap_or_default();
        let size = state["bytes"].as_i64().unwrap_or(0);
        if size + added > doc.max_bytes {
            return Err(error(
                codes::DOCUMENT_TOO_LARGE.sqlstate,
                format!(
                    "document {tbl}:{}/{col} would be {} bytes",
                    doc.id,
                    size + added
                ),
                format!(
                    "its column's max_bytes is {} (rowsync.doc_columns)",
                    doc.max_bytes
                ),
                "compact the document, or raise max_bytes",
            ));
        }
        let doc_id = state["id"].as_i64().unwrap_or_default();
        first_column::<i64>(
            client,
            "UPDATE rowsync.docs SET tail_bytes = tail_bytes + $2, tail_count = tail_count + $3, \
             updated_at = now() WHERE id = $1 RETURNING id",
            &[doc_id.into(), added.into(), count.into()],
        );
        let cursor = first_column::<i64>(
            client,
            "INSERT INTO rowsync.changes (rel, tbl, row_id, kind, topic) \
             VALUES ($1::regclass, $2, $3, 'doc', $4) RETURNING cursor",
            &[
                doc.table.qualified.as_str().into(),
                tbl.into(),
                doc.id.as_str().into(),
                col.into(),
            ],
        )[0];
        first_column::<i64>(
            client,
            "INSERT INTO rowsync.doc_updates (cursor, n, doc, update, origin) \
             SELECT $1, x.n, $2, x.u, $3 FROM unnest($4::bytea[]) WITH ORDINALITY AS x(u, n) \
             RETURNING cursor",
            &[cursor.into(), doc_id.into(), origin.into(), kept.into()],
        );
        crate::wakeup::changed();
        Ok(json!({"cursor": cursor}))
    })
}

/// The stored parts of a document: its snapshot and its log, in order, or an error.
pub type Parts = (Option<Vec<u8>>, Vec<Vec<u8>>, Option<Value>);

pub fn parts_entry(tbl: &str, id: &str, col: &str) -> Parts {
    Spi::connect_mut(|client| {
        let doc = match resolve(client, tbl, id, col) {
            Ok(doc) => doc,
            Err(e) => return (None, Vec::new(), Some(e)),
        };
        if access(client, &doc) == Access::None {
            return (None, Vec::new(), Some(not_visible(tbl, id)));
        }
        as_owner(client, |client| {
            let key = [
                doc.table.qualified.as_str().into(),
                doc.id.as_str().into(),
                col.into(),
            ];
            let snapshot = first_column::<Vec<u8>>(
                client,
                "SELECT d.snapshot FROM rowsync.docs d WHERE d.rel = $1::regclass AND d.row_id = $2 AND d.col = $3",
                &key,
            )
            .into_iter()
            .next();
            let updates = first_column::<Vec<u8>>(
                client,
                "SELECT u.update FROM rowsync.docs d JOIN rowsync.doc_updates u ON u.doc = d.id \
                 WHERE d.rel = $1::regclass AND d.row_id = $2 AND d.col = $3 ORDER BY u.cursor, u.n",
                &key,
            );
            (snapshot, updates, None)
        })
    })
}

/// Accepts a compacted snapshot only if it carries every struct and every deletion of the
/// old snapshot and of the log updates it replaces; then those updates leave the log.
pub fn compaction_finish_entry(
    doc: i64,
    snapshot: &[u8],
    cursors: &[Option<i64>],
    ns: &[Option<i32>],
) -> Value {
    Spi::connect_mut(|client| {
        compaction_finish(client, doc, snapshot, cursors, ns).unwrap_or_else(|e| e)
    })
}

fn compaction_finish(
    client: &mut SpiClient<'_>,
    doc: i64,
    snapshot: &[u8],
    cursors: &[Option<i64>],
    ns: &[Option<i32>],
) -> Result<Value, Value> {
    let refused = |detail: String| {
        error(
            codes::COMPACTION_REFUSED.sqlstate,
            format!("compaction of document {doc} refused"),
            detail,
            "merge the snapshot and the updates doc_compaction_claim returned, all of them",
        )
    };
    if cursors.len() != ns.len() {
        return Err(refused("cursors and ns differ in length".into()));
    }
    // A set: an update named twice is replaced once, and counted once.
    let keys: Vec<(i64, i32)> = cursors
        .iter()
        .zip(ns)
        .map(|(c, n)| Some(((*c)?, (*n)?)))
        .collect::<Option<BTreeSet<_>>>()
        .ok_or_else(|| refused("a NULL cursor or n".into()))?
        .into_iter()
        .collect();
    let old_snapshot = first_column::<Vec<u8>>(
        client,
        "SELECT coalesce(d.snapshot, ''::bytea) FROM rowsync.docs d WHERE d.id = $1 FOR UPDATE",
        &[doc.into()],
    )
    .into_iter()
    .next()
    .ok_or_else(|| refused("no such document".into()))?;
    let replaced = first_column::<Vec<u8>>(
        client,
        "SELECT u.update FROM rowsync.doc_updates u \
         JOIN unnest($2::bigint[], $3::integer[]) AS k(cursor, n) ON (k.cursor, k.n) = (u.cursor, u.n) \
         WHERE u.doc = $1",
        &[
            doc.into(),
            keys.iter().map(|k| k.0).collect::<Vec<i64>>().into(),
            keys.iter().map(|k| k.1).collect::<Vec<i32>>().into(),
        ],
    );
    if replaced.len() != keys.len() {
        return Err(refused(format!(
            "{} of the {} updates named are not in this document's log",
            keys.len() - replaced.len(),
            keys.len()
        )));
    }
    let merged = ydoc::scan_update(snapshot).map_err(|e| refused(format!("the snapshot: {e}")))?;
    let mut inputs = Vec::with_capacity(replaced.len() + 1);
    if !old_snapshot.is_empty() {
        inputs.push(
            ydoc::scan_update(&old_snapshot)
                .map_err(|e| refused(format!("the stored snapshot: {e}")))?,
        );
    }
    for (i, update) in replaced.iter().enumerate() {
        inputs.push(ydoc::scan_update(update).map_err(|e| refused(format!("update {i}: {e}")))?);
    }
    if !merged.covers(inputs.iter()) {
        return Err(refused(
            "the snapshot lacks structs or deletions of what it would replace".into(),
        ));
    }
    let bytes: i64 = replaced.iter().map(|u| u.len() as i64).sum();
    first_column::<i64>(
        client,
        "UPDATE rowsync.docs SET snapshot = $2, snapshot_bytes = octet_length($2), \
         tail_bytes = tail_bytes - $3, tail_count = tail_count - $4, compaction_lease = NULL \
         WHERE id = $1 RETURNING id",
        &[
            doc.into(),
            snapshot.into(),
            bytes.into(),
            (keys.len() as i64).into(),
        ],
    );
    first_column::<i64>(
        client,
        "DELETE FROM rowsync.doc_updates u USING unnest($2::bigint[], $3::integer[]) AS k(cursor, n) \
         WHERE u.doc = $1 AND (u.cursor, u.n) = (k.cursor, k.n) RETURNING u.cursor",
        &[
            doc.into(),
            keys.iter().map(|k| k.0).collect::<Vec<i64>>().into(),
            keys.iter().map(|k| k.1).collect::<Vec<i32>>().into(),
        ],
    );
    Ok(json!({"replaced": keys.len(), "bytes": snapshot.len()}))
}
