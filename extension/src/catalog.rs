//! What rowsync knows of a synced table: its name in ops, its quoted name in SQL, its
//! primary key and its columns' types, read from the registry and the catalog.

use pgrx::spi::{quote_identifier, SpiClient};
use serde_json::Value;
use std::cell::RefCell;
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

/// Which version of a synced table's definition the backend has cached: its oid, the
/// pg_class row's version (ALTER TABLE writes a new one, even within one transaction) and
/// its live columns (DROP COLUMN leaves pg_class alone). Index lookups only, where LOOKUP
/// joins the catalog.
const STAMP: &str = "
SELECT jsonb_build_array(c.oid::bigint, c.xmin::text, c.ctid::text, s.pk, s.pk_type::oid::bigint,
    (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))
FROM rowsync.synced s JOIN pg_class c ON c.oid = s.rel
WHERE s.name = $1";

thread_local! {
    static TABLES: RefCell<HashMap<String, (Value, Rc<SyncedTable>)>> = RefCell::new(HashMap::new());
}

impl SyncedTable {
    /// The synced table ops call `name`, or `None`. Cached per backend while its
    /// definition stays the same.
    pub fn lookup(client: &mut SpiClient<'_>, name: &str) -> Option<Rc<SyncedTable>> {
        let stamp = crate::sql::json_row(client, STAMP, &[name.into()])?;
        let cached = TABLES.with(|t| {
            t.borrow()
                .get(name)
                .filter(|(s, _)| *s == stamp)
                .map(|(_, table)| table.clone())
        });
        if let Some(table) = cached {
            return Some(table);
        }
        let table = Rc::new(SyncedTable::load(client, name)?);
        TABLES.with(|t| {
            let mut t = t.borrow_mut();
            if t.len() > 256 {
                t.clear();
            }
            t.insert(name.to_string(), (stamp, table.clone()));
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
