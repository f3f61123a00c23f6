//! The sandbox provider's books.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

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

/// What a request changes in the books, on the one call that applies it:
/// SQL over the request's arguments (`$5`, a JSON object) that acts only
/// `WHERE EXISTS (SELECT FROM applying)`.
pub struct Apply(&'static str);

pub const OPEN_CHARGE: Apply = Apply(
    "INSERT INTO sandbox_charges (reference, tenant_id, purchase_id, payment_method, currency, amount_minor, status)
     SELECT a.reference, a.tenant_id, a.purchase_id, a.payment_method, a.currency, a.amount_minor, a.status
     FROM jsonb_to_record($5) AS a(reference text, tenant_id uuid, purchase_id uuid, payment_method text,
                                   currency text, amount_minor int8, status text)
     WHERE EXISTS (SELECT FROM applying)",
);

pub const CAPTURE: Apply = Apply(
    "UPDATE sandbox_charges SET status = 'captured', captured_minor = captured_minor + ($5->>'minor')::int8,
            updated_at = clock_timestamp()
     WHERE reference = $5->>'reference' AND EXISTS (SELECT FROM applying)",
);

pub const REFUND: Apply = Apply(
    "UPDATE sandbox_charges SET refunded_minor = refunded_minor + ($5->>'minor')::int8, updated_at = clock_timestamp()
     WHERE reference = $5->>'reference' AND EXISTS (SELECT FROM applying)",
);

pub const VOID: Apply = Apply(
    "UPDATE sandbox_charges SET status = 'voided', updated_at = clock_timestamp()
     WHERE reference = $5->>'reference' AND EXISTS (SELECT FROM applying)",
);

/// One call of a request, in one statement: counts it under its
/// idempotency key and, on the call that applies the request (the first
/// after `outage` failed ones), makes the change and stores `result`, the
/// answer every later call with the key gets. Returns the call's number and
/// the stored answer (none yet during the outage).
pub async fn request(
    pool: &PgPool,
    key: &str,
    operation: &str,
    outage: i32,
    result: &Value,
    apply: Apply,
    args: &Value,
) -> Result<(i32, Option<Value>), sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH req AS (
            INSERT INTO sandbox_requests AS r (idempotency_key, operation, result)
            VALUES ($1, $2, CASE WHEN $4 = 0 THEN $3::jsonb END)
            ON CONFLICT (idempotency_key) DO UPDATE SET calls = r.calls + 1,
                result = CASE WHEN r.result IS NULL AND r.calls = $4 THEN $3::jsonb ELSE r.result END
            RETURNING calls, result
         ),
         applying AS (SELECT FROM req WHERE calls = $4 + 1),
         applied AS ({})
         SELECT calls, result FROM req",
        apply.0
    )))
    .bind(key)
    .bind(operation)
    .bind(result)
    .bind(outage)
    .bind(args)
    .fetch_one(pool)
    .await
}

pub async fn request_result(pool: &PgPool, key: &str) -> Result<Option<Value>, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, Option<Value>>("SELECT result FROM sandbox_requests WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?
        .flatten())
}

pub async fn charge(pool: &PgPool, reference: &str) -> Result<Option<Charge>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {CHARGE_COLUMNS} FROM sandbox_charges WHERE reference = $1")))
        .bind(reference)
        .fetch_optional(pool)
        .await
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
