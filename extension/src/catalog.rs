//! What rowsync knows of a synced table: its name in ops, its quoted name in SQL, its
//! primary key and its columns' types, read from the registry and the catalog.

use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, SpiClient};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

pub struct SyncedTable {
    pub name: String,
    /// `schema.table`, quoted by regclass output; safe to splice into SQL.
    pub qualified: String,
    pub pk: String,
    /// `format_type` of the key's type, e.g. `uuid`; safe to splice as a cast.
    pub pk_type: String,
    pub columns: HashMap<String, Column>,
}

pub struct Column {
    pub type_name: String,
    /// pg_type.typcategory: S string, N numeric, B boolean, D date/time, A array, U user…
    pub category: char,
    /// For arrays, the element type's category.
    pub elem_category: Option<char>,
}

impl Column {
    pub fn is_json(&self) -> bool {
        self.type_name == "jsonb" || self.type_name == "json"
    }

    pub fn is_array(&self) -> bool {
        self.category == 'A'
    }
}

const LOOKUP: &str = "
SELECT jsonb_build_object(
    'qualified', s.rel::text,
    'pk', s.pk,
    'pk_type', format_type(s.pk_type, NULL),
    'columns', (
        SELECT jsonb_object_agg(a.attname, jsonb_build_object(
            'type', t.typname, 'category', t.typcategory, 'elem_category', et.typcategory))
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
        WHERE a.attrelid = s.rel AND a.attnum > 0 AND NOT a.attisdropped))
FROM rowsync.synced s
WHERE s.name = $1";

/// What a call reads before anything else, in one statement, unless the backend has it
/// cached: the settings it needs, and for each table it names the registry row (which
/// table, and which version of the row: enable and disable write a new one).
const CONTEXT: &str = "
SELECT jsonb_build_object(
    'max_ops', (SELECT max_ops FROM rowsync.settings),
    'doc_max_update_bytes', (SELECT doc_max_update_bytes FROM rowsync.settings),
    'settings', 'rowsync.settings'::regclass::oid::bigint,
    'tables', (SELECT coalesce(jsonb_object_agg(s.name,
                   jsonb_build_array(s.rel::oid::bigint, s.xmin::text, s.ctid::text)), '{}')
               FROM rowsync.synced s WHERE s.name = ANY($1::text[])))";

/// The settings calls read, cached per backend.
#[derive(Clone, Copy)]
struct Settings {
    max_ops: usize,
    doc_max_update_bytes: usize,
}

/// The settings a call needs, and the registry rows of the tables it names.
pub struct Context {
    /// Most ops in a transaction, most pointers in a get.
    pub max_ops: usize,
    /// Most bytes one document update may hold.
    pub doc_max_update_bytes: usize,
    /// `None` when every table came from the backend's cache, with no statement.
    registry: Option<serde_json::Map<String, Value>>,
}

impl Context {
    /// The context of a call naming `names`. Without a statement when the backend has
    /// the settings and every table cached: a change to either invalidates the cache
    /// (the registry's and the settings' triggers send a relcache invalidation, which
    /// every backend takes in when its next transaction starts).
    pub fn read(client: &mut SpiClient<'_>, names: Vec<String>) -> Context {
        forget_changed();
        let cached = SETTINGS
            .get()
            .filter(|_| TABLES.with(|t| names.iter().all(|n| t.borrow().contains_key(n))));
        if let Some(settings) = cached {
            return Context {
                max_ops: settings.max_ops,
                doc_max_update_bytes: settings.doc_max_update_bytes,
                registry: None,
            };
        }
        let mut context =
            crate::sql::json_row(client, CONTEXT, &[names.into()]).unwrap_or_default();
        let settings = Settings {
            max_ops: context["max_ops"].as_u64().unwrap_or(1000) as usize,
            doc_max_update_bytes: context["doc_max_update_bytes"].as_u64().unwrap_or(8 << 20)
                as usize,
        };
        SETTINGS_RELID.set(context["settings"].as_u64().map(|oid| oid as u32));
        SETTINGS.set(Some(settings));
        Context {
            max_ops: settings.max_ops,
            doc_max_update_bytes: settings.doc_max_update_bytes,
            registry: Some(match context["tables"].take() {
                Value::Object(tables) => tables,
                _ => Default::default(),
            }),
        }
    }

    /// The synced table ops call `name`, or `None` when no table of that name was
    /// synced when the context was read. Cached per backend until its registry row or
    /// its definition changes.
    pub fn table(&self, client: &mut SpiClient<'_>, name: &str) -> Option<Rc<SyncedTable>> {
        match &self.registry {
            Some(registry) => SyncedTable::lookup(client, name, registry.get(name)?.clone()),
            None => TABLES.with(|t| t.borrow().get(name).map(|c| c.table.clone())),
        }
    }
}

