//! The worker: claims due runs, executes their steps, hands the results to
//! the completer. Claims are woken by LISTEN/NOTIFY, with polling as the
//! fallback; leases are renewed by a heartbeat while steps run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::Engine;
use super::completer::{CommitError, Committed, Completer};
use super::definition::DEADLINE;
use super::handler::{Outcome, Signal, Staged, StepCtx};
use super::ledger::Ledger;
use super::transition::{self, RunStatus, Transition};
use crate::db;
use crate::db::runs::{Claimed, Completion};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Runs in flight at once in this worker.
    pub concurrency: usize,
    /// Runs claimed per query.
    pub claim_batch: usize,
    /// How long a claim is valid without renewal. Another worker takes the
    /// run over (within the rescue schedule) once it lapses.
    pub lease: Duration,
    /// How often leases are renewed; well under `lease`.
    pub heartbeat: Duration,
    /// Longest sleep between claims when no notification arrives.
    pub poll_interval: Duration,
    pub completion_batch: usize,
    pub completion_lanes: usize,
    /// How long in-flight steps may finish after a shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 64,
            claim_batch: 64,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            completion_batch: 256,
            completion_lanes: 2,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

pub struct Worker {
    engine: Engine,
    config: WorkerConfig,
    id: String,
}

struct Shared {
    engine: Engine,
    executing: Executing,
    completer: Completer,
    ledger: Ledger,
    stopping: AtomicBool,
}

impl Worker {
    pub fn new(engine: Engine, config: WorkerConfig) -> Worker {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        let id = format!("{host}:{}:{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        Worker { engine, config, id }
    }

    /// The name this worker writes as lease owner and into history rows.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `shutdown` completes, then stops claiming, gives in-flight
    /// steps `shutdown_grace` to commit, and hands back whatever is left.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Worker { engine, config, id } = self;
        let pool = engine.pool().clone();
        let (completer, lanes) = Completer::spawn(
            engine.clone(),
            id.clone(),
            config.lease,
            config.completion_batch,
            config.completion_lanes,
        );
        // Effect begins batch like completions, with the same batch size and lanes.
        let (ledger, ledger_lanes) = Ledger::spawn(pool.clone(), config.completion_batch, config.completion_lanes);
        let executing = Executing::default();
        let shared = Arc::new(Shared {
            engine: engine.clone(),
            executing: executing.clone(),
            completer,
            ledger,
            stopping: AtomicBool::new(false),
        });
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(pool.clone(), wake.clone()));
        let heartbeat = tokio::spawn(renew_leases(pool.clone(), id.clone(), executing, config.lease, config.heartbeat));
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let mut steps = JoinSet::new();
        tracing::info!(worker = %id, concurrency = config.concurrency, "worker started");

