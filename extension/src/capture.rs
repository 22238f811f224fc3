//! The capture trigger, `rowsync._capture()`: bumps the row's version and appends the
//! change to the log, in the writer's transaction. TRUNCATE logs one `truncate` change.
//!
//! It trusts nothing a caller can choose. Anyone may attach a trigger function they can
//! EXECUTE, and it runs with its owner's rights, so it finds its table by the relation it
//! fires on (`tg_relation`) in the registry, fires only as the trigger rowsync.enable
//! creates (by name, timing and level), and ignores its arguments. Registering a table is
//! limited to the table's owner (the registry's policy), so a role can only ever log
//! changes of its own tables, under their own names. The transaction id a change carries
//! is one only `rowsync.apply` sets, in this backend's memory.
//!
//! In Rust rather than PL/pgSQL because every write to a synced table pays for it: the
//! change goes to the log without a statement (`crate::changelog`), and Postgres itself
//! turns each scope value into JSON, by the conversion `to_jsonb` uses for its type.
//! Nothing a search_path could redirect runs with the owner's rights (the registry lookup
//! names every operator by schema), and scope types must convert to JSON by built-in code
//! (`json_safe`), so no cast a role wrote does either.

use crate::changelog::{self, Change};
use crate::sql::{json_row, raise};
use pgrx::prelude::*;
use pgrx::{heap_getattr_raw, PgTupleDesc};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::num::NonZeroUsize;
use std::rc::Rc;

const VERSION: &str = "version";
/// The names rowsync.enable gives its triggers.
const ROW_TRIGGER: &str = "zzz_rowsync_capture";
const TRUNCATE_TRIGGER: &str = "zzz_rowsync_truncate";

/// A synced table as the registry describes it.
struct Definition {
    /// The registered relation: the trigger's own, or, for a partition, its root's.
    rel: pg_sys::Oid,
    name: String,
    pk: String,
    scopes: Vec<String>,
}

