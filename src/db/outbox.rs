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

/// What became of a claimed message.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Sent, or done with (`note` says why nothing was sent).
    Sent { note: Option<String> },
    /// To be tried again at `at`.
    Retry { error: String, at: DateTime<Utc> },
    /// Given up.
    Failed { error: String },
}

/// Records what became of claimed messages, in one statement, and releases
/// their claim.
pub async fn record(pool: &PgPool, outcomes: &[(i64, Delivery)]) -> Result<(), sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = outcomes.iter().map(|(id, _)| *id).collect();
    let statuses: Vec<&str> = outcomes
        .iter()
        .map(|(_, d)| match d {
            Delivery::Sent { .. } => "sent",
            Delivery::Retry { .. } => "pending",
            Delivery::Failed { .. } => "failed",
        })
        .collect();
    let notes: Vec<Option<&str>> = outcomes
        .iter()
        .map(|(_, d)| match d {
            Delivery::Sent { note } => note.as_deref(),
            Delivery::Retry { error, .. } | Delivery::Failed { error } => Some(error.as_str()),
        })
        .collect();
    let retry_at: Vec<Option<DateTime<Utc>>> =
        outcomes.iter().map(|(_, d)| if let Delivery::Retry { at, .. } = d { Some(*at) } else { None }).collect();
    sqlx::query(
        "UPDATE outbox o SET status = x.status, last_error = x.note, locked_until = NULL,
                sent_at = CASE WHEN x.status = 'sent' THEN clock_timestamp() ELSE o.sent_at END,
                next_attempt_at = COALESCE(x.retry_at, o.next_attempt_at)
         FROM unnest($1::int8[], $2::text[], $3::text[], $4::timestamptz[]) AS x(id, status, note, retry_at)
         WHERE o.id = x.id",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&notes)
    .bind(&retry_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Messages not yet sent (the notification backlog).
pub async fn backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status = 'pending'").fetch_one(pool).await
}
