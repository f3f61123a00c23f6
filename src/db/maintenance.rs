//! Leader election and the bookkeeping of periodic maintenance.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// The advisory lock whose holder is the maintenance leader ("bursar" in ASCII).
pub const LEADER_LOCK: i64 = 0x6275_7273_6172;

/// Tries to become leader on this connection; the lock lasts as long as the session.
pub async fn try_lead(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK).fetch_one(conn).await
}

pub async fn last_run(pool: &PgPool, job: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT last_run_at FROM maintenance_runs WHERE job = $1").bind(job).fetch_optional(pool).await
}

pub async fn mark_run(pool: &PgPool, job: &str, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO maintenance_runs (job, last_run_at) VALUES ($1, $2)
         ON CONFLICT (job) DO UPDATE SET last_run_at = excluded.last_run_at",
    )
    .bind(job)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes, in batches, the history of runs that finished before `cutoff`, and
/// consumed signals of the same age. Runs and the effects ledger are kept:
/// they are business records, the history is diagnostics.
pub async fn prune(pool: &PgPool, cutoff: DateTime<Utc>, batch: i64) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM run_history WHERE id IN (
                SELECT h.id FROM run_history h JOIN runs r ON r.id = h.run_id
                WHERE r.finished_at < $1 AND h.finished_at < $1 LIMIT $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        total += done;
        if done < batch as u64 {
            break;
        }
    }
    total +=
        sqlx::query("DELETE FROM signals WHERE consumed_at < $1").bind(cutoff).execute(pool).await?.rows_affected();
    Ok(total)
}
