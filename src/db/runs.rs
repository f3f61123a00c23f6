//! Runs, their history and operator actions: claiming, completing, leasing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::RUNS_CHANNEL;

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Run {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub workflow: String,
    pub version: i32,
    pub idempotency_key: String,
    pub status: String,
    pub step: String,
    pub attempt: i32,
    pub wake_at: Option<DateTime<Utc>>,
    pub context: Value,
    pub waiting_for: Option<Vec<String>>,
    pub lease_owner: Option<String>,
    pub lease_token: i64,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub attempt_started_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
    pub failure_code: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct HistoryEntry {
    pub id: i64,
    pub step: String,
    pub attempt: i32,
    pub lease_token: i64,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Action {
    pub action: String,
    pub reason: String,
    pub actor: String,
    pub from_status: String,
    pub from_step: String,
    pub at: DateTime<Utc>,
}

/// A run as a worker holds it under a lease.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub workflow: String,
    pub version: i32,
    pub step: String,
    pub attempt: i32,
    pub context: Value,
    pub waiting_for: Option<Vec<String>>,
    pub lease_token: i64,
    pub attempt_started_at: DateTime<Utc>,
    /// It was woken by its deadline (or a signal) rather than made ready.
    pub was_waiting: bool,
    pub last_error: Option<String>,
}

/// The row that starts a run (see `Engine::new_run`).
pub struct NewRun {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub workflow: String,
    pub version: i32,
    pub idempotency_key: String,
    pub step: String,
    pub context: Value,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Inserts a run unless one with the same (tenant, idempotency key) exists.
/// Returns the run's id and whether it is new. Safe under concurrent callers:
/// the loser's insert waits for the winner's commit and then finds its row.
pub async fn insert(conn: &mut PgConnection, new: &NewRun) -> Result<(Uuid, bool), sqlx::Error> {
    // Workers are told in the same statement (delivered at commit).
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "WITH inserted AS (
            INSERT INTO runs (id, tenant_id, workflow, version, idempotency_key, status, step, wake_at, context)
            VALUES ($1, $2, $3, $4, $5, 'ready', $6, clock_timestamp(), $7)
            ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
            RETURNING id
         )
         SELECT id FROM inserted CROSS JOIN LATERAL (SELECT pg_notify($8, '')) AS told",
    )
    .bind(new.id)
    .bind(new.tenant_id)
    .bind(&new.workflow)
    .bind(new.version)
    .bind(&new.idempotency_key)
    .bind(&new.step)
    .bind(&new.context)
    .bind(RUNS_CHANNEL)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = inserted {
        return Ok((id, true));
    }
    let existing: Uuid = sqlx::query_scalar("SELECT id FROM runs WHERE tenant_id = $1 AND idempotency_key = $2")
        .bind(new.tenant_id)
        .bind(&new.idempotency_key)
        .fetch_one(&mut *conn)
        .await?;
    Ok((existing, false))
}

/// Inserts many runs of one workflow in one statement (bulk starts, benchmarks).
pub async fn insert_many(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    workflow: &str,
    version: i32,
    step: &str,
    keys: &[String],
    context: &Value,
) -> Result<u64, sqlx::Error> {
    let ids: Vec<Uuid> = keys.iter().map(|_| Uuid::now_v7()).collect();
    let done = sqlx::query(
        "INSERT INTO runs (id, tenant_id, workflow, version, idempotency_key, status, step, wake_at, context)
         SELECT id, $2, $3, $4, key, 'ready', $5, clock_timestamp(), $6
         FROM unnest($1::uuid[], $7::text[]) AS n(id, key)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
    )
    .bind(&ids)
    .bind(tenant_id)
    .bind(workflow)
    .bind(version)
    .bind(step)
    .bind(context)
    .bind(keys)
    .execute(&mut *conn)
    .await?;
    notify(&mut *conn).await?;
    Ok(done.rows_affected())
}

pub async fn notify(conn: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')").bind(RUNS_CHANNEL).execute(conn).await?;
    Ok(())
}

