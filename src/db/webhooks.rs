//! Webhook events received from providers.

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub async fn secret(pool: &PgPool, tenant_id: Uuid, provider: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT secret FROM webhook_secrets WHERE tenant_id = $1 AND provider = $2")
        .bind(tenant_id)
        .bind(provider)
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
