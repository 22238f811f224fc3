//! `rowsync._visible_for`: one identity's probe for `rowsync.visible_rows` — which rows of
//! a batch the current role and claims may see, with their data. Per table one statement,
//! planned once per backend and kept: Postgres plans it again only when the role changes
//! (a plan under row-level security is the role's), and reads the claims as it runs, so
//! each call answers for the identity set at that moment.

use crate::catalog::Context;
use crate::sql::json_rows;
use pgrx::prelude::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// `tables[i]`, `ids[i]`: the batch's rows. `wanted`: the indexes asked about. `known`:
/// indexes whose data this role was already sent (NULL data for those). Returns
/// (index, data) for each wanted row the caller may see.
pub fn rows(tables: &[String], ids: &[String], wanted: &[i32], known: &[i32]) -> Vec<(i32, Option<Value>)> {
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
        let names = by_table.keys().map(|t| t.to_string()).collect();
        let context = Context::read(client, names);
        let mut found = Vec::new();
        for (name, indexes) in by_table {
            let Some(table) = context.table(client, name) else {
                continue;
            };
            let index_of: HashMap<&str, i32> = indexes
                .iter()
                .map(|&i| (ids[i as usize].as_str(), i))
                .collect();
            let asked: Vec<String> = index_of.keys().map(|id| id.to_string()).collect();
            let sent: Vec<String> = indexes
                .iter()
                .filter(|i| known.contains(i))
                .map(|&i| ids[i as usize].clone())
                .collect();
            let sql = format!(
                "SELECT jsonb_build_array(t.{pk}::text, \
                     CASE WHEN t.{pk}::text = ANY ($2) THEN NULL ELSE to_jsonb(t) END) \
                 FROM {q} AS t WHERE t.{pk} = ANY ($1::text[]::{pk_type}[])",
                q = table.qualified,
                pk = table.quoted_pk(),
                pk_type = table.pk_type,
            );
            for pair in json_rows(client, &sql, &[asked.into(), sent.into()]) {
                let index = pair[0].as_str().and_then(|id| index_of.get(id));
                if let Some(&index) = index {
                    let data = Some(pair[1].clone()).filter(|d| !d.is_null());
                    found.push((index, data));
                }
            }
        }
        found
    })
}
