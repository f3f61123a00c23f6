//! Commits attempt results in batches. Each run's result is durable before its
//! worker moves on, but the results of many concurrent runs share one
//! statement and one commit (one WAL flush), which is what lets a 2-core
//! machine run thousands of durable steps a second.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::Engine;
use super::handler::Staged;
use crate::db;
use crate::db::runs::{Completed, Completion};

pub(crate) struct Job {
    pub completion: Completion,
    pub workflow: String,
    pub version: i32,
    /// The step's domain writes and effect outcomes, committed with its result.
    pub staged: Vec<Staged>,
    reply: oneshot::Sender<Result<Committed, CommitError>>,
}

#[derive(Debug)]
pub(crate) enum Committed {
    /// The run stays leased to this worker at its next step.
    Continued {
        attempt_started_at: DateTime<Utc>,
    },
    Released,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    #[error("the lease was lost before the result could commit; the result was discarded")]
    LeaseLost,
    #[error("the result could not be committed: {0}")]
    Db(String),
}

#[derive(Clone)]
pub(crate) struct Completer {
    sender: mpsc::Sender<Job>,
}

impl Completer {
    /// Starts `lanes` committers sharing one queue: while one lane waits for
    /// its commit, another gathers the next batch.
    pub fn spawn(
        engine: Engine,
        worker: String,
        lease: Duration,
        max_batch: usize,
        lanes: usize,
    ) -> (Completer, Vec<JoinHandle<()>>) {
        let (sender, handles) = crate::lanes::spawn(max_batch, lanes, move |jobs: Vec<Job>| {
            let (engine, worker) = (engine.clone(), worker.clone());
            async move { commit(&engine, &worker, lease, jobs).await }
        });
        (Completer { sender }, handles)
    }

    pub async fn commit(
        &self,
        completion: Completion,
        workflow: String,
        version: i32,
        staged: Vec<Staged>,
    ) -> Result<Committed, CommitError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { completion, workflow, version, staged, reply };
        self.sender.send(job).await.map_err(|_| CommitError::Db("the completer has stopped".into()))?;
        answer.await.map_err(|_| CommitError::Db("the completer stopped before answering".into()))?
    }
}

async fn commit(engine: &Engine, worker: &str, lease: Duration, jobs: Vec<Job>) {
    match commit_batch(engine, worker, lease, &jobs).await {
        Ok(done) => reply_all(jobs, &done),
        Err(e) if jobs.len() > 1 => {
            // One bad row must not sink its neighbours: commit them one by one.
            tracing::warn!(error = %e, batch = jobs.len(), "batch commit failed; committing one by one");
            for job in jobs {
                let one = std::slice::from_ref(&job);
                match commit_batch(engine, worker, lease, one).await {
                    Ok(done) => reply_all(vec![job], &done),
                    Err(e) => {
                        let _ = job.reply.send(Err(CommitError::Db(e.to_string())));
                    }
                }
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(CommitError::Db(e.to_string())));
            }
        }
    }
}

fn reply_all(jobs: Vec<Job>, done: &HashMap<Uuid, Completed>) {
    for job in jobs {
        let answer = match done.get(&job.completion.run_id) {
            None => Err(CommitError::LeaseLost),
            Some(c) if c.status == "running" => {
                Ok(Committed::Continued { attempt_started_at: c.attempt_started_at.unwrap_or_else(Utc::now) })
            }
            Some(_) => Ok(Committed::Released),
        };
        let _ = job.reply.send(answer);
    }
}

/// The staged rows of each statement, in the order the statements first appear.
fn group_by_statement<'a>(staged: impl Iterator<Item = &'a Staged>) -> Vec<(&'static str, Vec<&'a serde_json::Value>)> {
    let mut groups: Vec<(&'static str, Vec<&serde_json::Value>)> = Vec::new();
    for write in staged {
        match groups.iter_mut().find(|(sql, _)| *sql == write.sql) {
            Some((_, rows)) => rows.push(&write.row),
            None => groups.push((write.sql, vec![&write.row])),
        }
    }
    groups
}

async fn commit_batch(
    engine: &Engine,
    worker: &str,
    lease: Duration,
    jobs: &[Job],
) -> Result<HashMap<Uuid, Completed>, sqlx::Error> {
    let rows: Vec<Completion> = jobs.iter().map(|j| j.completion.clone()).collect();
    let mut tx = engine.pool().begin().await?;
    let done = db::runs::complete(&mut tx, worker, lease, &rows).await?;
    // Only runs whose lease held get their writes: a zombie's change nothing.
    let held = jobs.iter().filter(|j| done.iter().any(|c| c.id == j.completion.run_id));
    for (sql, rows) in group_by_statement(held.flat_map(|j| &j.staged)) {
        db::runs::apply_staged(&mut tx, sql, &rows).await?;
    }

    // A cancel requested while the step ran takes effect now that its result is safe.
    for c in done.iter().filter(|c| c.cancel_requested) {
        let finished = matches!(c.status.as_str(), "succeeded" | "failed" | "cancelled");
        if finished {
            db::runs::clear_cancel_request(&mut tx, c.id).await?;
        } else if let Some(job) = jobs.iter().find(|j| j.completion.run_id == c.id) {
            let target = engine.cancel_target(&job.workflow, job.version, &c.step);
            db::runs::apply_cancel(&mut tx, c.id, target.as_deref(), None).await?;
        }
    }
    let waiting: Vec<Uuid> = done.iter().filter(|c| c.status == "waiting").map(|c| c.id).collect();
    if !waiting.is_empty() {
        db::runs::wake_if_signalled(&mut tx, &waiting).await?;
    }
    tx.commit().await?;
    Ok(done.into_iter().map(|c| (c.id, c)).collect())
}
