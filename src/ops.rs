//! What operators see of a run and what a replay would do: shared by the
//! ops API and `bursar ops runs`, so both say the same thing.

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::ids;
use crate::api::views::{Lease, RunReport, RunSummary};
use crate::db;
use crate::db::runs::Run;

/// A run as a line in a list.
pub fn summary(r: &Run) -> RunSummary {
    RunSummary {
        id: ids::run(r.id),
        workflow: r.workflow.clone(),
        version: r.version,
        status: r.status.clone(),
        step: r.step.clone(),
        attempt: r.attempt,
        wake_at: r.wake_at,
        failure_code: r.failure_code.clone(),
        last_error: r.last_error.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// The whole story of a run: each attempt, the effects with their keys and
/// outcomes, the signals received and the operators' actions.
pub async fn report(pool: &PgPool, run: &Run) -> Result<RunReport, sqlx::Error> {
    let history = db::runs::history(pool, run.id).await?;
    let effects = db::effects::for_run(pool, run.id).await?;
    let signals = db::signals::for_run(pool, run.id).await?;
    let actions = db::runs::actions(pool, run.id).await?;
    Ok(RunReport {
        run: summary(run),
        context: run.context.clone(),
        waiting_for: run.waiting_for.clone(),
        lease: Lease { owner: run.lease_owner.clone(), expires_at: run.lease_expires_at, token: run.lease_token },
        cancel_requested_at: run.cancel_requested_at,
        finished_at: run.finished_at,
        timeline: json!(history),
        effects: json!(effects),
        signals: json!(signals),
        actions: json!(actions),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct EffectPlan {
    pub key: String,
    pub step: String,
    pub status: String,
    /// skip (recorded), ask_first (outcome unknown: the other side is asked
    /// before any call) or call_again (failed for good in the replayed step).
    pub on_replay: &'static str,
}

/// Which recorded effects a replay would skip and which it would make again.
/// Effects of steps not yet reached are not recorded and so not listed.
pub async fn replay_plan(pool: &PgPool, run: &Run) -> Result<Vec<EffectPlan>, sqlx::Error> {
    Ok(db::effects::for_run(pool, run.id)
        .await?
        .into_iter()
        .map(|e| {
            let on_replay = match e.status.as_str() {
                "succeeded" => "skip",
                "failed" if e.step == run.step => "call_again",
                "failed" => "skip",
                _ => "ask_first",
            };
            EffectPlan { key: e.key, step: e.step, status: e.status, on_replay }
        })
        .collect())
}

pub fn parse_run_id(s: &str) -> Option<Uuid> {
    ids::parse_run(s).or_else(|| Uuid::try_parse(s).ok())
}

/// Rows as aligned text columns, for the command line.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([headers[i].len()]).max().unwrap_or(0).min(60))
        .collect();
    let line = |cells: Vec<String>| {
        let cells: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let c: String = c.chars().take(*w).collect();
                format!("{c:<w$}")
            })
            .collect();
        cells.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A run list as a table.
pub fn list_text(runs: &[Value]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            ["id", "workflow", "status", "step", "attempt", "updated_at", "last_error"]
                .iter()
                .map(|k| text(&r[*k]))
                .collect()
        })
        .collect();
    table(&["ID", "WORKFLOW", "STATUS", "STEP", "ATTEMPT", "UPDATED", "LAST ERROR"], &rows)
}

/// A run's report as text: the run, then its timeline, effects, signals and actions.
pub fn report_text(r: &Value) -> String {
    let mut out = format!(
        "{}  {} v{}  {} at {} (attempt {})\n",
        text(&r["id"]),
        text(&r["workflow"]),
        text(&r["version"]),
        text(&r["status"]),
        text(&r["step"]),
        text(&r["attempt"])
    );
    if !r["last_error"].is_null() {
        out += &format!("last error: {}\n", text(&r["last_error"]));
    }
    let rows = |key: &str, fields: &[&str]| -> Vec<Vec<String>> {
        r[key].as_array().into_iter().flatten().map(|e| fields.iter().map(|f| text(&e[*f])).collect()).collect()
    };
    out += "\ntimeline\n";
    out += &table(
        &["STEP", "ATTEMPT", "STARTED", "FINISHED", "OUTCOME", "WORKER", "ERROR"],
        &rows("timeline", &["step", "attempt", "started_at", "finished_at", "outcome", "worker", "error"]),
    );
    out += "\neffects\n";
    out += &table(&["KEY", "STATUS", "ATTEMPTS", "ERROR"], &rows("effects", &["key", "status", "attempts", "error"]));
    out += "\nsignals\n";
    out += &table(
        &["NAME", "KEY", "RECEIVED", "CONSUMED BY"],
        &rows("signals", &["name", "dedup_key", "received_at", "consumed_by_step"]),
    );
    out += "\nactions\n";
    out += &table(&["ACTION", "BY", "AT", "REASON"], &rows("actions", &["action", "actor", "at", "reason"]));
    out
}
