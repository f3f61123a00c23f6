//! Creating tenants and their credentials. API keys and webhook secrets are
//! random; only the key's SHA-256 is stored, so the key is shown once.

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db;

/// The providers whose webhooks Bursar signs-checks with a per-tenant secret
/// it generates itself (Stripe and PayPal bring their own).
pub const GENERATED_SECRETS: [&str; 2] = ["sandbox", "voucher"];

#[derive(Debug, Serialize)]
pub struct NewTenant {
    pub tenant_id: Uuid,
    pub api_key: String,
    pub webhook_secrets: serde_json::Map<String, serde_json::Value>,
}

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

pub fn hash_api_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

pub async fn create(pool: &PgPool, name: &str) -> anyhow::Result<NewTenant> {
    let name = name.trim();
    anyhow::ensure!(!name.is_empty() && name.len() <= 200, "a tenant name has 1 to 200 characters");
    let tenant_id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    db::tenants::insert(&mut tx, tenant_id, name).await?;
    let api_key = random_token("bsk_");
    db::tenants::insert_api_key(&mut tx, tenant_id, "default", &hash_api_key(&api_key)).await?;
    let mut webhook_secrets = serde_json::Map::new();
    for provider in GENERATED_SECRETS {
        let secret = random_token("whsec_");
        db::tenants::upsert_webhook_secret(&mut tx, tenant_id, provider, &secret).await?;
        webhook_secrets.insert(provider.to_owned(), secret.into());
    }
    tx.commit().await?;
    Ok(NewTenant { tenant_id, api_key, webhook_secrets })
}

/// A new API key for an existing tenant (the demo tenant gets one per start,
/// since a key cannot be shown twice).
pub async fn issue_key(pool: &PgPool, tenant_id: Uuid, name: &str) -> anyhow::Result<String> {
    let api_key = random_token("bsk_");
    let mut conn = pool.acquire().await?;
    db::tenants::insert_api_key(&mut conn, tenant_id, name, &hash_api_key(&api_key)).await?;
    Ok(api_key)
}

/// A new webhook secret for `provider`; the previous one stays valid for `grace`.
pub async fn rotate_webhook_secret(
    pool: &PgPool,
    tenant_id: Uuid,
    provider: &str,
    grace: std::time::Duration,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        GENERATED_SECRETS.contains(&provider),
        "Bursar generates secrets for {}",
        GENERATED_SECRETS.join(", ")
    );
    let secret = random_token("whsec_");
    let until = db::webhooks::rotate(pool, tenant_id, provider, &secret, grace)
        .await?
        .ok_or_else(|| anyhow::anyhow!("tenant {tenant_id} has no {provider} secret"))?;
    Ok(
        serde_json::json!({"tenant_id": tenant_id, "provider": provider, "webhook_secret": secret, "previous_valid_until": until}),
    )
}