/// Claims up to `limit` due runs for `worker`: ready runs whose time has come
/// and waiting runs whose deadline has passed (or that a signal made ready).
/// Each claim bumps the fencing token and counts an attempt.
pub async fn claim(pool: &PgPool, worker: &str, limit: usize, lease: Duration) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (
            SELECT id, status = 'waiting' AS was_waiting FROM runs
            WHERE status IN ('ready', 'waiting') AND wake_at <= clock_timestamp()
            ORDER BY wake_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
         )
         UPDATE runs r SET status = 'running', lease_owner = $2, lease_token = r.lease_token + 1,
                lease_expires_at = clock_timestamp() + $3 * interval '1 millisecond',
                attempt = r.attempt + 1, attempt_started_at = clock_timestamp(), updated_at = clock_timestamp()
         FROM due WHERE r.id = due.id
         RETURNING r.id, r.tenant_id, r.workflow, r.version, r.step, r.attempt, r.context, r.waiting_for,
                   r.lease_token, r.attempt_started_at, due.was_waiting, r.last_error",
    )
    .bind(limit as i64)
    .bind(worker)
    .bind(millis(lease))
    .fetch_all(pool)
    .await
}

/// The end of one attempt, as the completer writes it.
#[derive(Debug, Clone)]
pub struct Completion {
    pub run_id: Uuid,
    pub lease_token: i64,
    pub executed_step: String,
    pub executed_attempt: i32,
    pub attempt_started_at: DateTime<Utc>,
    pub status: String,
    pub step: String,
    pub attempt: i32,
    pub wake_at: Option<DateTime<Utc>>,
    pub context: Value,
    pub waiting_for: Option<String>,
    pub failure_code: Option<String>,
    pub error: Option<String>,
    pub history_outcome: String,
    pub continue_in_place: bool,
    pub consumed_signal: Option<i64>,
    pub outbox: Vec<(String, String, Value)>,
}

#[derive(Debug, Clone, FromRow)]
pub struct Completed {
    pub id: Uuid,
    pub status: String,
    pub step: String,
    pub attempt_started_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
}

