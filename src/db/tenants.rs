//! Tenants, their API keys (stored as hashes) and webhook secrets.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub async fn insert(conn: &mut PgConnection, id: Uuid, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)").bind(id).bind(name).execute(conn).await?;
    Ok(())
}

pub async fn find_by_name(pool: &PgPool, name: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1 ORDER BY created_at LIMIT 1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

pub async fn insert_api_key(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: &str,
    key_hash: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO api_keys (id, tenant_id, name, key_hash) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(name)
        .bind(key_hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// The tenant and key name a key hash belongs to, if the key is live.
pub async fn find_by_key_hash(pool: &PgPool, key_hash: &[u8]) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as("SELECT tenant_id, name FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .bind(key_hash)
        .fetch_optional(pool)
        .await
}

pub async fn upsert_webhook_secret(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    provider: &str,
    secret: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_secrets (tenant_id, provider, secret) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, provider) DO UPDATE SET secret = excluded.secret, created_at = clock_timestamp()",
    )
    .bind(tenant_id)
    .bind(provider)
    .bind(secret)
    .execute(conn)
    .await?;
    Ok(())
}
