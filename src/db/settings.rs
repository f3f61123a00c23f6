//! Tenant settings, stored as the validated JSON of `domain::settings`.

use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// (lms, notifications, providers); defaults when the tenant never set any.
pub async fn get(conn: impl PgExecutor<'_>, tenant_id: Uuid) -> Result<(Value, Value, Value), sqlx::Error> {
    let row: Option<(Value, Value, Value)> =
        sqlx::query_as("SELECT lms, notifications, providers FROM tenant_settings WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.unwrap_or_else(|| (default_lms(), serde_json::json!({}), serde_json::json!({}))))
}

/// The LMS target of a tenant that never set one: Bursar records enrollments itself.
pub fn default_lms() -> Value {
    serde_json::json!({"type": "none"})
}

pub async fn put(
    conn: impl PgExecutor<'_>,
    tenant_id: Uuid,
    lms: &Value,
    notifications: &Value,
    providers: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_settings (tenant_id, lms, notifications, providers) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id) DO UPDATE SET lms = excluded.lms, notifications = excluded.notifications,
            providers = excluded.providers, updated_at = clock_timestamp()",
    )
    .bind(tenant_id)
    .bind(lms)
    .bind(notifications)
    .bind(providers)
    .execute(conn)
    .await?;
    Ok(())
}
