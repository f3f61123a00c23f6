//! Webhook events received from providers.

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The tenant's current secret for `provider` (the one to sign with).
pub async fn secret(pool: &PgPool, tenant_id: Uuid, provider: &str) -> Result<Option<String>, sqlx::Error> {
    Ok(secrets(pool, tenant_id, provider).await?.into_iter().next())
}

/// Every secret a webhook from `provider` may be signed with: the current
/// one, and the previous one while its grace period after a rotation lasts.
pub async fn secrets(pool: &PgPool, tenant_id: Uuid, provider: &str) -> Result<Vec<String>, sqlx::Error> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT secret, CASE WHEN previous_valid_until > clock_timestamp() THEN previous_secret END
         FROM webhook_secrets WHERE tenant_id = $1 AND provider = $2",
    )
    .bind(tenant_id)
    .bind(provider)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(current, previous)| std::iter::once(current).chain(previous).collect()).unwrap_or_default())
}

/// Replaces the secret, keeping the old one valid for `grace`. None if the
/// tenant has no secret for this provider.
pub async fn rotate(
    pool: &PgPool,
    tenant_id: Uuid,
    provider: &str,
    new_secret: &str,
    grace: std::time::Duration,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE webhook_secrets SET previous_secret = secret, secret = $3, created_at = clock_timestamp(),
                previous_valid_until = clock_timestamp() + $4 * interval '1 millisecond'
         WHERE tenant_id = $1 AND provider = $2
         RETURNING previous_valid_until",
    )
    .bind(tenant_id)
    .bind(provider)
    .bind(new_secret)
    .bind(grace.as_secs_f64() * 1000.0)
    .fetch_optional(pool)
    .await
}

/// Stores an event once per (tenant, provider, event id); false for a repeat.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    provider: &str,
    event_id: &str,
    event_type: &str,
    payload: &Value,
    run_id: Option<Uuid>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO webhook_events (tenant_id, provider, event_id, event_type, payload, run_id)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(provider)
    .bind(event_id)
    .bind(event_type)
    .bind(payload)
    .bind(run_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

pub async fn count(pool: &PgPool, tenant_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE tenant_id = $1").bind(tenant_id).fetch_one(pool).await
}
