//! Reads over a whole database that judge a run of Bursar rather than serve
//! it: the benchmarks' figures (`bursar bench`) and the books the chaos
//! suite checks (`bursar chaos`). Never on a request or step path: they scan
//! tables, which is what a check after the fact should do.

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// Drops and creates database `name` on the server of `url`, for a
/// benchmark or a chaos run to start from nothing; returns its URL.
pub async fn recreate_database(url: &str, name: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "`{name}` is not a plain database name"
    );
    let mut admin_url = url::Url::parse(url).context("DATABASE_URL is not a URL")?;
    admin_url.set_path("/postgres");
    let mut admin = PgConnection::connect(admin_url.as_str()).await.context("connecting to the server")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
    admin_url.set_path(&format!("/{name}"));
    Ok(admin_url.to_string())
}

/// The database's clock: benchmarks time runs by the clock that stamps them.
pub async fn now(pool: &PgPool) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(pool).await
}

/// How many runs (of `workflow`, or of all) succeeded, and how many ended
/// any other way or were parked: a benchmark run that has some is void.
pub async fn run_tally(pool: &PgPool, workflow: Option<&str>) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                count(*) FILTER (WHERE status IN ('failed', 'parked', 'cancelled'))
         FROM runs WHERE $1::text IS NULL OR workflow = $1",
    )
    .bind(workflow)
    .fetch_one(pool)
    .await
}

/// Runs due or executing now.
pub async fn busy_runs(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM runs WHERE status IN ('ready', 'running')").fetch_one(pool).await
}

/// Seconds from `since` to the last finished run of `workflow`.
pub async fn seconds_to_last_finish(pool: &PgPool, workflow: &str, since: DateTime<Utc>) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar("SELECT extract(epoch FROM max(finished_at) - $2)::float8 FROM runs WHERE workflow = $1")
        .bind(workflow)
        .bind(since)
        .fetch_one(pool)
        .await
}

/// Seconds from `since` to the last message sent.
pub async fn seconds_to_last_send(pool: &PgPool, since: DateTime<Utc>) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar("SELECT extract(epoch FROM max(sent_at) - $1)::float8 FROM outbox WHERE status = 'sent'")
        .bind(since)
        .fetch_one(pool)
        .await
}

/// p50 and p99, in milliseconds, of creation to finish of `workflow`'s runs.
pub async fn run_duration_ms(pool: &PgPool, workflow: &str) -> Result<(f64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
         FROM (SELECT extract(epoch FROM (finished_at - created_at)) * 1000 AS ms FROM runs WHERE workflow = $1) t",
    )
    .bind(workflow)
    .fetch_one(pool)
    .await
}

/// p50 and p99, in milliseconds, of creation to first step of the runs
/// whose idempotency key starts with `key_prefix`.
pub async fn start_latency_ms(pool: &PgPool, key_prefix: &str) -> Result<(f64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
         FROM (SELECT extract(epoch FROM (min(h.started_at) - r.created_at)) * 1000 AS ms
               FROM runs r JOIN run_history h ON h.run_id = r.id
               WHERE starts_with(r.idempotency_key, $1) GROUP BY r.id, r.created_at) t",
    )
    .bind(key_prefix)
    .fetch_one(pool)
    .await
}

/// What a finished benchmark of whole purchases must add up to.
#[derive(Debug, sqlx::FromRow)]
pub struct PurchaseTotals {
    pub runs_succeeded: i64,
    /// Sandbox charges captured for exactly their amount.
    pub captured_in_full: i64,
    pub messages_sent: i64,
}

pub async fn purchase_totals(pool: &PgPool) -> Result<PurchaseTotals, sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM runs WHERE status = 'succeeded') AS runs_succeeded,
                (SELECT count(*) FROM sandbox_charges WHERE captured_minor = amount_minor) AS captured_in_full,
                (SELECT count(*) FROM outbox WHERE status = 'sent') AS messages_sent",
    )
    .fetch_one(pool)
    .await
}

/// A purchase as the chaos checker sees it: its run, what Bursar recorded,
/// and what the provider's books say was captured.
#[derive(Debug, sqlx::FromRow)]
pub struct PurchaseBooks {
    pub id: Uuid,
    pub run_status: String,
    pub run_step: String,
    pub payment_status: String,
    pub total_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub provider_captured_minor: i64,
}

pub async fn purchase_books(pool: &PgPool) -> Result<Vec<PurchaseBooks>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, r.status AS run_status, r.step AS run_step, p.payment_status, p.total_minor,
                p.captured_minor, p.refunded_minor,
                (SELECT coalesce(sum(c.captured_minor), 0)::int8 FROM sandbox_charges c
                 WHERE c.purchase_id = p.id) AS provider_captured_minor
         FROM purchases p JOIN runs r ON r.id = p.run_id",
    )
    .fetch_all(pool)
    .await
}

/// Purchases whose run waits, with their payment status.
pub async fn waiting_purchases(pool: &PgPool) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, p.payment_status FROM purchases p JOIN runs r ON r.id = p.run_id WHERE r.status = 'waiting'",
    )
    .fetch_all(pool)
    .await
}

/// Purchases captured by more than one of the provider's charges.
pub async fn purchases_captured_twice(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT purchase_id FROM sandbox_charges WHERE captured_minor > 0 GROUP BY purchase_id HAVING count(*) > 1",
    )
    .fetch_all(pool)
    .await
}

/// Every seat: its id, its status and its purchase's run status.
pub async fn seats_with_run_status(pool: &PgPool) -> Result<Vec<(Uuid, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id, s.status, r.status FROM seats s JOIN purchases p ON p.id = s.purchase_id
         JOIN runs r ON r.id = p.run_id",
    )
    .fetch_all(pool)
    .await
}

/// Offerings with more active seats than their capacity (an offering's id
/// is the platform's, unique within its tenant only).
pub async fn oversold_offerings(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT o.id FROM offerings o WHERE o.capacity IS NOT NULL AND o.capacity < (
            SELECT count(*) FROM seats s JOIN purchases p ON p.id = s.purchase_id
            WHERE p.tenant_id = o.tenant_id AND p.offering_id = o.id AND s.status = 'active')",
    )
    .fetch_all(pool)
    .await
}

/// Outbox messages still pending and given up.
pub async fn undelivered_messages(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed') FROM outbox",
    )
    .fetch_one(pool)
    .await
}

/// The event ids of the webhooks recorded as delivered to a target.
pub async fn delivered_webhook_ids(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT dedup_key FROM outbox WHERE channel = 'webhook' AND status = 'sent' AND last_error IS NULL",
    )
    .fetch_all(pool)
    .await
}
