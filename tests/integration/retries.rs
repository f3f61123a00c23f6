use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use bursar::db;
use bursar::engine::{HandlerRegistry, Outcome, SYSTEM_TENANT, StepCtx, StepHandler};
use serde_json::json;

use crate::support::*;

/// Fails its first `failures` calls, then succeeds.
#[derive(Clone)]
struct Flaky {
    failures: u32,
    calls: Arc<AtomicU32>,
}

#[async_trait]
impl StepHandler for Flaky {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }
    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        assert_eq!(ctx.attempt, n, "the attempt number counts every try");
        if n <= self.failures { Outcome::retry(format!("provider down ({n})")) } else { Outcome::next("ok") }
    }
}

const ONE_STEP: &str = r#"
name = "one"
version = 1
start = "call"
[steps.call]
handler = "flaky"
timeout = "300ms"
retry = { max_attempts = 3, initial = "100ms", max = "1s", factor = 2.0, jitter = false }
on = { ok = "succeeded" }
"#;

async fn setup(handler: impl StepHandler) -> (TestDb, bursar::engine::Engine) {
    let db = TestDb::new().await;
    let mut h = HandlerRegistry::new();
    h.register("flaky", handler);
    let engine = engine(&db.pool, &[ONE_STEP], h);
    (db, engine)
}

#[tokio::test]
async fn retries_wait_the_policys_backoff_then_succeed() {
    let calls = Arc::new(AtomicU32::new(0));
    let (db, engine) = setup(Flaky { failures: 2, calls: calls.clone() }).await;
    let worker = spawn_worker(&engine, fast_worker());
    let id = engine.start_now(SYSTEM_TENANT, "one", "k", &json!({})).await.unwrap().run_id;
    wait_for_status(&db.pool, id, "succeeded").await;
    worker.stop().await;

    let h = db::runs::history(&db.pool, id).await.unwrap();
    let outcomes: Vec<_> = h.iter().map(|e| (e.attempt, e.outcome.as_str())).collect();
    assert_eq!(outcomes, [(1, "retry"), (2, "retry"), (3, "next:ok")]);
    assert_eq!(h[0].error.as_deref(), Some("provider down (1)"));
    // Backoff 100 ms after the first failure, 200 ms after the second, counted
    // from the failure (which came after its attempt started).
    let gap = |a: usize, b: usize| (h[b].started_at - h[a].started_at).num_milliseconds();
    assert!(gap(0, 1) >= 100, "first backoff was {} ms", gap(0, 1));
    assert!(gap(1, 2) >= 200, "second backoff was {} ms", gap(1, 2));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_step_that_keeps_failing_is_parked_with_the_reason() {
    let calls = Arc::new(AtomicU32::new(0));
    let (db, engine) = setup(Flaky { failures: u32::MAX, calls: calls.clone() }).await;
    let worker = spawn_worker(&engine, fast_worker());
    let id = engine.start_now(SYSTEM_TENANT, "one", "k", &json!({})).await.unwrap().run_id;
    let run = wait_for_status(&db.pool, id, "parked").await;
    worker.stop().await;

    assert_eq!(calls.load(Ordering::SeqCst), 3, "max_attempts = 3 means three calls, no more");
    assert_eq!(run.step, "call");
    assert_eq!(run.last_error.as_deref(), Some("retries exhausted after 3 attempts: provider down (3)"));
    assert_eq!(db::runs::history(&db.pool, id).await.unwrap().len(), 3);
}

struct Slow;

#[async_trait]
impl StepHandler for Slow {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }
    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        if ctx.attempt == 1 {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
        if ctx.attempt == 2 {
            panic!("bug in attempt two");
        }
        Outcome::next("ok")
    }
}

#[tokio::test]
async fn a_step_that_times_out_or_panics_is_retried() {
    let (db, engine) = setup(Slow).await;
    let worker = spawn_worker(&engine, fast_worker());
    let id = engine.start_now(SYSTEM_TENANT, "one", "k", &json!({})).await.unwrap().run_id;
    wait_for_status(&db.pool, id, "succeeded").await;
    worker.stop().await;
    let h = db::runs::history(&db.pool, id).await.unwrap();
    assert_eq!(h[0].error.as_deref(), Some("the step timed out after 300ms"));
    assert_eq!(h[1].error.as_deref(), Some("the handler panicked: bug in attempt two"));
    assert_eq!(h[2].outcome, "next:ok");
}
