//! The outbox: messages written with the transaction that decided them,
//! delivered afterwards by `notify::Deliverer`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct Message {
    pub id: i64,
    pub tenant_id: Option<Uuid>,
    pub dedup_key: String,
    pub channel: String,
    pub payload: Value,
    pub attempts: i32,
}

/// Queues a message outside a step (the API's own events), in the caller's transaction.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    dedup_key: &str,
    channel: &str,
    payload: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (tenant_id, dedup_key, channel, payload) VALUES ($1, $2, $3, $4)
         ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(dedup_key)
    .bind(channel)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims due messages for `lock`, counting an attempt for each.
pub async fn claim_due(pool: &PgPool, limit: i64, lock: Duration) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (
            SELECT id FROM outbox
            WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()
              AND (locked_until IS NULL OR locked_until < clock_timestamp())
            ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED
         )
         UPDATE outbox o SET locked_until = clock_timestamp() + $2 * interval '1 millisecond', attempts = attempts + 1
         FROM due WHERE o.id = due.id
         RETURNING o.id, o.tenant_id, o.dedup_key, o.channel, o.payload, o.attempts",
    )
    .bind(limit)
    .bind(lock.as_secs_f64() * 1000.0)
    .fetch_all(pool)
    .await
}

pub async fn mark_sent(pool: &PgPool, id: i64, note: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET status = 'sent', sent_at = clock_timestamp(), locked_until = NULL, last_error = $2
         WHERE id = $1",
    )
    .bind(id)
    .bind(note)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn mark_retry(pool: &PgPool, id: i64, error: &str, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET next_attempt_at = $3, locked_until = NULL, last_error = $2 WHERE id = $1")
        .bind(id)
        .bind(error)
        .bind(at)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn mark_failed(pool: &PgPool, id: i64, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET status = 'failed', locked_until = NULL, last_error = $2 WHERE id = $1")
        .bind(id)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Messages not yet sent (the notification backlog).
pub async fn backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status = 'pending'").fetch_one(pool).await
}
