//! The capture trigger, `rowsync._capture(name, key column, scope columns…)`: bumps the
//! row's version and appends the change to the log, in the writer's transaction.
//!
//! In Rust rather than PL/pgSQL because every write to a synced table pays for it: a
//! PL/pgSQL trigger spent half its time in the interpreter, in converting whole rows with
//! `to_jsonb` to read two fields, and in its pinned search_path. Here one cached statement
//! logs the change, and Postgres itself turns the scope values into JSON
//! (`jsonb_build_object` over typed parameters), exactly as `to_jsonb` would.
//!
//! It runs with its owner's rights (SECURITY DEFINER, declared in functions.sql) without a
//! pinned search_path: its one statement names every object by schema and calls nothing
//! that a search_path could redirect.

use crate::sql::{json_row, json_rows};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::quote_literal;
use pgrx::{heap_getattr_raw, PgTupleDesc};
use std::cell::Cell;
use std::ffi::CStr;
use std::num::NonZeroUsize;

const VERSION: &str = "version";

#[pg_trigger(sql = false)]
fn _capture<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, pgrx::datum::TryFromDatumError> {
    let data = trigger.trigger_data();
    // Anyone may attach this function (CREATE TRIGGER needs EXECUTE on it): refuse any
    // use but the one rowsync.enable makes, before touching a tuple.
    let event = data.tg_event;
    if event & pg_sys::TRIGGER_EVENT_ROW == 0
        || event & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_BEFORE
    {
        error!("rowsync._capture must fire BEFORE … FOR EACH ROW (use rowsync.enable)");
    }
    let args = trigger.extra_args().unwrap_or_default();
    let (table, key, scopes) = match args.as_slice() {
        [table, key, scopes @ ..] => (table, key, scopes),
        _ => error!("rowsync._capture needs the table's name and key column as arguments"),
    };
    // SAFETY: Postgres called us as a row trigger; the relation and its tuples are valid
    // for the duration of the call.
    let tupdesc = unsafe { PgTupleDesc::from_pg_unchecked((*data.tg_relation).rd_att) };
    let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
    let (old, new) = match op {
        pg_sys::TRIGGER_EVENT_INSERT => (None, Some(data.tg_trigtuple)),
        pg_sys::TRIGGER_EVENT_UPDATE => (Some(data.tg_trigtuple), Some(data.tg_newtuple)),
        _ => (Some(data.tg_trigtuple), None),
    };
    let read = |tuple: Option<*mut pg_sys::HeapTupleData>| {
        tuple.map(|t| Row {
            tuple: t,
            tupdesc: &tupdesc,
        })
    };
    let (old, new) = (read(old), read(new));
    // Rows written before the table was synced may lack a version.
    let old_version = old.as_ref().map(|o| o.version().unwrap_or(0));
    let version = match op {
        pg_sys::TRIGGER_EVENT_INSERT => 1,
        _ => old_version.unwrap_or(0) + 1,
    };
    let old_id = old.as_ref().map(|o| o.text(key));
    let new_id = new.as_ref().map(|n| n.text(key));

    let mut changes = Vec::new();
    match (&old_id, &new_id) {
        // A changed key is the old id deleted and the new one inserted.
        (Some(o), Some(n)) if o != n => {
            changes.push(("delete", o.clone(), version, old.as_ref(), None));
            changes.push(("insert", n.clone(), version, None, new.as_ref()));
        }
        _ => {
            let kind = match op {
                pg_sys::TRIGGER_EVENT_INSERT => "insert",
                pg_sys::TRIGGER_EVENT_UPDATE => "update",
                _ => "delete",
            };
            let id = new_id.or(old_id).flatten();
            changes.push((kind, id, version, old.as_ref(), new.as_ref()));
        }
    }

    let tx_id = tx_id();
    let mut sql = String::from(
        "INSERT INTO rowsync.changes (tx_id, tbl, row_id, version, kind, old_scopes, new_scopes) VALUES ",
    );
    let mut params: Vec<DatumWithOid<'_>> = vec![tx_id.into(), table.as_str().into()];
    for (i, (kind, id, version, old, new)) in changes.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("($1::pg_catalog.uuid, $2");
        for value in [
            id.clone()
                .map_or(DatumWithOid::null::<String>(), |id| id.into()),
            (*version).into(),
            (*kind).into(),
        ] {
            params.push(value);
            sql.push_str(&format!(", ${}", params.len()));
        }
        for row in [old, new] {
            sql.push_str(", ");
            match row {
                Some(row) if !scopes.is_empty() => {
                    sql.push_str("pg_catalog.jsonb_build_object(");
                    for (j, scope) in scopes.iter().enumerate() {
                        // Typed parameters (the plan cache keys on their types): Postgres
                        // converts each value to JSON by its own type.
                        params.push(row.typed(scope));
                        let comma = if j > 0 { ", " } else { "" };
                        sql.push_str(&format!(
                            "{comma}{}, ${}",
                            quote_literal(scope),
                            params.len()
                        ));
                    }
                    sql.push(')');
                }
                _ => sql.push_str("NULL"),
            }
        }
        sql.push(')');
    }
    // The cursor taken, and the wake-up count: read in the same statement, and in place,
    // outside any snapshot: a writer sees a listener fall asleep at once (sql.md, the
    // listener protocol).
    sql.push_str(
        " RETURNING pg_catalog.jsonb_build_array(cursor, \
         pg_catalog.pg_sequence_last_value('rowsync.sleepers'::pg_catalog.regclass))",
    );

    let returned = match new {
        Some(new) if op != pg_sys::TRIGGER_EVENT_DELETE => {
            // SAFETY: the tuple is the trigger's, valid for this call.
            let row = unsafe { PgHeapTuple::from_heap_tuple(tupdesc.clone(), new.tuple) };
            let mut row = row.into_owned();
            row.set_by_name(VERSION, version)?;
            Some(row)
        }
        _ => old.map(|old| {
            // SAFETY: as above.
            unsafe { PgHeapTuple::from_heap_tuple(tupdesc.clone(), old.tuple) }.into_owned()
        }),
    };
    Spi::connect_mut(|client| {
        let logged = json_rows(client, &sql, &params);
        let last = |i: usize| logged.iter().filter_map(|r| r[i].as_i64()).max();
        LAST_CURSOR.set(last(0));
        // Identical payloads within one transaction are delivered once: one NOTIFY per
        // transaction, and none while every listener is awake and polling.
        if last(1).unwrap_or(0) > 0 {
            json_row(
                client,
                "SELECT pg_catalog.to_jsonb(pg_catalog.pg_notify('rowsync', pg_catalog.pg_current_xact_id()::pg_catalog.text))",
                &[],
            );
        }
    });
    Ok(returned)
}

