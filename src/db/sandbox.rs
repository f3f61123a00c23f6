//! The sandbox provider's books.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::money::Money;
use crate::providers::AuthorizeRequest;

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Charge {
    pub reference: String,
    pub tenant_id: Uuid,
    pub purchase_id: Uuid,
    pub payment_method: String,
    pub currency: String,
    pub amount_minor: i64,
    pub status: String,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const CHARGE_COLUMNS: &str = "reference, tenant_id, purchase_id, payment_method, currency, amount_minor, status, \
    captured_minor, refunded_minor, created_at, updated_at";

/// Counts a request with this key and returns the count and any stored result.
pub async fn note_request(
    conn: &mut PgConnection,
    key: &str,
    operation: &str,
) -> Result<(i32, Option<Value>), sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO sandbox_requests (idempotency_key, operation) VALUES ($1, $2)
         ON CONFLICT (idempotency_key) DO UPDATE SET calls = sandbox_requests.calls + 1
         RETURNING calls, result",
    )
    .bind(key)
    .bind(operation)
    .fetch_one(conn)
    .await
}

pub async fn store_result(conn: &mut PgConnection, key: &str, result: &Value) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sandbox_requests SET result = $2 WHERE idempotency_key = $1")
        .bind(key)
        .bind(result)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn request_result(pool: &PgPool, key: &str) -> Result<Option<Value>, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, Option<Value>>("SELECT result FROM sandbox_requests WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?
        .flatten())
}

pub async fn insert_charge(
    conn: &mut PgConnection,
    reference: &str,
    req: &AuthorizeRequest<'_>,
    amount: Money,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sandbox_charges (reference, tenant_id, purchase_id, payment_method, currency, amount_minor, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(reference)
    .bind(req.tenant_id)
    .bind(req.purchase_id)
    .bind(req.payment_method)
    .bind(amount.currency().code())
    .bind(amount.minor_units())
    .bind(status)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn charge(pool: &PgPool, reference: &str) -> Result<Option<Charge>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {CHARGE_COLUMNS} FROM sandbox_charges WHERE reference = $1")))
        .bind(reference)
        .fetch_optional(pool)
        .await
}

pub async fn capture(conn: &mut PgConnection, reference: &str, minor: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sandbox_charges SET status = 'captured', captured_minor = captured_minor + $2,
                updated_at = clock_timestamp()
         WHERE reference = $1",
    )
    .bind(reference)
    .bind(minor)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn refund(conn: &mut PgConnection, reference: &str, minor: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sandbox_charges SET refunded_minor = refunded_minor + $2, updated_at = clock_timestamp()
         WHERE reference = $1",
    )
    .bind(reference)
    .bind(minor)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn void(conn: &mut PgConnection, reference: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sandbox_charges SET status = 'voided', updated_at = clock_timestamp() WHERE reference = $1")
        .bind(reference)
        .execute(conn)
        .await?;
    Ok(())
}

/// The buyer completed the action: the charge becomes authorized.
pub async fn complete_action(pool: &PgPool, tenant_id: Uuid, reference: &str) -> Result<Option<Charge>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sandbox_charges SET status = 'authorized', updated_at = clock_timestamp()
         WHERE reference = $1 AND tenant_id = $2 AND status = 'requires_action'
         RETURNING {CHARGE_COLUMNS}"
    )))
    .bind(reference)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await
}

pub async fn for_purchase(pool: &PgPool, tenant_id: Uuid, purchase_id: Uuid) -> Result<Vec<Charge>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CHARGE_COLUMNS} FROM sandbox_charges WHERE tenant_id = $1 AND purchase_id = $2 ORDER BY created_at"
    )))
    .bind(tenant_id)
    .bind(purchase_id)
    .fetch_all(pool)
    .await
}
