//! Appending one change to the log, `rowsync.changes`, without a statement. The capture
//! trigger does it for every write to a synced table, and an INSERT through SPI cost more
//! than all its other work together: executor start-up and shutdown, a plan check,
//! RETURNING (docs/benchmarks.md, issue 14). The row is formed against the table's own
//! descriptor and stored with `CatalogTupleInsert`, which inserts the heap tuple and an
//! entry in each index (uniqueness checked), as a SQL INSERT would: WAL-logged, counted
//! for autovacuum. The log has no triggers and no constraints beyond NOT NULL (filled
//! here), which that path would skip; an index it cannot maintain, a column it does not
//! fill that would get a value, or a log that is not a plain heap table is refused before
//! anything is written. Runs as the capture trigger does, with
//! rowsync's owner's rights: it writes only the log, whose relation and sequence it finds
//! by name in rowsync's own schema.

use crate::jsonb::{self, Jsonb};
use pgrx::pg_sys;
use pgrx::prelude::*;
use serde_json::Value;
use std::cell::Cell;
use std::ffi::CString;

/// A change as the log stores it.
pub struct Change<'a> {
    /// The synced relation (its registry entry's, for a partition its root's).
    pub rel: pg_sys::Oid,
    pub tx_id: Option<&'a str>,
    pub tbl: &'a str,
    pub row_id: Option<&'a str>,
    pub version: Option<i64>,
    pub kind: &'a str,
    pub old_scopes: Option<Value>,
    pub new_scopes: Option<Value>,
}

thread_local! {
    /// The log's relation and the sequence of its cursor column: looking a sequence up
    /// scans pg_depend, so it is kept for as long as the log is the same relation.
    static CURSOR_SEQUENCE: Cell<Option<(pg_sys::Oid, pg_sys::Oid)>> = const { Cell::new(None) };
}

/// Forgets the cursor's sequence when the log's definition may have changed (`None`: any
/// relation's), so that an identity made again is found again. Called from the relcache
/// callback: it records only.
pub fn forget(relid: Option<u32>) {
    if let Some((log, _)) = CURSOR_SEQUENCE.get() {
        if relid.is_none_or(|r| r == log.to_u32()) {
            CURSOR_SEQUENCE.set(None);
        }
    }
}

/// Appends `change` under the writer's top-level transaction; returns its cursor.
pub fn append(change: &Change) -> i64 {
    // SAFETY: the relation is opened, written and closed here, under the lock a SQL
    // INSERT takes (kept to the end of the transaction, as the executor keeps it); every
    // datum formed outlives the insert.
    unsafe {
        let relid = log_relid();
        let rel = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        if (*(*rel).rd_rel).relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char
            || (*rel).rd_tableam != pg_sys::GetHeapamTableAmRoutine()
        {
            error!("rowsync.changes is not a plain heap table: rowsync writes it directly");
        }
        let desc = (*rel).rd_att;
        let natts = (*desc).natts as usize;
        let mut values = vec![pg_sys::Datum::from(0); natts];
        let mut nulls = vec![true; natts];
        let mut cursor = None;
        for i in 0..natts {
            let attribute = (*desc).attrs.as_slice(natts)[i];
            if attribute.attisdropped {
                continue;
            }
            let name = attribute.name();
            let value: Option<pg_sys::Datum> = match name {
                "xid" => Some(pg_sys::Datum::from(pg_sys::GetTopFullTransactionId().value)),
                "cursor" => {
                    let next = next_cursor(relid, attribute.attnum);
                    cursor = Some(next);
                    Some(pg_sys::Datum::from(next))
                }
                "rel" => Some(pg_sys::Datum::from(change.rel)),
                "tx_id" => change.tx_id.map(uuid),
                "tbl" => Some(text(change.tbl)),
                "row_id" => change.row_id.map(text),
                "version" => change.version.map(pg_sys::Datum::from),
                "kind" => Some(text(change.kind)),
                "old_scopes" => change.old_scopes.as_ref().map(jsonb::to_datum),
                "new_scopes" => change.new_scopes.as_ref().map(jsonb::to_datum),
                "at" => Some(pg_sys::Datum::from(pg_sys::GetCurrentTimestamp())),
                "topic" | "payload" => None,
                // A column someone added: left null only if null is what an INSERT
                // without it would store.
                other => {
                    if attribute.attnotnull
                        || attribute.atthasdef
                        || attribute.attgenerated != 0
                        || attribute.attidentity != 0
                    {
                        error!(
                            "rowsync.changes has a column \"{other}\" rowsync does not know, with a default or NOT NULL: rowsync writes the log directly; drop that column"
                        );
                    }
                    None
                }
            };
            if let Some(value) = value {
                values[i] = value;
                nulls[i] = false;
            }
        }
        let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        let indexes = pg_sys::CatalogOpenIndexes(rel);
        refuse_unmaintained_indexes(indexes);
        pg_sys::CatalogTupleInsertWithInfo(rel, tuple, indexes);
        pg_sys::CatalogCloseIndexes(indexes);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        cursor.unwrap_or_else(|| error!("rowsync.changes has no cursor column"))
    }
}

