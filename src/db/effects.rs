//! The effects ledger: one row per external call, keyed by its idempotency key.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct Entry {
    pub key: String,
    pub status: String,
    pub attempts: i32,
    pub response: Option<Value>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Effect {
    pub key: String,
    pub step: String,
    pub name: String,
    pub status: String,
    pub attempts: i32,
    pub response: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An external call about to be made.
#[derive(Debug, Clone)]
pub struct Begin {
    pub key: String,
    pub run_id: Uuid,
    pub step: String,
    pub name: String,
}

/// Records that the calls are about to be made, committed before they are.
/// A second `begin` of the same key counts an attempt and returns what is
/// known. The keys must be distinct.
pub async fn begin_many(pool: &PgPool, begins: &[&Begin]) -> Result<HashMap<String, Entry>, sqlx::Error> {
    let keys: Vec<&str> = begins.iter().map(|b| b.key.as_str()).collect();
    let runs: Vec<Uuid> = begins.iter().map(|b| b.run_id).collect();
    let steps: Vec<&str> = begins.iter().map(|b| b.step.as_str()).collect();
    let names: Vec<&str> = begins.iter().map(|b| b.name.as_str()).collect();
    let entries: Vec<Entry> = sqlx::query_as(
        "INSERT INTO effects (key, run_id, step, name, status)
         SELECT key, run_id, step, name, 'pending' FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[])
                AS b(key, run_id, step, name)
         ON CONFLICT (key) DO UPDATE SET
            attempts = effects.attempts + CASE WHEN effects.status = 'pending' THEN 1 ELSE 0 END,
            updated_at = clock_timestamp()
         RETURNING key, status, attempts, response, error",
    )
    .bind(&keys)
    .bind(&runs)
    .bind(&steps)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    Ok(entries.into_iter().map(|e| (e.key.clone(), e)).collect())
}

// The staged statements here and in `purchases` find their rows with
// `= ANY (ARRAY(...))` as well as the join: the planner takes a
// `jsonb_to_recordset` for 100 rows whatever it holds, and on a table of a few
// thousand rows (a new install, a benchmark) it then reads the whole table
// for every batch; an array of keys is an index condition at any size.

/// Staged (see `StepCtx::stage`) with rows `{key, response}`: the call succeeded.
pub const SUCCEED: &str = "UPDATE effects e SET status = 'succeeded', response = x.response, error = NULL,
            updated_at = clock_timestamp()
     FROM jsonb_to_recordset($1) AS x(key text, response jsonb)
     WHERE e.key = x.key AND e.status = 'pending'
       AND e.key = ANY (ARRAY(SELECT r->>'key' FROM jsonb_array_elements($1) AS r))";

/// Staged with rows `{key, error}`: the other side refused, for good.
pub const FAIL: &str = "UPDATE effects e SET status = 'failed', error = x.error, updated_at = clock_timestamp()
     FROM jsonb_to_recordset($1) AS x(key text, error text)
     WHERE e.key = x.key AND e.status = 'pending'
       AND e.key = ANY (ARRAY(SELECT r->>'key' FROM jsonb_array_elements($1) AS r))";

/// Notes why the outcome of a call is unknown; the row stays pending.
pub async fn note_error(pool: &PgPool, key: &str, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE effects SET error = $2, updated_at = clock_timestamp() WHERE key = $1 AND status = 'pending'")
        .bind(key)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn for_run(pool: &PgPool, run_id: Uuid) -> Result<Vec<Effect>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key, step, name, status, attempts, response, error, created_at, updated_at
         FROM effects WHERE run_id = $1 ORDER BY created_at",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

/// Lets the calls of `step` that failed for good be made again (same key):
/// an operator replays a step after fixing what made it fail.
pub async fn reopen_failed(conn: &mut PgConnection, run_id: Uuid, step: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE effects SET status = 'pending', updated_at = clock_timestamp()
         WHERE run_id = $1 AND step = $2 AND status = 'failed'",
    )
    .bind(run_id)
    .bind(step)
    .execute(conn)
    .await?
    .rows_affected())
}
