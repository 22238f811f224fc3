//! Running statements through SPI. Statement errors raised by Postgres (RLS, constraints)
//! propagate as Postgres errors; SPI's own errors mean a bug here and are raised as such.

use crate::jsonb::Jsonb;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::PgOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult, SpiTupleTable};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Plans kept for the backend's life, by statement text and parameter types: planning,
/// not running, is most of the cost of these small statements. Postgres invalidates a
/// kept plan when the tables under it change.
const MAX_PLANS: usize = 256;

/// The plans made for one statement text, one per list of parameter types.
type Plans = Vec<(Vec<PgOid>, Rc<OwnedPreparedStatement>)>;

thread_local! {
    /// Looked up by `&str`, so a call that finds its plan allocates nothing.
    static PLANS: RefCell<HashMap<String, Plans>> = RefCell::new(HashMap::new());
}

fn plan(
    client: &SpiClient<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> Rc<OwnedPreparedStatement> {
    let same_types = |types: &[PgOid]| {
        types.len() == args.len() && types.iter().zip(args).all(|(t, a)| t.value() == a.oid())
    };
    let found = PLANS.with(|plans| {
        plans
            .borrow()
            .get(sql)?
            .iter()
            .find(|(types, _)| same_types(types))
            .map(|(_, plan)| plan.clone())
    });
    if let Some(plan) = found {
        return plan;
    }
    let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
    let plan = Rc::new(
        client
            .prepare_mut(sql, &types)
            .unwrap_or_else(|e| internal(&format!("rowsync: SPI prepare failed: {e}")))
            .keep(),
    );
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        if plans.len() >= MAX_PLANS {
            plans.clear();
        }
        plans
            .entry(sql.to_string())
            .or_default()
            .push((types, plan.clone()));
    });
    plan
}

/// Runs `sql` and returns the first column of each row, skipping NULLs.
pub fn first_column<T: FromDatum + IntoDatum>(
    client: &mut SpiClient<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> Vec<T> {
    let plan = plan(client, sql, args);
    column(client.update(&*plan, None, args))
}

/// As [`first_column`], planned for this call alone: for a statement on a table that
/// grows (`rowsync.applied`), run rarely. A kept plan is chosen once, for the table's
/// size at the time, and a table that was empty then is scanned whole ever after.
pub fn first_column_planned_now<T: FromDatum + IntoDatum>(
    client: &mut SpiClient<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> Vec<T> {
    column(client.update(sql, None, args))
}

fn column<T: FromDatum + IntoDatum>(result: SpiResult<SpiTupleTable<'_>>) -> Vec<T> {
    result
        .unwrap_or_else(|e| internal(&format!("rowsync: SPI failed: {e}")))
        .filter_map(|row| {
            row.get::<T>(1)
                .unwrap_or_else(|e| internal(&format!("rowsync: SPI result: {e}")))
        })
        .collect()
}

/// Runs `sql` and returns the first column of each row as JSON.
pub fn json_rows(client: &mut SpiClient<'_>, sql: &str, args: &[DatumWithOid<'_>]) -> Vec<Value> {
    first_column::<Jsonb>(client, sql, args)
        .into_iter()
        .map(|j| j.0)
        .collect()
}

/// Runs `sql` and returns the first column of its first row as JSON.
pub fn json_row(client: &mut SpiClient<'_>, sql: &str, args: &[DatumWithOid<'_>]) -> Option<Value> {
    json_rows(client, sql, args).into_iter().next()
}

/// Raises an ERROR. Only for what is found after the first write, when the transaction
/// must abort; everything found before is returned as a [`crate::failure::Failure`].
pub fn raise(code: PgSqlErrorCode, message: String, detail: String, hint: &str) -> ! {
    ErrorReport::new(code, message, function_name!())
        .set_detail(detail)
        .set_hint(hint)
        .report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

fn internal(message: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        message.to_string(),
        "this is a bug in rowsync".to_string(),
        "please report it with the statement that caused it",
    )
}
