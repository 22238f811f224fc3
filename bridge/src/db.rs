//! Queries as the user: one transaction each, with the role and claims set the PostgREST
//! way, so existing row-level security policies apply unchanged.

use crate::auth::Claims;
use crate::errors::Error;
use crate::yjs::DocKey;
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

const SET_CONTEXT: &str =
    "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)";

/// Runs `sql` as the user, in a transaction of its own, and commits; returns its rows.
async fn user_rows(
    pool: &Pool,
    claims: &Claims,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let context = tx.prepare_cached(SET_CONTEXT).await?;
    tx.execute(&context, &[&claims.role, &&*claims.raw]).await?;
    let statement = tx.prepare_cached(sql).await?;
    let rows = tx.query(&statement, params).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Runs `sql` (whose one result is a jsonb value) as the user, and commits.
pub async fn as_user(
    pool: &Pool,
    claims: &Claims,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Value, Error> {
    let rows = user_rows(pool, claims, sql, params).await?;
    let value: Option<Value> = rows.first().and_then(|row| row.get(0));
    Ok(value.unwrap_or(Value::Null))
}

/// What the user may do with a document, as `rowsync._doc_access` answers.
pub struct DocAccess {
    /// `write`, `read`, or `None` (not visible).
    pub access: Option<String>,
    /// The row's id as Postgres spells it.
    pub id: String,
    /// What appends are held to, for those who may read it.
    pub limits: Option<DocLimits>,
}

/// A document's stored size and the limits an append must keep within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocLimits {
    pub stored_bytes: i64,
    pub max_bytes: i64,
    pub max_update_bytes: i64,
}

pub async fn doc_access(pool: &Pool, claims: &Claims, doc: &DocKey) -> Result<DocAccess, Error> {
    let answer = as_user(
        pool,
        claims,
        "SELECT rowsync._raise_if_error(rowsync._doc_access($1, $2, $3))",
        &[&doc.table, &doc.id, &doc.col],
    )
    .await?;
    let number = |key: &str| answer[key].as_i64();
    let limits = match (
        number("bytes"),
        number("max_bytes"),
        number("max_update_bytes"),
    ) {
        (Some(stored_bytes), Some(max_bytes), Some(max_update_bytes)) => Some(DocLimits {
            stored_bytes,
            max_bytes,
            max_update_bytes,
        }),
        _ => None,
    };
    Ok(DocAccess {
        access: answer["access"].as_str().map(str::to_string),
        id: answer["id"].as_str().unwrap_or(&doc.id).to_string(),
        limits,
    })
}

/// A document's stored parts as the user may read them: the snapshot (if any), then
/// the log in order.
pub async fn doc_parts(pool: &Pool, claims: &Claims, doc: &DocKey) -> Result<Vec<Vec<u8>>, Error> {
    let rows = user_rows(
        pool,
        claims,
        "SELECT snapshot, updates FROM rowsync.doc_parts($1, $2, $3)",
        &[&doc.table, &doc.id, &doc.col],
    )
    .await?;
    let mut parts = Vec::new();
    for row in rows {
        parts.extend(row.get::<_, Option<Vec<u8>>>(0));
        parts.extend(row.get::<_, Option<Vec<Vec<u8>>>>(1).unwrap_or_default());
    }
    Ok(parts)
}

/// Appends the user's updates to a document; the change's cursor (`None`: all empty).
pub async fn doc_append(
    pool: &Pool,
    claims: &Claims,
    doc: &DocKey,
    updates: &[Vec<u8>],
    origin: &str,
) -> Result<Option<i64>, Error> {
    let rows = user_rows(
        pool,
        claims,
        "SELECT rowsync.doc_append($1, $2, $3, $4, $5)",
        &[&doc.table, &doc.id, &doc.col, &updates, &origin],
    )
    .await?;
    Ok(rows.first().and_then(|row| row.get(0)))
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
