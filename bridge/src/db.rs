//! Queries as the user: one transaction each, with the role and claims set the PostgREST
//! way, so existing row-level security policies apply unchanged.

use crate::auth::Claims;
use crate::errors::Error;
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::types::ToSql;

const SET_CONTEXT: &str =
    "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)";

/// Runs `sql` (whose one result is a jsonb value) as the user, and commits.
pub async fn as_user(
    pool: &Pool,
    claims: &Claims,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Value, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let context = tx.prepare_cached(SET_CONTEXT).await?;
    tx.execute(&context, &[&claims.role, &&*claims.raw]).await?;
    let statement = tx.prepare_cached(sql).await?;
    let row = tx.query_one(&statement, params).await?;
    let value: Option<Value> = row.get(0);
    tx.commit().await?;
    Ok(value.unwrap_or(Value::Null))
}

pub async fn apply(pool: &Pool, claims: &Claims, tx: &Value) -> Result<Value, Error> {
    as_user(pool, claims, "SELECT rowsync.apply($1)", &[tx]).await
}

pub async fn get(pool: &Pool, claims: &Claims, pointers: &Value) -> Result<Value, Error> {
    as_user(pool, claims, "SELECT rowsync.get($1)", &[pointers]).await
}

/// The rows of a scope (`None`: of the whole table) the user may see, and the name of the
/// table's key column: `{"rows": […], "pk": "id"}`.
pub async fn list(
    pool: &Pool,
    claims: &Claims,
    table: &str,
    scope: Option<(&str, &str)>,
    max: i32,
) -> Result<Value, Error> {
    let sql = "SELECT jsonb_build_object('rows', rowsync.list($1, $2, $3, $4), \
               'pk', (SELECT pk FROM rowsync.synced WHERE name = $1))";
    read_scope(pool, claims, sql, table, scope, max).await
}

/// The ids and versions of the rows of a scope (`None`: of the whole table) the user may
/// see: `[[id, version], …]`.
pub async fn members(
    pool: &Pool,
    claims: &Claims,
    table: &str,
    scope: Option<(&str, &str)>,
    max: i32,
) -> Result<Value, Error> {
    let sql = "SELECT rowsync.members($1, $2, $3, $4)";
    read_scope(pool, claims, sql, table, scope, max).await
}

async fn read_scope(
    pool: &Pool,
    claims: &Claims,
    sql: &str,
    table: &str,
    scope: Option<(&str, &str)>,
    max: i32,
) -> Result<Value, Error> {
    let (column, value) = scope.unzip();
    as_user(pool, claims, sql, &[&table, &column, &value, &max]).await
}

/// Whether the user may follow a scope (`rowsync.scope_visible`) or, with `None`, a whole
/// table (`rowsync.table_visible`).
pub async fn may_follow(
    pool: &Pool,
    claims: &Claims,
    table: &str,
    scope: Option<(&str, &str)>,
) -> Result<bool, Error> {
    let visible = match scope {
        Some((column, value)) => {
            let sql = "SELECT to_jsonb(rowsync.scope_visible($1, $2, $3))";
            as_user(pool, claims, sql, &[&table, &column, &value]).await?
        }
        None => {
            let sql = "SELECT to_jsonb(rowsync.table_visible($1))";
            as_user(pool, claims, sql, &[&table]).await?
        }
    };
    Ok(visible == Value::Bool(true))
}