/// Commits a batch of attempt results in one statement: each run's new state,
/// its history row, the signal it consumed and its outbox messages. A row
/// whose lease token no longer matches (the lease expired and another worker
/// took over) changes nothing and is absent from the result.
pub async fn complete(
    tx: &mut Transaction<'_, Postgres>,
    worker: &str,
    lease: Duration,
    batch: &[Completion],
) -> Result<Vec<Completed>, sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|c| c.run_id).collect();
    let tokens: Vec<i64> = batch.iter().map(|c| c.lease_token).collect();
    let statuses: Vec<String> = batch.iter().map(|c| c.status.clone()).collect();
    let steps: Vec<String> = batch.iter().map(|c| c.step.clone()).collect();
    let attempts: Vec<i32> = batch.iter().map(|c| c.attempt).collect();
    let wake_ats: Vec<Option<DateTime<Utc>>> = batch.iter().map(|c| c.wake_at).collect();
    let contexts: Vec<Value> = batch.iter().map(|c| c.context.clone()).collect();
    let waiting: Vec<Option<String>> = batch.iter().map(|c| c.waiting_for.clone()).collect();
    let failures: Vec<Option<String>> = batch.iter().map(|c| c.failure_code.clone()).collect();
    let errors: Vec<Option<String>> = batch.iter().map(|c| c.error.clone()).collect();
    let conts: Vec<bool> = batch.iter().map(|c| c.continue_in_place).collect();
    let hist_steps: Vec<String> = batch.iter().map(|c| c.executed_step.clone()).collect();
    let hist_outcomes: Vec<String> = batch.iter().map(|c| c.history_outcome.clone()).collect();
    let hist_attempts: Vec<i32> = batch.iter().map(|c| c.executed_attempt).collect();
    let hist_started: Vec<DateTime<Utc>> = batch.iter().map(|c| c.attempt_started_at).collect();
    let signals: Vec<Option<i64>> = batch.iter().map(|c| c.consumed_signal).collect();

    let mut ob_runs = Vec::new();
    let mut ob_keys = Vec::new();
    let mut ob_channels = Vec::new();
    let mut ob_payloads = Vec::new();
    for c in batch {
        for (key, channel, payload) in &c.outbox {
            ob_runs.push(c.run_id);
            ob_keys.push(key.clone());
            ob_channels.push(channel.clone());
            ob_payloads.push(payload.clone());
        }
    }

    sqlx::query_as(
        "WITH c AS (
            SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::int4[],
                                 $6::timestamptz[], $7::jsonb[], $8::text[], $9::text[], $10::text[],
                                 $11::bool[], $12::text[], $13::text[], $14::int4[], $15::timestamptz[],
                                 $16::int8[])
              AS c(id, token, status, step, attempt, wake_at, context, waiting_for, failure_code, error,
                   cont, hist_step, hist_outcome, hist_attempt, hist_started_at, signal_id)
         ),
         upd AS (
            UPDATE runs r SET
                status = CASE WHEN c.cont AND r.cancel_requested_at IS NULL THEN 'running' ELSE c.status END,
                step = c.step,
                attempt = CASE WHEN c.cont AND r.cancel_requested_at IS NULL THEN 1 ELSE c.attempt END,
                wake_at = CASE WHEN c.cont AND r.cancel_requested_at IS NULL THEN NULL ELSE c.wake_at END,
                context = c.context,
                waiting_for = string_to_array(c.waiting_for, ','),
                failure_code = c.failure_code,
                last_error = c.error,
                lease_owner = CASE WHEN c.cont AND r.cancel_requested_at IS NULL THEN r.lease_owner END,
                lease_expires_at = CASE WHEN c.cont AND r.cancel_requested_at IS NULL
                                        THEN clock_timestamp() + $17 * interval '1 millisecond' END,
                attempt_started_at = CASE WHEN c.cont AND r.cancel_requested_at IS NULL THEN clock_timestamp() END,
                finished_at = CASE WHEN c.status IN ('succeeded', 'failed', 'cancelled') THEN clock_timestamp() END,
                updated_at = clock_timestamp()
            FROM c
            WHERE r.id = c.id AND r.lease_token = c.token AND r.status = 'running'
            RETURNING r.id, r.status, r.step, r.attempt_started_at, r.cancel_requested_at IS NOT NULL AS cancel_requested
         ),
         hist AS (
            INSERT INTO run_history (run_id, step, attempt, lease_token, worker, started_at, outcome, error)
            SELECT c.id, c.hist_step, c.hist_attempt, c.token, $18, c.hist_started_at, c.hist_outcome, c.error
            FROM c JOIN upd ON upd.id = c.id
         ),
         consumed AS (
            UPDATE signals s SET consumed_at = clock_timestamp(), consumed_by_step = c.hist_step
            FROM c JOIN upd ON upd.id = c.id
            WHERE s.id = c.signal_id AND s.run_id = c.id
         ),
         sent AS (
            INSERT INTO outbox (run_id, tenant_id, dedup_key, channel, payload)
            SELECT o.run_id, (SELECT tenant_id FROM runs WHERE id = o.run_id), o.dedup_key, o.channel, o.payload
            FROM unnest($19::uuid[], $20::text[], $21::text[], $22::jsonb[]) AS o(run_id, dedup_key, channel, payload)
            JOIN upd ON upd.id = o.run_id
            ON CONFLICT (dedup_key) DO NOTHING
         )
         SELECT * FROM upd",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(&statuses)
    .bind(&steps)
    .bind(&attempts)
    .bind(&wake_ats)
    .bind(&contexts)
    .bind(&waiting)
    .bind(&failures)
    .bind(&errors)
    .bind(&conts)
    .bind(&hist_steps)
    .bind(&hist_outcomes)
    .bind(&hist_attempts)
    .bind(&hist_started)
    .bind(&signals)
    .bind(millis(lease))
    .bind(worker)
    .bind(&ob_runs)
    .bind(&ob_keys)
    .bind(&ob_channels)
    .bind(&ob_payloads)
    .fetch_all(&mut **tx)
    .await
}

/// Runs one of the statements steps stage (`engine::Staged`: SQL from this
/// module's siblings, taking a JSON array of rows as `$1`) for the rows of a
/// completion batch, in the completion's transaction.
pub async fn apply_staged(
    tx: &mut Transaction<'_, Postgres>,
    sql: &'static str,
    rows: &[&Value],
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sqlx::types::Json(rows)).execute(&mut **tx).await?;
    Ok(())
}

