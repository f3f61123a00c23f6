use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bursar::db;
use bursar::engine::{HandlerRegistry, Outcome, SYSTEM_TENANT, StepCtx, StepHandler};
use serde_json::json;
use tokio::sync::Notify;

use crate::support::*;

const ONE_STEP: &str = r#"
name = "one"
version = 1
start = "work"
[steps.work]
handler = "work"
on = { ok = "succeeded" }
"#;

fn completion_for(c: &db::runs::Claimed, by: &str) -> db::runs::Completion {
    db::runs::Completion {
        run_id: c.id,
        lease_token: c.lease_token,
        executed_step: c.step.clone(),
        executed_attempt: c.attempt,
        attempt_started_at: c.attempt_started_at,
        status: "succeeded".into(),
        step: c.step.clone(),
        attempt: c.attempt,
        wake_at: None,
        context: json!({"by": by}),
        waiting_for: None,
        failure_code: None,
        error: None,
        history_outcome: "next:ok".into(),
        continue_in_place: false,
        consumed_signal: None,
        outbox: vec![("k".into(), "mail".into(), json!({"by": by}))],
    }
}

#[tokio::test]
async fn a_zombie_workers_late_commit_is_rejected_by_the_fencing_token() {
    let db = TestDb::new().await;
    let mut h = HandlerRegistry::new();
    h.register("work", Counting::default());
    let engine = engine(&db.pool, &[ONE_STEP], h);
    let id = engine.start_now(SYSTEM_TENANT, "one", "k", &json!({})).await.unwrap().run_id;

    // Worker Z claims, then stalls past its lease.
    let z = db::runs::claim(&db.pool, "zombie", 10, Duration::from_millis(50)).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_millis(100)).await; // let the 50 ms lease lapse
    assert_eq!(db::runs::rescue_expired(&db.pool).await.unwrap(), vec![id]);
    let b = db::runs::claim(&db.pool, "healthy", 10, Duration::from_secs(30)).await.unwrap().remove(0);
    assert_eq!((b.attempt, b.lease_token), (2, z.lease_token + 1));

    // Z wakes up and tries to commit: nothing of it may land.
    let mut tx = db.pool.begin().await.unwrap();
    let done = db::runs::complete(&mut tx, "zombie", Duration::from_secs(30), &[completion_for(&z, "zombie")]).await;
    tx.commit().await.unwrap();
    assert!(done.unwrap().is_empty(), "the zombie's result was not applied");
    let r = run(&db.pool, id).await;
    assert_eq!((r.status.as_str(), r.lease_owner.as_deref()), ("running", Some("healthy")));

    let mut tx = db.pool.begin().await.unwrap();
    let done = db::runs::complete(&mut tx, "healthy", Duration::from_secs(30), &[completion_for(&b, "healthy")]).await;
    tx.commit().await.unwrap();
    assert_eq!(done.unwrap().len(), 1);

    let r = run(&db.pool, id).await;
    assert_eq!((r.status.as_str(), &r.context), ("succeeded", &json!({"by": "healthy"})));
    let h = db::runs::history(&db.pool, id).await.unwrap();
    let rows: Vec<_> = h.iter().map(|e| (e.worker.as_str(), e.outcome.as_str())).collect();
    assert_eq!(rows, [("zombie", "lease_expired"), ("healthy", "next:ok")]);
    let (outbox,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE payload->>'by' = 'zombie'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(outbox, 0, "the zombie's messages were not queued");
    let (outbox,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE payload->>'by' = 'healthy'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(outbox, 1, "the committed attempt's message was queued with its result");
}

/// The first attempt charges (through the effects ledger), then stalls until
/// released; later attempts only charge.
#[derive(Clone)]
struct ChargeThenStall {
    charges: Counting,
    release: Arc<Notify>,
    stalled: Counting,
}

#[async_trait]
impl StepHandler for ChargeThenStall {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }
    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        let charges = self.charges.clone();
        let charged = ctx
            .effect(
                "charge",
                |_key| async move {
                    charges.0.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, bursar::engine::CallError>(json!({"charge": "ch_1"}))
                },
                // As a provider does: the charge made under this key, if any.
                |_key| async move {
                    match self.charges.calls() {
                        0 => Ok(bursar::engine::Lookup::NotApplied),
                        _ => Ok(bursar::engine::Lookup::Succeeded(json!({"charge": "ch_1"}))),
                    }
                },
            )
            .await;
        if let Err(e) = charged {
            return e.into_retry();
        }
        ctx.context["finished_by_attempt"] = json!(ctx.attempt);
        if ctx.attempt == 1 {
            self.stalled.0.fetch_add(1, Ordering::SeqCst);
            self.release.notified().await;
        }
        Outcome::next("ok")
    }
}

