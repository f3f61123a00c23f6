//! The sandbox provider's books.

use std::collections::HashMap;

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

/// A call of a request to the sandbox. `operation` says what the request
/// changes in the books on the one call that applies it (the first after
/// `outage` failed ones): `authorize` opens the charge described by `args`,
/// `capture`, `refund` and `void` change the charge `args.reference` (by
/// `args.minor`).
#[derive(Debug, Clone)]
pub struct Request {
    pub key: String,
    pub operation: &'static str,
    pub outage: i32,
    /// The answer to store on the applying call, and give every later one.
    pub result: Value,
    pub args: Value,
}

/// Calls of many requests in one statement: each is counted under its
/// idempotency key and, on its applying call, changes the books and stores
/// its result. Returns, by key, the call's number and the stored answer
/// (none yet during an outage). A key, and a charge, may appear once per
/// statement: two changes of one row in one statement would lose one.
pub async fn requests(
    pool: &PgPool,
    requests: &[&Request],
) -> Result<HashMap<String, (i32, Option<Value>)>, sqlx::Error> {
    let keys: Vec<&str> = requests.iter().map(|r| r.key.as_str()).collect();
    let operations: Vec<&str> = requests.iter().map(|r| r.operation).collect();
    let results: Vec<&Value> = requests.iter().map(|r| &r.result).collect();
    let outages: Vec<i32> = requests.iter().map(|r| r.outage).collect();
    let args: Vec<&Value> = requests.iter().map(|r| &r.args).collect();
    let rows: Vec<(String, i32, Option<Value>)> = sqlx::query_as(
        "WITH input AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int4[], $5::jsonb[])
              AS i(key, operation, result, outage, args)
         ),
         req AS (
            INSERT INTO sandbox_requests AS r (idempotency_key, operation, result)
            SELECT key, operation, CASE WHEN outage = 0 THEN result END FROM input
            ON CONFLICT (idempotency_key) DO UPDATE SET calls = r.calls + 1,
                result = CASE WHEN r.result IS NULL AND r.calls = (SELECT outage FROM input WHERE key = r.idempotency_key)
                              THEN (SELECT result FROM input WHERE key = r.idempotency_key)
                              ELSE r.result END
            RETURNING idempotency_key, calls, result
         ),
         applying AS (
            SELECT input.* FROM req JOIN input ON input.key = req.idempotency_key WHERE req.calls = input.outage + 1
         ),
         opened AS (
            INSERT INTO sandbox_charges (reference, tenant_id, purchase_id, payment_method, currency, amount_minor, status)
            SELECT c.reference, c.tenant_id, c.purchase_id, c.payment_method, c.currency, c.amount_minor, c.status
            FROM applying, jsonb_to_record(applying.args) AS c(reference text, tenant_id uuid, purchase_id uuid,
                                                             payment_method text, currency text, amount_minor int8, status text)
            WHERE applying.operation = 'authorize'
         ),
         captured AS (
            UPDATE sandbox_charges c SET status = 'captured', captured_minor = c.captured_minor + (a.args->>'minor')::int8,
                   updated_at = clock_timestamp()
            FROM applying a WHERE a.operation = 'capture' AND c.reference = a.args->>'reference'
         ),
         refunded AS (
            UPDATE sandbox_charges c SET refunded_minor = c.refunded_minor + (a.args->>'minor')::int8,
                   updated_at = clock_timestamp()
            FROM applying a WHERE a.operation = 'refund' AND c.reference = a.args->>'reference'
         ),
         voided AS (
            UPDATE sandbox_charges c SET status = 'voided', updated_at = clock_timestamp()
            FROM applying a WHERE a.operation = 'void' AND c.reference = a.args->>'reference'
         )
         SELECT idempotency_key, calls, result FROM req",
    )
    .bind(&keys)
    .bind(&operations)
    .bind(&results)
    .bind(&outages)
    .bind(&args)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(key, calls, result)| (key, (calls, result))).collect())
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
