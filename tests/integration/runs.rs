use std::time::Duration;

use bursar::db;
use bursar::engine::{HandlerRegistry, SYSTEM_TENANT};
use serde_json::json;

use crate::support::*;

const TWO_STEPS: &str = r#"
name = "two"
version = 1
start = "first"
[steps.first]
handler = "count"
on = { ok = "second" }
[steps.second]
handler = "count"
on = { ok = "succeeded" }
"#;

#[tokio::test]
async fn a_run_completes_every_step_and_records_each_attempt() {
    let db = TestDb::new().await;
    let count = Counting::default();
    let mut h = HandlerRegistry::new();
    h.register("count", count.clone());
    let engine = engine(&db.pool, &[TWO_STEPS], h);
    let worker = spawn_worker(&engine, fast_worker());

    let started = engine.start_now(SYSTEM_TENANT, "two", "k1", &json!({"order": 7})).await.unwrap();
    let run = wait_for_status(&db.pool, started.run_id, "succeeded").await;
    worker.stop().await;

    assert_eq!(count.calls(), 2);
    assert_eq!((run.workflow.as_str(), run.version), ("two", 1));
    assert_eq!(run.context, json!({"order": 7}));
    assert!(run.finished_at.is_some() && run.lease_owner.is_none());
    let history = db::runs::history(&db.pool, run.id).await.unwrap();
    let steps: Vec<(&str, &str)> = history.iter().map(|h| (h.step.as_str(), h.outcome.as_str())).collect();
    assert_eq!(steps, [("first", "next:ok"), ("second", "next:ok")]);
    assert!(history.iter().all(|h| h.finished_at >= h.started_at && h.attempt == 1));
}

#[tokio::test]
async fn concurrent_starts_with_one_idempotency_key_make_one_run() {
    let db = TestDb::new().await;
    let mut h = HandlerRegistry::new();
    h.register("count", Counting::default());
    let engine = engine(&db.pool, &[TWO_STEPS], h);

    let starts = (0..20).map(|_| {
        let engine = engine.clone();
        tokio::spawn(async move { engine.start_now(SYSTEM_TENANT, "two", "same-key", &json!({})).await.unwrap() })
    });
    let results: Vec<_> = futures_join(starts).await;
    let created = results.iter().filter(|s| s.created).count();
    assert_eq!(created, 1, "exactly one start creates the run");
    assert!(results.iter().all(|s| s.run_id == results[0].run_id), "every start answers the same run");
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM runs").fetch_one(&db.pool).await.unwrap();
    assert_eq!(n, 1);

    // Another tenant's key space is its own.
    let other = engine.start_now(uuid::Uuid::now_v7(), "two", "same-key", &json!({})).await.unwrap();
    assert!(other.created && other.run_id != results[0].run_id);
}

