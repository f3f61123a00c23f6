//! A run's mailbox.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct StoredSignal {
    pub id: i64,
    pub name: String,
    pub dedup_key: String,
    pub payload: Value,
    pub received_at: DateTime<Utc>,
    pub consumed_at: Option<DateTime<Utc>>,
    pub consumed_by_step: Option<String>,
}

/// Stores a signal unless one with the same key was stored for this run.
/// Returns its id, or None for a duplicate. The caller holds the run's lock.
pub async fn insert(
    conn: &mut PgConnection,
    run_id: Uuid,
    name: &str,
    dedup_key: &str,
    payload: &Value,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO signals (run_id, name, dedup_key, payload) VALUES ($1, $2, $3, $4)
         ON CONFLICT (run_id, dedup_key) DO NOTHING RETURNING id",
    )
    .bind(run_id)
    .bind(name)
    .bind(dedup_key)
    .bind(payload)
    .fetch_optional(conn)
    .await
}

/// Makes a waiting run ready because a signal it waits for arrived.
pub async fn wake(conn: &mut PgConnection, run_id: Uuid, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE runs SET status = 'ready', wake_at = clock_timestamp(), updated_at = clock_timestamp()
         WHERE id = $1 AND status = 'waiting' AND $2 = ANY(waiting_for)",
    )
    .bind(run_id)
    .bind(name)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        super::runs::notify(&mut *conn).await?;
    }
    Ok(done.rows_affected() > 0)
}

/// The oldest unconsumed signal among `names`, for a step resuming from a wait.
pub async fn oldest_unconsumed(
    pool: &PgPool,
    run_id: Uuid,
    names: &[String],
) -> Result<Option<StoredSignal>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, dedup_key, payload, received_at, consumed_at, consumed_by_step FROM signals
         WHERE run_id = $1 AND consumed_at IS NULL AND name = ANY($2) ORDER BY id LIMIT 1",
    )
    .bind(run_id)
    .bind(names)
    .fetch_optional(pool)
    .await
}

pub async fn for_run(pool: &PgPool, run_id: Uuid) -> Result<Vec<StoredSignal>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, dedup_key, payload, received_at, consumed_at, consumed_by_step FROM signals
         WHERE run_id = $1 ORDER BY id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}