#[tokio::test]
async fn a_paused_worker_is_rescued_from_and_its_late_result_discarded() {
    let db = TestDb::new().await;
    let handler = ChargeThenStall {
        charges: Counting::default(),
        release: Arc::new(Notify::new()),
        stalled: Counting::default(),
    };
    let mut h = HandlerRegistry::new();
    h.register("work", handler.clone());
    let engine = engine(&db.pool, &[ONE_STEP], h);
    let (_leading, stop_maintenance) = spawn_maintenance(&db.pool);

    // A stops renewing its lease, as a paused or partitioned process would.
    let mut paused = fast_worker();
    paused.lease = Duration::from_secs(1);
    paused.heartbeat = Duration::from_secs(3600);
    let a = spawn_worker(&engine, paused);
    let id = engine.start_now(SYSTEM_TENANT, "one", "k", &json!({})).await.unwrap().run_id;
    wait_until(Duration::from_secs(10), "attempt 1 to stall", || handler.stalled.calls() == 1).await;

    let b = spawn_worker(&engine, fast_worker());
    let done = wait_for_status(&db.pool, id, "succeeded").await;
    assert_eq!(done.context["finished_by_attempt"], json!(2));

    handler.release.notify_waiters();
    a.stop().await; // waits for A's stalled step to try its commit
    b.stop().await;
    let _ = stop_maintenance.send(true);

    let r = run(&db.pool, id).await;
    assert_eq!(r.context["finished_by_attempt"], json!(2), "A's late result did not overwrite B's");
    assert_eq!(handler.charges.calls(), 1, "the charge was made once");
    let effects = db::effects::for_run(&db.pool, id).await.unwrap();
    assert_eq!((effects.len(), effects[0].status.as_str()), (1, "succeeded"));
    let h = db::runs::history(&db.pool, id).await.unwrap();
    let rows: Vec<_> = h.iter().map(|e| (e.attempt, e.outcome.as_str())).collect();
    assert_eq!(rows, [(1, "lease_expired"), (2, "next:ok")]);
}

#[tokio::test]
async fn an_expired_lease_is_rescued_within_seconds() {
    let db = TestDb::new().await;
    let mut h = HandlerRegistry::new();
    let count = Counting::default();
    h.register("work", count.clone());
    let engine = engine(&db.pool, &[ONE_STEP], h);
    let id = engine.start_now(SYSTEM_TENANT, "one", "k", &json!({})).await.unwrap().run_id;
    // A worker claims the run and dies: nobody renews the lease.
    db::runs::claim(&db.pool, "dead-worker", 1, Duration::from_secs(1)).await.unwrap();

    let (_leading, stop_maintenance) = spawn_maintenance(&db.pool);
    let worker = spawn_worker(&engine, fast_worker());
    let started = std::time::Instant::now();
    wait_for_status(&db.pool, id, "succeeded").await;
    let took = started.elapsed();
    worker.stop().await;
    let _ = stop_maintenance.send(true);
    assert!(took < Duration::from_secs(5), "rescued after {took:?}");
    let h = db::runs::history(&db.pool, id).await.unwrap();
    assert_eq!((h[0].worker.as_str(), h[0].outcome.as_str()), ("dead-worker", "lease_expired"));
    assert_eq!(count.calls(), 1);
}