/// Drops the cached tables whose definitions changed since the last call.
fn forget_changed() {
    let changed = CHANGED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    if changed.is_empty() {
        return;
    }
    TABLES.with(|t| {
        let mut t = t.borrow_mut();
        if changed.contains(&None) {
            t.clear();
        } else {
            t.retain(|_, c| !changed.contains(&Some(c.oid)));
        }
    });
}

struct Cached {
    registry: Value,
    oid: u32,
    table: Rc<SyncedTable>,
}

thread_local! {
    static TABLES: RefCell<HashMap<String, Cached>> = RefCell::new(HashMap::new());
    /// Tables whose definition changed since the cache last looked: Postgres reports
    /// every ALTER TABLE (ours or another backend's, once committed) to relcache
    /// callbacks. `None` in the list means "any table".
    static CHANGED: RefCell<Vec<Option<u32>>> = const { RefCell::new(Vec::new()) };
    /// The settings calls need, until rowsync.settings changes.
    static SETTINGS: Cell<Option<Settings>> = const { Cell::new(None) };
    /// The oid of rowsync.settings, to tell its invalidations from others.
    static SETTINGS_RELID: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Registers the relcache callback. Called once per backend, from `_PG_init`.
pub fn watch_definitions() {
    // SAFETY: registering a callback in _PG_init is what the API is for; the callback
    // only records the relation id and never calls back into Postgres.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(definition_changed), pg_sys::Datum::from(0));
        // A cached table is named `schema.table`: a renamed schema makes that text name
        // another table (or one a role created under the old name), and renaming a
        // schema invalidates no relation.
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
            Some(schema_changed),
            pg_sys::Datum::from(0),
        );
    };
}

#[pg_guard]
unsafe extern "C-unwind" fn schema_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    // SAFETY: as definition_changed: it only records, and never calls into Postgres.
    unsafe { definition_changed(pg_sys::Datum::from(0), pg_sys::InvalidOid) };
}

#[pg_guard]
unsafe extern "C-unwind" fn definition_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    CHANGED.with(|changed| {
        let mut changed = changed.borrow_mut();
        // Invalidations arrive in bursts (a VACUUM, a schema migration); past a few
        // hundred, forgetting everything is cheaper than remembering each.
        if changed.len() > 256 {
            changed.clear();
            changed.push(None);
        }
        let relid = (relid != pg_sys::InvalidOid).then(|| relid.to_u32());
        if relid.is_none() || relid == SETTINGS_RELID.get() {
            SETTINGS.set(None);
        }
        changed.push(relid);
        crate::capture::forget(relid);
        crate::changelog::forget(relid);
    });
}

impl SyncedTable {
    /// `registry` is the table's registry row, read by a statement that took in any
    /// pending invalidations on its way.
    fn lookup(client: &mut SpiClient<'_>, name: &str, registry: Value) -> Option<Rc<SyncedTable>> {
        forget_changed();
        let cached = TABLES.with(|t| {
            t.borrow()
                .get(name)
                .filter(|c| c.registry == registry)
                .map(|c| c.table.clone())
        });
        if let Some(table) = cached {
            return Some(table);
        }
        let oid = registry[0].as_u64().unwrap_or_default() as u32;
        let table = Rc::new(SyncedTable::load(client, name)?);
        TABLES.with(|t| {
            let mut t = t.borrow_mut();
            if t.len() > 256 {
                t.clear();
            }
            t.insert(
                name.to_string(),
                Cached {
                    registry,
                    oid,
                    table: table.clone(),
                },
            );
        });
        Some(table)
    }

    fn load(client: &mut SpiClient<'_>, name: &str) -> Option<SyncedTable> {
        let info = crate::sql::json_row(client, LOOKUP, &[name.into()])?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let category = |v: &Value| v.as_str().and_then(|s| s.chars().next());
        let columns = info["columns"]
            .as_object()?
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    Column {
                        type_name: text(&c["type"]),
                        category: category(&c["category"]).unwrap_or('U'),
                        elem_category: category(&c["elem_category"]),
                    },
                )
            })
            .collect();
        Some(SyncedTable {
            name: name.to_string(),
            qualified: text(&info["qualified"]),
            pk: text(&info["pk"]),
            pk_type: text(&info["pk_type"]),
            columns,
        })
    }

    pub fn quoted_pk(&self) -> String {
        quote_identifier(&self.pk)
    }

    /// `SELECT to_jsonb(t) … WHERE pk = $1` with an optional locking clause.
    pub fn select_row_sql(&self, lock: &str) -> String {
        format!(
            "SELECT to_jsonb(t) FROM {} AS t WHERE t.{} = $1::{} {lock}",
            self.qualified,
            self.quoted_pk(),
            self.pk_type
        )
    }
}
