//! `rowsync._visible_for`: one identity's probe for `rowsync.visible_rows` — which rows of
//! a batch the current role and claims may see, with their data. Per table one statement,
//! planned once per backend and kept: Postgres plans it again only when the role changes
//! (a plan under row-level security is the role's), and reads the claims as it runs, so
//! each call answers for the identity set at that moment.

use crate::catalog::Context;
use crate::sql::{first_column, json_rows};
use pgrx::prelude::*;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

/// `tables[i]`, `ids[i]`: the batch's rows. `wanted`: the indexes asked about. `known`:
/// indexes whose data this role was already sent (NULL data for those). Returns
/// (index, data) for each wanted row the caller may see.
pub fn rows(
    tables: &[String],
    ids: &[String],
    wanted: &[i32],
    known: &[i32],
) -> Vec<(i32, Option<Value>)> {
    let mut by_table: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for &w in wanted {
        if let Some(table) = usize::try_from(w).ok().and_then(|i| tables.get(i)) {
            by_table.entry(table).or_default().push(w);
        }
    }
    if by_table.is_empty() {
        return Vec::new();
    }
    let known: HashSet<i32> = known.iter().copied().collect();
    Spi::connect_mut(|client| {
        let names: Vec<String> = by_table.keys().map(|t| t.to_string()).collect();
        let context = context_of_this_transaction(client, names);
        let mut found = Vec::new();
        for (name, indexes) in by_table {
            let Some(table) = context.table(client, name) else {
                continue;
            };
            let index_of: HashMap<&str, i32> = indexes
                .iter()
                .map(|&i| (ids[i as usize].as_str(), i))
                .collect();
            // Rows whose data this role was sent are only looked for; the others are read.
            let (sent, unsent): (Vec<i32>, Vec<i32>) =
                indexes.iter().partition(|i| known.contains(i));
            for (subset, with_data) in [(sent, false), (unsent, true)] {
                if subset.is_empty() {
                    continue;
                }
                let asked: Vec<String> = subset.iter().map(|&i| ids[i as usize].clone()).collect();
                // The keys are cast in a sub-select: the cast itself is not leakproof, so
                // under row-level security a generic plan could not use it in an index
                // scan; the sub-select's result can be.
                let from = format!(
                    "FROM {q} AS t WHERE t.{pk} = ANY ((SELECT $1::text[]::{pk_type}[])::{pk_type}[])",
                    q = table.qualified,
                    pk = table.quoted_pk(),
                    pk_type = table.pk_type,
                );
                let pk = table.quoted_pk();
                if with_data {
                    let sql = format!("SELECT jsonb_build_array(t.{pk}::text, to_jsonb(t)) {from}");
                    for pair in json_rows(client, &sql, &[asked.into()]) {
                        if let Some(&index) = pair[0].as_str().and_then(|id| index_of.get(id)) {
                            found.push((index, Some(pair[1].clone())));
                        }
                    }
                } else {
                    let sql = format!("SELECT t.{pk}::text {from}");
                    for id in first_column::<String>(client, &sql, &[asked.into()]) {
                        if let Some(&index) = index_of.get(id.as_str()) {
                            found.push((index, None));
                        }
                    }
                }
            }
        }
        found
    })
}

/// A transaction's local id, the tables it named, and what it read of them.
type ReadContext = (u32, Vec<String>, Rc<Context>);

thread_local! {
    /// The registry as this transaction read it, by local transaction id: every identity
    /// of one `visible_rows` call runs in one transaction, and needs it once.
    static CONTEXT: RefCell<Option<ReadContext>> = const { RefCell::new(None) };
}

fn context_of_this_transaction(
    client: &mut pgrx::spi::SpiClient<'_>,
    names: Vec<String>,
) -> Rc<Context> {
    // SAFETY: MyProc is this backend's own PGPROC, set before any function can run.
    let transaction = unsafe { (*pg_sys::MyProc).lxid };
    let cached = CONTEXT.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(t, n, _)| *t == transaction && *n == names)
            .map(|(_, _, context)| context.clone())
    });
    if let Some(context) = cached {
        return context;
    }
    let context = Rc::new(Context::read(client, names.clone()));
    CONTEXT.with(|c| *c.borrow_mut() = Some((transaction, names, context.clone())));
    context
}