/// Runs that just started waiting but whose signal is already in the mailbox
/// (it came early, or while the step ran) become ready at once. Runs in the
/// completion's transaction, after its rows are locked, so a signal committed
/// before this statement is seen here and one committed after finds the run
/// waiting (see `signals::deliver`, which locks the run first).
pub async fn wake_if_signalled(tx: &mut Transaction<'_, Postgres>, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE runs r SET status = 'ready', wake_at = clock_timestamp(), updated_at = clock_timestamp()
         WHERE r.id = ANY($1) AND r.status = 'waiting'
           AND EXISTS (SELECT 1 FROM signals s
                       WHERE s.run_id = r.id AND s.consumed_at IS NULL AND s.name = ANY(r.waiting_for))",
    )
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() > 0 {
        notify(&mut **tx).await?;
    }
    Ok(done.rows_affected())
}

/// Keeps alive the leases of `runs`, this worker's runs whose steps are
/// still executing. Only those: a run the worker gave up on (its result
/// could not be committed) must be let lapse so that it is run again.
pub async fn extend_leases(pool: &PgPool, worker: &str, runs: &[Uuid], lease: Duration) -> Result<u64, sqlx::Error> {
    if runs.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        // SKIP LOCKED: a locked row is being completed right now (which sets
        // its lease anyway); waiting for it would stall the heartbeat behind
        // the completer and, locking rows in another order, risk a deadlock.
        "UPDATE runs SET lease_expires_at = clock_timestamp() + $2 * interval '1 millisecond'
         WHERE id IN (SELECT id FROM runs WHERE id = ANY($3) AND lease_owner = $1 AND status = 'running'
                      FOR UPDATE SKIP LOCKED)",
    )
    .bind(worker)
    .bind(millis(lease))
    .bind(runs)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Makes runs ready again whose worker stopped renewing its lease (it died,
/// hung or was cut off), writing the lost attempt into their history. The
/// next claim counts a new attempt and bumps the token, which fences out the
/// old worker should it wake up and try to commit.
pub async fn rescue_expired(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    reset_leased(pool, None, "lease_expired", "the worker's lease expired before it committed a result").await
}

/// Hands back this worker's leased runs (at shutdown, after the grace period).
pub async fn release_owned(pool: &PgPool, worker: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    reset_leased(pool, Some(worker), "released", "the worker shut down before the step finished").await
}

async fn reset_leased(
    pool: &PgPool,
    owner: Option<&str>,
    outcome: &str,
    error: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "WITH lost AS (
            SELECT id, step, attempt, lease_token, lease_owner, attempt_started_at FROM runs
            WHERE status = 'running'
              AND CASE WHEN $1::text IS NULL THEN lease_expires_at < clock_timestamp() ELSE lease_owner = $1 END
            FOR UPDATE SKIP LOCKED
         ),
         reset AS (
            UPDATE runs r SET status = 'ready', wake_at = clock_timestamp(), lease_owner = NULL,
                   lease_expires_at = NULL, attempt_started_at = NULL, last_error = $3, updated_at = clock_timestamp()
            FROM lost WHERE r.id = lost.id
         )
         INSERT INTO run_history (run_id, step, attempt, lease_token, worker, started_at, outcome, error)
         SELECT id, step, attempt, lease_token, lease_owner, attempt_started_at, $2, $3 FROM lost
         RETURNING run_id",
    )
    .bind(owner)
    .bind(outcome)
    .bind(error)
    .fetch_all(&mut *tx)
    .await?;
    if !ids.is_empty() {
        notify(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(ids)
}

/// When the next ready or waiting run falls due, so an idle worker sleeps until then.
pub async fn next_wake(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(wake_at) FROM runs WHERE status IN ('ready', 'waiting')").fetch_one(pool).await
}

const RUN_COLUMNS: &str = "id, tenant_id, workflow, version, idempotency_key, status, step, attempt, wake_at, \
     context, waiting_for, lease_owner, lease_token, lease_expires_at, attempt_started_at, cancel_requested_at, \
     cancel_reason, failure_code, last_error, created_at, updated_at, finished_at";

pub async fn get(conn: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Run>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The run, locked until the transaction ends: operator actions and signals
/// take this lock first so they serialize with a worker's completion.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<Run>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 FOR UPDATE")))
        .bind(id)
        .fetch_optional(conn)
        .await
}

#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    pub status: Option<String>,
    pub workflow: Option<String>,
    pub step: Option<String>,
    /// Runs whose last error contains this text (case-insensitive).
    pub error_contains: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub tenant_id: Option<Uuid>,
    /// Runs created before this one (keyset pagination on the time-ordered id).
    pub before: Option<Uuid>,
    pub limit: i64,
}