thread_local! {
    /// Registry rows by relation id, until the relation or its registry row changes
    /// (both reach `forget` through the relcache callback).
    static DEFINITIONS: RefCell<HashMap<u32, Rc<Definition>>> = RefCell::new(HashMap::new());
    /// The cursor of the change this backend logged last.
    static LAST_CURSOR: Cell<Option<i64>> = const { Cell::new(None) };
    /// The transaction id `rowsync.apply` is writing under, while it writes.
    static TX_ID: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Forgets a relation's definition, and its partitions' (`None`: every relation). Called
/// from the relcache callback, and when a (sub)transaction aborts: a lookup made inside a
/// statement that then failed may have read a registry row that never committed, and an
/// aborted command's invalidations are not replayed.
pub fn forget(relid: Option<u32>) {
    DEFINITIONS.with(|d| match (d.try_borrow_mut(), relid) {
        (Ok(mut d), Some(relid)) => d.retain(|k, def| *k != relid && def.rel.to_u32() != relid),
        (Ok(mut d), None) => d.clear(),
        (Err(_), _) => {}
    });
}

#[pg_trigger(sql = false)]
fn _capture<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, pgrx::datum::TryFromDatumError> {
    let data = trigger.trigger_data();
    let event = data.tg_event;
    let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
    let before = event & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_BEFORE;
    let per_row = event & pg_sys::TRIGGER_EVENT_ROW != 0;
    // SAFETY: Postgres called us as a trigger: its trigger and relation are valid.
    let (name, relid) = unsafe {
        (
            CStr::from_ptr((*data.tg_trigger).tgname).to_string_lossy(),
            (*data.tg_relation).rd_id,
        )
    };
    let expected = if op == pg_sys::TRIGGER_EVENT_TRUNCATE {
        (TRUNCATE_TRIGGER, false)
    } else {
        (ROW_TRIGGER, true)
    };
    if !before || per_row != expected.1 || name != expected.0 {
        refuse(&format!(
            "rowsync._capture fires only as the trigger rowsync.enable creates, not as \"{name}\""
        ));
    }
    let Some(table) = definition(relid) else {
        refuse("rowsync._capture fired on a table that is not synced")
    };
    crate::wakeup::changed();
    if op == pg_sys::TRIGGER_EVENT_TRUNCATE {
        let cursor = changelog::append(&Change {
            rel: table.rel,
            tx_id: tx_id().as_deref(),
            tbl: &table.name,
            row_id: None,
            version: None,
            kind: "truncate",
            old_scopes: None,
            new_scopes: None,
        });
        LAST_CURSOR.set(Some(cursor));
        return Ok(None);
    }
    let (key, scopes) = (&table.pk, &table.scopes);
    // SAFETY: Postgres called us as a row trigger; the relation and its tuples are valid
    // for the duration of the call.
    let tupdesc = unsafe { PgTupleDesc::from_pg_unchecked((*data.tg_relation).rd_att) };
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
    let scopes_of = |row: Option<&Row>| match row {
        Some(row) if !scopes.is_empty() => Some(Value::Object(
            scopes.iter().map(|s| (s.clone(), row.json(s))).collect(),
        )),
        _ => None,
    };
    let mut cursor = None;
    for (kind, id, version, old, new) in &changes {
        cursor = Some(changelog::append(&Change {
            rel: table.rel,
            tx_id: tx_id.as_deref(),
            tbl: &table.name,
            row_id: id.as_deref(),
            version: Some(*version),
            kind,
            old_scopes: scopes_of(*old),
            new_scopes: scopes_of(*new),
        }));
    }
    LAST_CURSOR.set(cursor);

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
    Ok(returned)
}

/// The registry row of a relation, or of its partition root: row triggers on a
/// partitioned table fire on its partitions. Every operator is named with its schema: the
/// trigger runs as rowsync's owner, under the writer's search_path, and an operator of the
/// writer's own would otherwise run with the owner's rights.
const LOOKUP: &str = "SELECT pg_catalog.jsonb_build_array(s.rel::pg_catalog.oid::pg_catalog.int8, s.name, s.pk, s.scopes) \
     FROM rowsync.synced s \
     WHERE s.rel::pg_catalog.oid OPERATOR(pg_catalog.=) \
           COALESCE(pg_catalog.pg_partition_root($1::pg_catalog.regclass), $1::pg_catalog.regclass)::pg_catalog.oid";

/// The registry's definition of the relation, `None` when it is not synced.
fn definition(relid: pg_sys::Oid) -> Option<Rc<Definition>> {
    let key = relid.to_u32();
    if let Some(found) = DEFINITIONS.with(|d| d.borrow().get(&key).cloned()) {
        return Some(found);
    }
    let row = Spi::connect_mut(|client| json_row(client, LOOKUP, &[relid.into()]))?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let definition = Rc::new(Definition {
        rel: pg_sys::Oid::from(row[0].as_u64().unwrap_or_default() as u32),
        name: text(&row[1]),
        pk: text(&row[2]),
        scopes: row[3]
            .as_array()
            .map(|s| s.iter().map(text).collect())
            .unwrap_or_default(),
    });
    DEFINITIONS.with(|d| {
        let mut d = d.borrow_mut();
        if d.len() > 256 {
            d.clear();
        }
        d.insert(key, definition.clone());
    });
    Some(definition)
}

/// Aborts the statement before anything is logged: 39P01, the SQLSTATE Postgres gives a
/// trigger function used the wrong way (pgrx can raise only the built-in codes).
fn refuse(message: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
        message.to_string(),
        "the capture trigger logs only the tables rowsync.enable registered, as the triggers it created"
            .to_string(),
        "sync the table with rowsync.enable(table) instead of attaching rowsync._capture",
    )
}