/// An index on an expression, partial or deferrable, or an exclusion constraint, needs the executor
/// to maintain it: a database administrator who adds one to the log gets this error on the
/// next write, not a log whose index lies.
///
/// # Safety
/// `indexes` comes from `CatalogOpenIndexes` and is still open.
unsafe fn refuse_unmaintained_indexes(indexes: pg_sys::CatalogIndexState) {
    // SAFETY: the caller's; the arrays hold ri_NumIndices entries.
    unsafe {
        for i in 0..(*indexes).ri_NumIndices as usize {
            let info = *(*indexes).ri_IndexRelationInfo.add(i);
            let index = *(*indexes).ri_IndexRelationDescs.add(i);
            if !(*info).ii_Expressions.is_null()
                || !(*info).ii_Predicate.is_null()
                || !(*info).ii_ExclusionOps.is_null()
                || !(*(*index).rd_index).indimmediate
            {
                error!(
                    "rowsync.changes has an index on an expression, a partial or deferrable index, or an exclusion constraint: rowsync writes the log without the executor, and cannot maintain it; drop that index"
                );
            }
        }
    }
}

fn log_relid() -> pg_sys::Oid {
    // SAFETY: catalog lookups by name; both raise when missing.
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"rowsync".as_ptr(), false);
        let relid = pg_sys::get_relname_relid(c"changes".as_ptr(), schema);
        if relid == pg_sys::InvalidOid {
            error!("rowsync.changes is missing: reinstall the extension");
        }
        relid
    }
}

/// The next value of the cursor column's identity sequence, as the column's default
/// would take it.
fn next_cursor(relid: pg_sys::Oid, attnum: i16) -> i64 {
    let sequence = match CURSOR_SEQUENCE.get() {
        Some((log, sequence)) if log == relid => sequence,
        _ => {
            // SAFETY: a dependency lookup; raises when the column has no sequence.
            let sequence = unsafe { pg_sys::getIdentitySequence(relid, attnum, false) };
            CURSOR_SEQUENCE.set(Some((relid, sequence)));
            sequence
        }
    };
    // SAFETY: nextval by oid on a sequence that exists; it checks the current user's
    // rights, which are rowsync's owner's here.
    unsafe {
        pgrx::direct_function_call::<i64>(
            pg_sys::nextval_oid,
            &[Some(pg_sys::Datum::from(sequence))],
        )
    }
    .unwrap_or_else(|| error!("nextval returned null"))
}

fn text(value: &str) -> pg_sys::Datum {
    let value =
        CString::new(value).unwrap_or_else(|_| error!("rowsync: a NUL character in a change"));
    // SAFETY: copies the string into a text datum in the current memory context.
    pg_sys::Datum::from(unsafe { pg_sys::cstring_to_text(value.as_ptr()) })
}

/// A uuid datum from the id `rowsync.apply` validated.
fn uuid(id: &str) -> pg_sys::Datum {
    let id = CString::new(id).unwrap_or_default();
    // SAFETY: uuid_in raises on text that is not a uuid.
    unsafe {
        pgrx::direct_function_call_as_datum(
            pg_sys::uuid_in,
            &[Some(pg_sys::Datum::from(id.as_ptr()))],
        )
    }
    .unwrap_or_else(|| error!("uuid_in returned null"))
}

/// A value as `to_jsonb` converts it: Postgres's own conversion for its type (the one
/// `jsonb_build_object` applies to each value), called with the expression that tells
/// it the argument's type.
pub fn to_json(datum: Option<pg_sys::Datum>, typid: pg_sys::Oid) -> Value {
    let Some(datum) = datum else {
        return Value::Null;
    };
    // SAFETY: a built-in function called through fmgr with a well-formed call expression
    // for an argument of type `typid`, which `datum` is.
    unsafe {
        let function = pg_sys::Oid::from(pg_sys::F_TO_JSONB);
        let argument = pg_sys::makeNullConst(typid, -1, pg_sys::InvalidOid);
        let call = pg_sys::makeFuncExpr(
            function,
            pg_sys::JSONBOID,
            pg_sys::lappend(std::ptr::null_mut(), argument.cast()),
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        let mut flinfo = pg_sys::FmgrInfo::default();
        pg_sys::fmgr_info(function, &mut flinfo);
        flinfo.fn_expr = call.cast();
        let jsonb = pg_sys::FunctionCall1Coll(&mut flinfo, pg_sys::InvalidOid, datum);
        Jsonb::from_polymorphic_datum(jsonb, false, pg_sys::JSONBOID).map_or(Value::Null, |j| j.0)
    }
}