pub async fn list(pool: &PgPool, f: &RunFilter) -> Result<Vec<Run>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2)
           AND ($3::uuid IS NULL OR tenant_id = $3) AND ($4::uuid IS NULL OR id < $4)
           AND ($6::text IS NULL OR step = $6)
           AND ($7::text IS NULL OR last_error ILIKE '%' || $7 || '%')
           AND ($8::timestamptz IS NULL OR created_at >= $8) AND ($9::timestamptz IS NULL OR created_at < $9)
         ORDER BY id DESC LIMIT $5"
    )))
    .bind(&f.status)
    .bind(&f.workflow)
    .bind(f.tenant_id)
    .bind(f.before)
    .bind(f.limit)
    .bind(&f.step)
    .bind(&f.error_contains)
    .bind(f.created_after)
    .bind(f.created_before)
    .fetch_all(pool)
    .await
}

pub async fn history(pool: &PgPool, run_id: Uuid) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, step, attempt, lease_token, worker, started_at, finished_at, outcome, error
         FROM run_history WHERE run_id = $1 ORDER BY id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

pub async fn actions(pool: &PgPool, run_id: Uuid) -> Result<Vec<Action>, sqlx::Error> {
    sqlx::query_as(
        "SELECT action, reason, actor, from_status, from_step, at FROM run_actions WHERE run_id = $1 ORDER BY id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

pub async fn record_action(
    conn: &mut PgConnection,
    run: &Run,
    action: &str,
    reason: &str,
    actor: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO run_actions (run_id, action, reason, actor, from_status, from_step) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(run.id)
    .bind(action)
    .bind(reason)
    .bind(actor)
    .bind(&run.status)
    .bind(&run.step)
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes a parked or failed run ready at the step where it stopped, with its
/// attempts counted afresh.
pub async fn make_ready_again(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE runs SET status = 'ready', attempt = 0, wake_at = clock_timestamp(), failure_code = NULL,
                finished_at = NULL, updated_at = clock_timestamp()
         WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    notify(conn).await
}

/// Marks a running run for cancellation; its worker applies it on completion.
pub async fn request_cancel(conn: &mut PgConnection, id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE runs SET cancel_requested_at = clock_timestamp(), cancel_reason = $2, updated_at = clock_timestamp()
         WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sends a run that is not running down its cancel path: to `step`, or, with
/// none, straight to `cancelled`.
pub async fn apply_cancel(
    conn: &mut PgConnection,
    id: Uuid,
    step: Option<&str>,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE runs SET
            status = CASE WHEN $2::text IS NULL THEN 'cancelled' ELSE 'ready' END,
            step = COALESCE($2, step), attempt = 0, waiting_for = NULL,
            wake_at = CASE WHEN $2::text IS NULL THEN NULL ELSE clock_timestamp() END,
            lease_owner = NULL, lease_expires_at = NULL, attempt_started_at = NULL,
            cancel_requested_at = NULL, cancel_reason = COALESCE($3, cancel_reason),
            finished_at = CASE WHEN $2::text IS NULL THEN clock_timestamp() END,
            updated_at = clock_timestamp()
         WHERE id = $1",
    )
    .bind(id)
    .bind(step)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    if step.is_some() {
        notify(conn).await?;
    }
    Ok(())
}

/// A cancel requested too late to matter (the run finished meanwhile) is dropped.
pub async fn clear_cancel_request(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE runs SET cancel_requested_at = NULL WHERE id = $1").bind(id).execute(conn).await?;
    Ok(())
}

/// Counts of runs by workflow and status, for metrics and `ops`.
pub async fn counts(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT workflow, status, count(*) FROM runs GROUP BY 1, 2 ORDER BY 1, 2").fetch_all(pool).await
}

/// How long the oldest due run has waited for a worker (0 when none waits).
pub async fn oldest_due_age_seconds(pool: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(wake_at)), 0)::float8
         FROM runs WHERE status IN ('ready', 'waiting') AND wake_at <= clock_timestamp()",
    )
    .fetch_one(pool)
    .await
}
