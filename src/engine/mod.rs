//! The durable workflow runtime. A run is a row; workers claim due runs under
//! a fenced lease, execute one step, and commit its outcome, history and
//! outbox in one transaction. See docs/engine.md for the whole picture.

pub mod definition;
pub mod handler;
pub mod maintenance;
pub mod retry;
pub mod transition;
pub mod worker;

mod completer;
mod ledger;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db;
pub use definition::{Definition, DefinitionError, Target};
pub use handler::{CallError, EffectError, HandlerRegistry, Lookup, Outcome, Signal, StepCtx, StepHandler};
pub use maintenance::{Maintenance, MaintenanceConfig};
pub use transition::RunStatus;
pub use worker::{Worker, WorkerConfig};

/// The tenant of runs that belong to nobody (benchmarks, system work).
pub const SYSTEM_TENANT: Uuid = Uuid::nil();

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the workflow definitions are not valid:\n  - {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  - "))]
    InvalidDefinitions(Vec<DefinitionError>),
    #[error("no workflow named `{0}` is loaded")]
    UnknownWorkflow(String),
    #[error("no such run")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The loaded definitions, every version of each: a run keeps the version it
/// started with, so a deploy that changes a workflow never changes a run in flight.
#[derive(Debug, Default)]
pub struct Workflows {
    by_version: HashMap<(String, u32), Arc<Definition>>,
    latest: HashMap<String, u32>,
}

impl Workflows {
    pub fn get(&self, name: &str, version: u32) -> Option<&Arc<Definition>> {
        self.by_version.get(&(name.to_owned(), version))
    }

    pub fn latest(&self, name: &str) -> Option<&Arc<Definition>> {
        self.latest.get(name).and_then(|v| self.get(name, *v))
    }
}

struct Inner {
    pool: PgPool,
    workflows: Workflows,
    handlers: HandlerRegistry,
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub run_id: Uuid,
    /// False when a run with this idempotency key already existed.
    pub created: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Stored in the mailbox; `woke` says whether it made a waiting run ready.
    Stored { woke: bool },
    /// A signal with this key was already stored: nothing changed.
    Duplicate,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// The run went to its cancel path (or straight to cancelled).
    Applied,
    /// The run is mid-step; its worker applies the cancel when the step commits.
    Requested,
}

impl Engine {
    /// Loads definitions and refuses any that cannot run with these handlers.
    pub fn new(pool: PgPool, definitions: Vec<Definition>, handlers: HandlerRegistry) -> Result<Engine> {
        let mut errors = Vec::new();
        let mut workflows = Workflows::default();
        for def in definitions {
            errors.extend(def.validate(&handlers));
            let key = (def.name.clone(), def.version);
            if workflows.by_version.contains_key(&key) {
                errors.push(DefinitionError::Invalid {
                    workflow: def.name.clone(),
                    message: format!("version {} is defined twice", def.version),
                });
            }
            let latest = workflows.latest.entry(def.name.clone()).or_insert(def.version);
            *latest = (*latest).max(def.version);
            workflows.by_version.insert(key, Arc::new(def));
        }
        if !errors.is_empty() {
            return Err(Error::InvalidDefinitions(errors));
        }
        Ok(Engine { inner: Arc::new(Inner { pool, workflows, handlers }) })
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn workflows(&self) -> &Workflows {
        &self.inner.workflows
    }

    pub(crate) fn handlers(&self) -> &HandlerRegistry {
        &self.inner.handlers
    }

    /// Starts a run of the latest version of `workflow` in the caller's
    /// transaction, or finds the one already started with this key.
    pub async fn start(
        &self,
        conn: &mut PgConnection,
        tenant_id: Uuid,
        workflow: &str,
        idempotency_key: &str,
        context: &Value,
    ) -> Result<Started> {
        let new = self.new_run(tenant_id, workflow, idempotency_key, context.clone())?;
        let (run_id, created) = db::runs::insert(conn, &new).await?;
        Ok(Started { run_id, created })
    }

    /// The row that starts a run of the latest version of `workflow`, for a
    /// caller that inserts it in a statement of its own making (see
    /// `db::purchases::create_many`); `start` is the usual way.
    pub fn new_run(
        &self,
        tenant_id: Uuid,
        workflow: &str,
        idempotency_key: &str,
        context: Value,
    ) -> Result<db::runs::NewRun> {
        let def = self.latest_definition(workflow)?;
        if idempotency_key.is_empty() || idempotency_key.len() > 255 {
            return Err(Error::InvalidInput("an idempotency key has 1 to 255 characters".into()));
        }
        Ok(db::runs::NewRun {
            id: Uuid::now_v7(),
            tenant_id,
            workflow: workflow.to_owned(),
            version: def.version as i32,
            idempotency_key: idempotency_key.to_owned(),
            step: def.start.clone(),
            context,
        })
    }

    /// `start` in a transaction of its own.
    pub async fn start_now(&self, tenant_id: Uuid, workflow: &str, key: &str, context: &Value) -> Result<Started> {
        let mut tx = self.pool().begin().await?;
        let started = self.start(&mut tx, tenant_id, workflow, key, context).await?;
        tx.commit().await?;
        Ok(started)
    }

    /// Starts many runs with one statement (keys already present are skipped).
    pub async fn start_many(&self, workflow: &str, keys: &[String], context: &Value) -> Result<u64> {
        let def = self.latest_definition(workflow)?;
        let mut tx = self.pool().begin().await?;
        let n = db::runs::insert_many(&mut tx, SYSTEM_TENANT, workflow, def.version as i32, &def.start, keys, context)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    fn latest_definition(&self, workflow: &str) -> Result<&Arc<Definition>> {
        self.inner.workflows.latest(workflow).ok_or_else(|| Error::UnknownWorkflow(workflow.to_owned()))
    }

    /// Puts a signal in a run's mailbox in the caller's transaction (the one
    /// that verified it), de-duplicated by `dedup_key`. A run waiting for it
    /// becomes ready; otherwise it is kept until the run waits for it.
    pub async fn signal(
        &self,
        conn: &mut PgConnection,
        run_id: Uuid,
        name: &str,
        dedup_key: &str,
        payload: &Value,
    ) -> Result<Delivery> {
        if name.is_empty() || name.contains(',') || dedup_key.is_empty() {
            return Err(Error::InvalidInput("a signal needs a name without commas and a key".into()));
        }
        // The lock orders this with a worker committing a wait: either the
        // worker's wake-up check sees this signal, or this sees the run waiting.
        if db::runs::lock(conn, run_id).await?.is_none() {
            return Err(Error::NotFound);
        }
        if db::signals::insert(conn, run_id, name, dedup_key, payload).await?.is_none() {
            return Ok(Delivery::Duplicate);
        }
        let woke = db::signals::wake(conn, run_id, name).await?;
        Ok(Delivery::Stored { woke })
    }

    /// `signal` in a transaction of its own.
    pub async fn signal_now(&self, run_id: Uuid, name: &str, dedup_key: &str, payload: &Value) -> Result<Delivery> {
        let mut tx = self.pool().begin().await?;
        let delivery = self.signal(&mut tx, run_id, name, dedup_key, payload).await?;
        tx.commit().await?;
        Ok(delivery)
    }

    /// Resumes a parked or failed run at the step where it stopped, with its
    /// context intact and its attempts counted afresh.
    pub async fn replay(&self, run_id: Uuid, reason: &str, actor: &str) -> Result<()> {
        let reason = require_reason(reason)?;
        let mut tx = self.pool().begin().await?;
        let run = db::runs::lock(&mut tx, run_id).await?.ok_or(Error::NotFound)?;
        if !matches!(run.status.as_str(), "parked" | "failed") {
            return Err(Error::Conflict(format!(
                "only a parked or failed run can be replayed; this one is {}",
                run.status
            )));
        }
        db::runs::record_action(&mut tx, &run, "replay", reason, actor).await?;
        // What failed for good before the operator fixed it is tried again.
        db::effects::reopen_failed(&mut tx, run_id, &run.step).await?;
        db::runs::make_ready_again(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Cancels a run: down its workflow's cancel path for its current step
    /// (void an authorization, refund a capture), or straight to cancelled.
    pub async fn cancel(&self, run_id: Uuid, reason: &str, actor: &str) -> Result<Cancellation> {
        let reason = require_reason(reason)?;
        let mut tx = self.pool().begin().await?;
        let run = db::runs::lock(&mut tx, run_id).await?.ok_or(Error::NotFound)?;
        let status = RunStatus::parse(&run.status).unwrap_or(RunStatus::Parked);
        if status.is_terminal() {
            return Err(Error::Conflict(format!("the run has already {}", run.status)));
        }
        db::runs::record_action(&mut tx, &run, "cancel", reason, actor).await?;
        let outcome = if status == RunStatus::Running {
            db::runs::request_cancel(&mut tx, run_id, reason).await?;
            Cancellation::Requested
        } else {
            let target = self.cancel_target(&run.workflow, run.version, &run.step);
            db::runs::apply_cancel(&mut tx, run_id, target.as_deref(), Some(reason)).await?;
            Cancellation::Applied
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// The step a cancel at `step` leads to, or None for straight to cancelled.
    pub(crate) fn cancel_target(&self, workflow: &str, version: i32, step: &str) -> Option<String> {
        let def = self.inner.workflows.get(workflow, version as u32)?;
        match def.cancel_target(step) {
            Target::Step(s) => Some(s),
            _ => None,
        }
    }

    pub fn worker(&self, config: WorkerConfig) -> Worker {
        Worker::new(self.clone(), config)
    }
}

fn require_reason(reason: &str) -> Result<&str> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Error::InvalidInput("a reason is required".into()));
    }
    Ok(reason)
}