        tokio::pin!(shutdown);
        loop {
            let room = slots.available_permits().min(config.claim_batch);
            let mut saturated = false;
            let mut claimed_any = false;
            if room > 0 {
                match db::runs::claim(&pool, &id, room, config.lease).await {
                    Ok(runs) => {
                        saturated = runs.len() == room;
                        claimed_any = !runs.is_empty();
                        for run in runs {
                            let slot = slots.clone().try_acquire_owned().expect("a slot was counted free");
                            let held = shared.executing.add(run.id, run.lease_token);
                            steps.spawn(execute(shared.clone(), run, slot, held));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming runs failed; will retry"),
                }
            }
            while steps.try_join_next().is_some() {}
            if saturated {
                continue;
            }
            let full = slots.available_permits() == 0;
            // After an empty claim, sleep until the next run falls due; after a
            // busy one, the next notification or poll comes soon enough.
            let nap = if full || claimed_any {
                config.poll_interval
            } else {
                time_to_next_wake(&pool, config.poll_interval).await
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(nap) => {}
                Some(_) = steps.join_next(), if full => {}
            }
        }

        tracing::info!(worker = %id, in_flight = steps.len(), "stopping: no new claims");
        shared.stopping.store(true, Ordering::SeqCst);
        listener.abort();
        let drained = tokio::time::timeout(config.shutdown_grace, async { while steps.join_next().await.is_some() {} })
            .await
            .is_ok();
        if !drained {
            tracing::warn!(worker = %id, "grace period over: abandoning unfinished steps");
            steps.abort_all();
            while steps.join_next().await.is_some() {}
        }
        drop(shared);
        for lane in lanes {
            let _ = lane.await;
        }
        // Every step is over, so no begin waits for an answer. (The lanes do
        // not end by themselves: a handler abandoned mid-await may not have
        // dropped its sender yet.)
        for lane in ledger_lanes {
            lane.abort();
        }
        heartbeat.abort();
        let released = db::runs::release_owned(&pool, &id).await?;
        tracing::info!(worker = %id, released = released.len(), "worker stopped");
        Ok(())
    }
}

async fn time_to_next_wake(pool: &sqlx::PgPool, cap: Duration) -> Duration {
    match db::runs::next_wake(pool).await {
        Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(cap).max(Duration::from_millis(1)),
        _ => cap,
    }
}

/// Turns notifications on the runs channel into wake-ups of the claim loop.
/// If the connection drops the loop still polls, and this reconnects.
async fn listen(pool: sqlx::PgPool, wake: Arc<Notify>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(db::RUNS_CHANNEL).await {
                Ok(()) => {
                    wake.notify_one(); // anything started while we were not listening
                    while listener.recv().await.is_ok() {
                        wake.notify_one();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "LISTEN failed; polling meanwhile"),
            },
            Err(e) => tracing::warn!(error = %e, "no connection for LISTEN; polling meanwhile"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The runs whose steps this worker is executing, which the heartbeat keeps
/// leased, each with the lease token of the claim its task holds. A run
/// leaves the set when that task ends, however it ends; not when an older
/// task ends after the run was claimed again (a lost lease, a quick re-claim).
#[derive(Clone, Default)]
struct Executing(Arc<Mutex<HashMap<Uuid, i64>>>);

/// A task's place in `Executing`, given up when dropped.
struct Held {
    executing: Executing,
    run: Uuid,
    lease_token: i64,
}

impl Executing {
    fn add(&self, run: Uuid, lease_token: i64) -> Held {
        self.0.lock().expect("not poisoned").insert(run, lease_token);
        Held { executing: self.clone(), run, lease_token }
    }

    fn runs(&self) -> Vec<Uuid> {
        self.0.lock().expect("not poisoned").keys().copied().collect()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut runs = self.executing.0.lock().expect("not poisoned");
        if runs.get(&self.run) == Some(&self.lease_token) {
            runs.remove(&self.run);
        }
    }
}

async fn renew_leases(pool: sqlx::PgPool, worker: String, executing: Executing, lease: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = db::runs::extend_leases(&pool, &worker, &executing.runs(), lease).await {
            tracing::warn!(error = %e, "renewing leases failed");
        }
    }
}

/// Executes a claimed run's step, and the steps after it for as long as the
/// run may continue in place under the same lease.
async fn execute(shared: Arc<Shared>, mut run: Claimed, _slot: OwnedSemaphorePermit, _held: Held) {
    loop {
        let (mut completion, staged) = attempt(&shared, &run).await;
        completion.continue_in_place &= !shared.stopping.load(Ordering::SeqCst);
        let next_context = completion.continue_in_place.then(|| completion.context.clone());
        let next_step = completion.step.clone();
        let outcome = completion.history_outcome.clone();
        let took = (Utc::now() - run.attempt_started_at).to_std().unwrap_or_default();
        let labels = crate::metrics::StepLabels {
            workflow: run.workflow.clone(),
            step: run.step.clone(),
            outcome: outcome.split(':').next().unwrap_or_default().to_owned(),
        };
        crate::metrics::metrics().step_seconds.get_or_create(&labels).observe(took.as_secs_f64());
        let result = shared.completer.commit(completion, run.workflow.clone(), run.version, staged).await;
        match result {
            Ok(Committed::Continued { attempt_started_at }) => {
                run.step = next_step;
                run.attempt = 1;
                run.context = next_context.unwrap_or_default();
                run.waiting_for = None;
                run.was_waiting = false;
                run.last_error = None;
                run.attempt_started_at = attempt_started_at;
            }
            Ok(Committed::Released) => return,
            Err(CommitError::LeaseLost) => {
                tracing::warn!(run = %run.id, step = %run.step, outcome, "lease lost; result discarded");
                return;
            }
            Err(e) => {
                tracing::error!(run = %run.id, step = %run.step, error = %e, "result not committed; the lease will lapse and the step run again");
                return;
            }
        }
    }
}

/// One attempt of the run's current step, as a completion to commit.
async fn attempt(shared: &Shared, run: &Claimed) -> (Completion, Vec<Staged>) {
    let engine = &shared.engine;
    let park = |reason: String| Transition::park(&run.step, run.attempt as u32, reason);
    let Some(def) = engine.workflows().get(&run.workflow, run.version as u32).cloned() else {
        let reason = format!("workflow {} v{} is not loaded by this worker", run.workflow, run.version);
        return (completion(run, park(reason), run.context.clone(), None, vec![]), vec![]);
    };
    let Some(step) = def.step(&run.step).cloned() else {
        let reason = format!("step `{}` is not in {} v{}", run.step, run.workflow, run.version);
        return (completion(run, park(reason), run.context.clone(), None, vec![]), vec![]);
    };
    if run.attempt as u32 > step.retry.max_attempts {
        // Only a lost lease gets here (a failure that returned `retry` was
        // parked when it used the last attempt): the step keeps killing its worker.
        let reason = format!(
            "step `{}` was tried {} times without finishing; last error: {}",
            run.step,
            step.retry.max_attempts,
            run.last_error.as_deref().unwrap_or("none")
        );
        return (completion(run, park(reason), run.context.clone(), None, vec![]), vec![]);
    }

    let mut signal = None;
    if let Some(names) = run.waiting_for.as_ref().filter(|n| !n.is_empty()) {
        match db::signals::oldest_unconsumed(engine.pool(), run.id, names).await {
            Ok(Some(s)) => signal = Some(Signal { id: s.id, name: s.name, payload: s.payload }),
            Ok(None) if run.was_waiting => {
                let mut t = transition::plan(&def, &run.step, run.attempt as u32, Outcome::next(DEADLINE), Utc::now());
                t.history_outcome = DEADLINE.into();
                return (completion(run, t, run.context.clone(), None, vec![]), vec![]);
            }
            Ok(None) => {}
            Err(e) => {
                let t = transition::plan(&def, &run.step, run.attempt as u32, Outcome::retry(e), Utc::now());
                return (completion(run, t, run.context.clone(), None, vec![]), vec![]);
            }
        }
    }

    let handler = engine.handlers().get(&step.handler).expect("handlers are checked when the engine starts");
    let mut ctx = StepCtx {
        run_id: run.id,
        tenant_id: run.tenant_id,
        workflow: run.workflow.clone(),
        step: run.step.clone(),
        attempt: run.attempt as u32,
        context: run.context.clone(),
        signal: signal.clone(),
        outbox: vec![],
        staged: Default::default(),
        pool: engine.pool().clone(),
        ledger: shared.ledger.clone(),
    };
    let span = tracing::info_span!("step", run = %run.id, tenant = %run.tenant_id, workflow = %run.workflow, step = %run.step, attempt = run.attempt);
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let outcome = handler.run(&mut ctx).await;
            (outcome, ctx)
        },
        span,
    ));
    // The handler stops with this attempt, even when the attempt itself is
    // dropped (a worker abandoning steps at the end of its grace period).
    let _abort = AbortOnDrop(task.abort_handle());
    let (outcome, context, outbox, staged) = match tokio::time::timeout(step.timeout, task).await {
        Ok(Ok((outcome, ctx))) => {
            let staged = ctx.staged.into_inner().unwrap_or_default();
            (outcome, ctx.context, ctx.outbox, staged)
        }
        Ok(Err(e)) => {
            let why = if e.is_panic() { panic_message(e.into_panic()) } else { e.to_string() };
            (Outcome::retry(format!("the handler panicked: {why}")), run.context.clone(), vec![], vec![])
        }
        // A timed-out handler is stopped when `_abort` drops.
        Err(_) => (
            Outcome::retry(format!("the step timed out after {:?}", step.timeout)),
            run.context.clone(),
            vec![],
            vec![],
        ),
    };
    let t = transition::plan(&def, &run.step, run.attempt as u32, outcome, Utc::now());
    let outbox = outbox.into_iter().map(|m| (m.dedup_key, m.channel, m.payload)).collect();
    (completion(run, t, context, signal, outbox), staged)
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

fn completion(
    run: &Claimed,
    t: Transition,
    context: serde_json::Value,
    signal: Option<Signal>,
    outbox: Vec<(String, String, serde_json::Value)>,
) -> Completion {
    // A step that will be retried has not dealt with its signal: leave it in
    // the mailbox and keep waiting for it, so the next attempt sees it again.
    let retrying_with_signal = signal.is_some() && t.status == RunStatus::Ready && t.history_outcome == "retry";
    let waiting_for = if retrying_with_signal {
        run.waiting_for.as_ref().map(|n| n.join(","))
    } else {
        (!t.waiting_for.is_empty()).then(|| t.waiting_for.join(","))
    };
    Completion {
        run_id: run.id,
        lease_token: run.lease_token,
        executed_step: run.step.clone(),
        executed_attempt: run.attempt,
        attempt_started_at: run.attempt_started_at,
        status: t.status.as_str().to_owned(),
        step: t.step,
        attempt: t.attempt as i32,
        wake_at: t.wake_at,
        context,
        waiting_for,
        failure_code: t.failure_code,
        error: t.error,
        history_outcome: t.history_outcome,
        continue_in_place: t.continue_in_place,
        consumed_signal: if retrying_with_signal { None } else { signal.map(|s| s.id) },
        outbox,
    }
}

#[cfg(test)]
mod tests {
    use super::Executing;

    #[test]
    fn a_run_claimed_again_stays_held_when_its_older_task_ends() {
        let executing = Executing::default();
        let run = uuid::Uuid::now_v7();
        let older = executing.add(run, 1);
        let newer = executing.add(run, 2);
        drop(older);
        assert_eq!(executing.runs(), vec![run], "the newer claim is still executing");
        drop(newer);
        assert!(executing.runs().is_empty());
    }
}