async fn futures_join<T: Send + 'static>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_run_keeps_the_version_it_started_with() {
    let db = TestDb::new().await;
    let mut h = HandlerRegistry::new();
    h.register("count", Counting::default());
    let v1 = engine(&db.pool, &[TWO_STEPS], h.clone());
    let started = v1.start_now(SYSTEM_TENANT, "two", "old", &json!({})).await.unwrap();

    // A deploy brings v2 (one step fewer) while v1 stays loaded for runs in flight.
    let v2_text = r#"
        name = "two"
        version = 2
        start = "only"
        [steps.only]
        handler = "count"
        on = { ok = "succeeded" }
    "#;
    let both = engine(&db.pool, &[TWO_STEPS, v2_text], h);
    let newer = both.start_now(SYSTEM_TENANT, "two", "new", &json!({})).await.unwrap();
    let worker = spawn_worker(&both, fast_worker());
    let old = wait_for_status(&db.pool, started.run_id, "succeeded").await;
    let new = wait_for_status(&db.pool, newer.run_id, "succeeded").await;
    worker.stop().await;
    assert_eq!((old.version, new.version), (1, 2));
    assert_eq!(db::runs::history(&db.pool, old.id).await.unwrap().len(), 2);
    assert_eq!(db::runs::history(&db.pool, new.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_worker_shutting_down_hands_back_a_step_that_will_not_finish() {
    let db = TestDb::new().await;
    let mut h = HandlerRegistry::new();
    h.register("count", Hang);
    let engine = engine(&db.pool, &[TWO_STEPS], h);
    let mut config = fast_worker();
    config.shutdown_grace = Duration::from_millis(300);
    let worker = spawn_worker(&engine, config);
    let started = engine.start_now(SYSTEM_TENANT, "two", "k", &json!({})).await.unwrap();
    wait_for_status(&db.pool, started.run_id, "running").await;

    worker.stop().await;
    let run = run(&db.pool, started.run_id).await;
    assert_eq!((run.status.as_str(), run.step.as_str()), ("ready", "first"));
    assert!(run.lease_owner.is_none());
    let history = db::runs::history(&db.pool, run.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, "released");
}

struct Hang;

#[async_trait::async_trait]
impl bursar::engine::StepHandler for Hang {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }
    async fn run(&self, _ctx: &mut bursar::engine::StepCtx) -> bursar::engine::Outcome {
        std::future::pending().await
    }
}

#[tokio::test]
async fn pruning_removes_old_history_of_finished_runs_only() {
    let db = TestDb::new().await;
    let mut h = HandlerRegistry::new();
    h.register("count", Counting::default());
    let engine = engine(&db.pool, &[TWO_STEPS], h);
    let worker = spawn_worker(&engine, fast_worker());
    let old = engine.start_now(SYSTEM_TENANT, "two", "old", &json!({})).await.unwrap().run_id;
    let recent = engine.start_now(SYSTEM_TENANT, "two", "recent", &json!({})).await.unwrap().run_id;
    wait_for_status(&db.pool, old, "succeeded").await;
    wait_for_status(&db.pool, recent, "succeeded").await;
    worker.stop().await;
    // The old run finished 40 days ago.
    sqlx::query("UPDATE runs SET finished_at = now() - interval '40 days' WHERE id = $1;")
        .bind(old)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE run_history SET finished_at = now() - interval '40 days' WHERE run_id = $1")
        .bind(old)
        .execute(&db.pool)
        .await
        .unwrap();

    let cutoff = chrono::Utc::now() - chrono::Duration::days(30);
    let pruned = db::maintenance::prune(&db.pool, cutoff, 1).await.unwrap();
    assert_eq!(pruned, 2, "both history rows of the old run, in batches of one");
    assert!(db::runs::history(&db.pool, old).await.unwrap().is_empty());
    assert_eq!(db::runs::history(&db.pool, recent).await.unwrap().len(), 2);
    assert_eq!(run(&db.pool, old).await.status, "succeeded", "the run itself is kept");
}

/// A started run is announced (NOTIFY, in the statement that inserts it):
/// an idle worker that would otherwise poll once a minute takes it at once.
#[tokio::test]
async fn an_idle_worker_is_woken_by_a_new_run_not_by_its_poll() {
    let db = TestDb::new().await;
    let mut h = HandlerRegistry::new();
    h.register("count", Counting::default());
    let engine = engine(&db.pool, &[TWO_STEPS], h);
    let mut config = fast_worker();
    config.poll_interval = Duration::from_secs(60);
    let worker = spawn_worker(&engine, config);
    tokio::time::sleep(Duration::from_secs(1)).await; // listening, and asleep until the next poll

    let started = engine.start_now(SYSTEM_TENANT, "two", "wake", &json!({})).await.unwrap();
    let run = wait_for_run(&db.pool, started.run_id, Duration::from_secs(10), |r| r.status == "succeeded").await;
    assert_eq!(run.status, "succeeded");
    worker.stop().await;
}