thread_local! {
    /// The cursor of the change this backend logged last.
    static LAST_CURSOR: Cell<Option<i64>> = const { Cell::new(None) };
}

/// The cursor of the last change logged since the previous call: `rowsync.apply` calls it
/// before its writes and after them. The triggers that AFTER triggers and foreign-key
/// cascades fire run in this backend too, so their changes count.
pub fn take_last_cursor() -> Option<i64> {
    LAST_CURSOR.take()
}

/// The transaction id `rowsync.apply` set for the capture to log, if any.
fn tx_id() -> Option<String> {
    // SAFETY: reading a custom setting; missing_ok so an unset one is NULL.
    let value = unsafe { pg_sys::GetConfigOption(c"rowsync.tx_id".as_ptr(), true, false) };
    if value.is_null() {
        return None;
    }
    // SAFETY: Postgres returns a NUL-terminated string it owns.
    let text = unsafe { CStr::from_ptr(value) }
        .to_string_lossy()
        .into_owned();
    (!text.is_empty()).then_some(text)
}

/// One of the trigger's rows, read column by column.
struct Row<'t> {
    tuple: *mut pg_sys::HeapTupleData,
    tupdesc: &'t PgTupleDesc<'t>,
}

impl Row<'_> {
    fn attribute(&self, name: &str) -> Option<(NonZeroUsize, &pg_sys::FormData_pg_attribute)> {
        self.tupdesc
            .iter()
            .enumerate()
            .find(|(_, a)| !a.is_dropped() && a.name() == name)
            .and_then(|(i, a)| Some((NonZeroUsize::new(i + 1)?, a)))
    }

    /// The column's value and type; `None` when the table has no such column.
    fn datum(&self, name: &str) -> Option<(Option<pg_sys::Datum>, pg_sys::Oid)> {
        let (number, a) = self.attribute(name)?;
        // SAFETY: the tuple belongs to this descriptor and lives for the call.
        let datum = unsafe { heap_getattr_raw(self.tuple, number, self.tupdesc.as_ptr()) };
        Some((datum, a.atttypid))
    }

    fn version(&self) -> Option<i64> {
        match self.datum(VERSION) {
            // SAFETY: the column is a bigint, checked just here.
            Some((datum, pg_sys::INT8OID)) => {
                datum.and_then(|d| unsafe { i64::from_polymorphic_datum(d, false, pg_sys::INT8OID) })
            }
            _ => error!("rowsync._capture: the table needs a bigint column \"{VERSION}\" (use rowsync.enable)"),
        }
    }

    /// The column as text, with its type's output function (the key, as ops name it).
    fn text(&self, name: &str) -> Option<String> {
        let Some((datum, oid)) = self.datum(name) else {
            error!("rowsync._capture: the table has no key column \"{name}\"")
        };
        let datum = datum?;
        let mut output = pg_sys::Oid::INVALID;
        let mut varlena = false;
        // SAFETY: standard type output lookup and call for a non-null datum of type oid.
        unsafe {
            pg_sys::getTypeOutputInfo(oid, &mut output, &mut varlena);
            let text = pg_sys::OidOutputFunctionCall(output, datum);
            Some(CStr::from_ptr(text).to_string_lossy().into_owned())
        }
    }

    /// The column as a parameter of its own type. A scope column dropped since the table
    /// was enabled reads as null, as a missing field of a row does in JSON.
    fn typed(&self, name: &str) -> DatumWithOid<'static> {
        match self.datum(name) {
            // SAFETY: the datum is of type oid and lives as long as the trigger's tuple,
            // which outlives the statement it is passed to.
            Some((Some(d), oid)) => unsafe { DatumWithOid::new(d, oid) },
            Some((None, oid)) => DatumWithOid::null_oid(oid),
            None => DatumWithOid::null::<String>(),
        }
    }
}