#[tokio::test]
async fn maintenance_has_one_leader_at_a_time() {
    let db = TestDb::new().await;
    let (first, stop_first) = spawn_maintenance(&db.pool);
    let (second, stop_second) = spawn_maintenance(&db.pool);
    let either = || first.load(Ordering::SeqCst) || second.load(Ordering::SeqCst);
    wait_until(Duration::from_secs(5), "a leader", either).await;
    for _ in 0..20 {
        assert!(!(first.load(Ordering::SeqCst) && second.load(Ordering::SeqCst)), "two leaders");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The leader goes away; the other takes over.
    let (stop_leader, follower) =
        if first.load(Ordering::SeqCst) { (stop_first, second.clone()) } else { (stop_second, first.clone()) };
    let _ = stop_leader.send(true);
    wait_until(Duration::from_secs(10), "the follower to lead", || follower.load(Ordering::SeqCst)).await;
}

#[tokio::test]
async fn the_heartbeat_passes_over_a_run_being_completed_instead_of_waiting_for_it() {
    let db = TestDb::new().await;
    let mut h = HandlerRegistry::new();
    h.register("work", Counting::default());
    let engine = engine(&db.pool, &[ONE_STEP], h);
    let keys: Vec<String> = vec!["a".into(), "b".into()];
    engine.start_many("one", &keys, &json!({})).await.unwrap();
    let claimed = db::runs::claim(&db.pool, "busy", 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let lease_of = |id| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>("SELECT lease_expires_at FROM runs WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (locked, free) = (claimed[0].id, claimed[1].id);
    let locked_lease = lease_of(locked).await;

    // A completion holds one run's row, as the completer's transaction does.
    let mut completing = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE").bind(locked).execute(&mut *completing).await.unwrap();
    // Without SKIP LOCKED the heartbeat would wait here for that commit;
    // the timeout only turns such a hang into a failure.
    let extended = tokio::time::timeout(
        Duration::from_secs(10),
        db::runs::extend_leases(&db.pool, "busy", &[locked, free], Duration::from_secs(60)),
    )
    .await
    .expect("the heartbeat waited for a locked run")
    .unwrap();
    assert_eq!(extended, 1, "only the run nobody holds");
    assert_eq!(lease_of(locked).await, locked_lease, "the held run is left to its completion");
    assert!(lease_of(free).await > locked_lease + chrono::Duration::seconds(30));

    completing.commit().await.unwrap();
    assert_eq!(db::runs::extend_leases(&db.pool, "busy", &[locked, free], Duration::from_secs(60)).await.unwrap(), 2);
    assert_eq!(
        db::runs::extend_leases(&db.pool, "busy", &[free], Duration::from_secs(60)).await.unwrap(),
        1,
        "only the runs named: the others are left to lapse"
    );
}

/// Stages, on its first attempt only, a write the database refuses, so that
/// attempt's result cannot be committed.
struct RefusedOnce;

#[async_trait]
impl StepHandler for RefusedOnce {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }

    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        if ctx.attempt == 1 {
            ctx.stage("SELECT bursar_refuse('not this time') FROM jsonb_array_elements($1)", json!({}));
        }
        Outcome::next("ok")
    }
}

/// A step whose result could not be committed is given up by its worker,
/// which goes on running: the run must lapse and run again, not stay leased
/// by a heartbeat that renews every run the worker ever claimed.
#[tokio::test]
async fn a_run_whose_result_could_not_be_committed_runs_again_while_its_worker_lives() {
    let db = TestDb::new().await;
    let mut h = HandlerRegistry::new();
    h.register("work", RefusedOnce);
    let engine = engine(&db.pool, &[ONE_STEP], h);
    let id = engine.start_now(SYSTEM_TENANT, "one", "k", &json!({})).await.unwrap().run_id;
    let (_leading, stop_maintenance) = spawn_maintenance(&db.pool);
    let mut config = fast_worker();
    config.lease = Duration::from_secs(2);
    config.heartbeat = Duration::from_millis(200);
    let worker = spawn_worker(&engine, config);
    let run = wait_for_run(&db.pool, id, Duration::from_secs(20), |r| r.status == "succeeded").await;
    worker.stop().await;
    let _ = stop_maintenance.send(true);
    assert_eq!(run.attempt, 2, "the second attempt committed");
    let h = db::runs::history(&db.pool, id).await.unwrap();
    let outcomes: Vec<&str> = h.iter().map(|h| h.outcome.as_str()).collect();
    assert_eq!(outcomes, ["lease_expired", "next:ok"]);
}