/// A registry row changed (enable, disable, or an owner's direct edit): every backend
/// must forget its cached definition of the tables it names, at commit.
#[pg_trigger(sql = false)]
fn _registry_changed<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, pgrx::datum::TryFromDatumError> {
    // Only on rowsync.synced: attached elsewhere, it would invalidate arbitrary relations.
    // SAFETY: Postgres called us as a trigger; its relation is valid.
    let relid = unsafe { (*trigger.trigger_data().tg_relation).rd_id };
    // SAFETY: catalog lookups by name.
    let synced = unsafe {
        pg_sys::get_relname_relid(
            c"synced".as_ptr(),
            pg_sys::get_namespace_oid(c"rowsync".as_ptr(), false),
        )
    };
    if relid != synced {
        refuse("rowsync._registry_changed fires only on rowsync.synced");
    }
    for row in [trigger.old(), trigger.new()].into_iter().flatten() {
        if let Some(rel) = row.get_by_name::<pg_sys::Oid>("rel")? {
            // SAFETY: the relation id is checked to exist before it is invalidated.
            unsafe {
                if pg_sys::SearchSysCacheExists(
                    pg_sys::SysCacheIdentifier::RELOID as i32,
                    pg_sys::Datum::from(rel),
                    pg_sys::Datum::from(0),
                    pg_sys::Datum::from(0),
                    pg_sys::Datum::from(0),
                ) {
                    pg_sys::CacheInvalidateRelcacheByRelid(rel);
                }
            }
        }
    }
    Ok(None)
}

/// The cursor of the last change logged since the previous call: `rowsync.apply` calls it
/// before its writes and after them. The triggers that AFTER triggers and foreign-key
/// cascades fire run in this backend too, so their changes count.
pub fn take_last_cursor() -> Option<i64> {
    LAST_CURSOR.take()
}

/// Credits the changes logged while the returned guard lives to transaction `id`. The
/// guard puts back what was there before (an `apply` nested in a trigger of another
/// leaves the outer one's credit in place), however the writes end, error included.
pub fn credit_to(id: &str) -> Credit {
    Credit(TX_ID.with(|t| t.borrow_mut().replace(id.to_string())))
}

pub struct Credit(Option<String>);

impl Drop for Credit {
    fn drop(&mut self) {
        TX_ID.with(|t| *t.borrow_mut() = self.0.take());
    }
}

fn tx_id() -> Option<String> {
    TX_ID.with(|t| t.borrow().clone())
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

    /// The column as JSON, converted by Postgres for its type. A scope column dropped
    /// since the table was enabled reads as null, as a missing field of a row does.
    fn json(&self, name: &str) -> Value {
        let Some((datum, oid)) = self.datum(name) else {
            return Value::Null;
        };
        if !json_safe(oid) {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("rowsync: scope column \"{name}\" converts to JSON through code a role wrote"),
                "the capture trigger runs with rowsync's owner's rights, so scope values must convert to JSON by built-in code".to_string(),
                "use a built-in type, a domain over one, or an enum without a cast to json",
            )
        }
        changelog::to_json(datum, oid)
    }
}

/// Whether Postgres turns values of type `oid` into JSON by built-in code only. Scope
/// values are converted in the capture trigger, which runs as rowsync's owner: a cast to
/// json that a type's owner wrote would run with those rights. `to_jsonb` looks
/// through domains, and looks for such a cast only on types that are not built in; arrays
/// and composites of such types convert their elements the same way, so they are refused.
/// Checked at every write, not cached: creating a cast invalidates no table.
pub fn json_safe(oid: pg_sys::Oid) -> bool {
    if oid.to_u32() < pg_sys::FirstNormalObjectId {
        return true;
    }
    // SAFETY: catalog lookups by oid.
    unsafe {
        let base = pg_sys::getBaseType(oid);
        if base.to_u32() < pg_sys::FirstNormalObjectId {
            return true;
        }
        let cast_to = |target: pg_sys::Oid| {
            pg_sys::SearchSysCacheExists(
                pg_sys::SysCacheIdentifier::CASTSOURCETARGET as i32,
                pg_sys::Datum::from(base),
                pg_sys::Datum::from(target),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
            )
        };
        pg_sys::type_is_enum(base) && !cast_to(pg_sys::JSONOID) && !cast_to(pg_sys::JSONBOID)
    }
}

/// rowsync.settings changed: every backend must forget the settings it cached, at commit
/// (a row update alone tells no backend anything).
#[pg_trigger(sql = false)]
fn _settings_changed<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, pgrx::datum::TryFromDatumError> {
    // SAFETY: Postgres called us as a trigger; its relation is valid. Invalidating the
    // relation the trigger fires on touches nothing else.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid((*trigger.trigger_data().tg_relation).rd_id) };
    Ok(None)
}
