use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bursar::db;
use bursar::engine::{Cancellation, Error, HandlerRegistry, Outcome, SYSTEM_TENANT, StepCtx, StepHandler};
use serde_json::json;

use crate::support::*;

/// Fails until the operator fixes the cause.
#[derive(Clone, Default)]
struct BrokenUntilFixed(Arc<AtomicBool>);

#[async_trait]
impl StepHandler for BrokenUntilFixed {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }
    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        if self.0.load(Ordering::SeqCst) {
            ctx.context["enrolled"] = json!(true);
            Outcome::next("ok")
        } else {
            Outcome::retry("LMS answers 503")
        }
    }
}

const ENROLL: &str = r#"
name = "enroll"
version = 1
start = "pay"
on_cancel = "undo"
[steps.pay]
handler = "count"
on = { ok = "enroll" }
[steps.enroll]
handler = "enroll"
retry = { max_attempts = 2, initial = "10ms", max = "10ms" }
on = { ok = "succeeded" }
[steps.undo]
handler = "count"
on = { ok = "cancelled" }
"#;

fn setup(db: &TestDb, fixed: BrokenUntilFixed) -> bursar::engine::Engine {
    let mut h = HandlerRegistry::new();
    h.register("count", Counting::default());
    h.register("enroll", fixed);
    engine(&db.pool, &[ENROLL], h)
}

#[tokio::test]
async fn a_parked_run_replays_from_its_failed_step_with_its_context() {
    let db = TestDb::new().await;
    let fixed = BrokenUntilFixed::default();
    let engine = setup(&db, fixed.clone());
    let worker = spawn_worker(&engine, fast_worker());
    let id = engine.start_now(SYSTEM_TENANT, "enroll", "k", &json!({"order": "o1"})).await.unwrap().run_id;
    let parked = wait_for_status(&db.pool, id, "parked").await;
    assert_eq!(parked.step, "enroll");
    assert!(parked.last_error.unwrap().contains("LMS answers 503"));

    assert!(matches!(engine.replay(id, "  ", "ops").await, Err(Error::InvalidInput(_))), "a reason is required");
    fixed.0.store(true, Ordering::SeqCst);
    engine.replay(id, "LMS is back", "ana@ops").await.unwrap();
    let done = wait_for_status(&db.pool, id, "succeeded").await;
    worker.stop().await;

    assert_eq!(done.context, json!({"order": "o1", "enrolled": true}));
    let h = db::runs::history(&db.pool, id).await.unwrap();
    let steps: Vec<_> = h.iter().map(|e| (e.step.as_str(), e.attempt, e.outcome.as_str())).collect();
    assert_eq!(
        steps,
        [("pay", 1, "next:ok"), ("enroll", 1, "retry"), ("enroll", 2, "retry"), ("enroll", 1, "next:ok")],
        "pay was not run again; enroll got fresh attempts"
    );
    let actions = db::runs::actions(&db.pool, id).await.unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (
            actions[0].action.as_str(),
            actions[0].reason.as_str(),
            actions[0].actor.as_str(),
            actions[0].from_status.as_str()
        ),
        ("replay", "LMS is back", "ana@ops", "parked")
    );
    assert!(matches!(engine.replay(id, "again", "ops").await, Err(Error::Conflict(_))), "a succeeded run is final");
}

#[tokio::test]
async fn cancel_sends_a_run_down_its_cancel_path() {
    let db = TestDb::new().await;
    let engine = setup(&db, BrokenUntilFixed::default());
    let worker = spawn_worker(&engine, fast_worker());
    let id = engine.start_now(SYSTEM_TENANT, "enroll", "k", &json!({})).await.unwrap().run_id;
    wait_for_status(&db.pool, id, "parked").await;

    assert_eq!(engine.cancel(id, "buyer asked", "ops").await.unwrap(), Cancellation::Applied);
    let run = wait_for_status(&db.pool, id, "cancelled").await;
    worker.stop().await;
    assert_eq!(run.cancel_reason.as_deref(), Some("buyer asked"));
    let last = db::runs::history(&db.pool, id).await.unwrap().pop().unwrap();
    assert_eq!((last.step.as_str(), last.outcome.as_str()), ("undo", "next:ok"), "the cancel path ran");
    assert!(matches!(engine.cancel(id, "again", "ops").await, Err(Error::Conflict(_))));
}

const GATED: &str = r#"
name = "gated"
version = 1
start = "pay"
on_cancel = "undo"
[steps.pay]
handler = "gate"
on = { ok = "enroll" }
[steps.enroll]
handler = "count"
on = { ok = "succeeded" }
[steps.undo]
handler = "count"
on = { ok = "cancelled" }
"#;

async fn cancel_while(step: &str) -> (TestDb, bursar::db::runs::Run, Vec<String>) {
    let db = TestDb::new().await;
    let mut h = HandlerRegistry::new();
    let gate = Arc::new(tokio::sync::Notify::new());
    h.register("count", Counting::default());
    h.register("gate", Gate(gate.clone()));
    let text = if step == "pay" {
        GATED.to_owned()
    } else {
        GATED
            .replace("ok = \"enroll\"", "ok = \"succeeded\"")
            .replace("[steps.enroll]\nhandler = \"count\"\non = { ok = \"succeeded\" }\n", "")
    };
    let engine = engine(&db.pool, &[&text], h);
    let worker = spawn_worker(&engine, fast_worker());
    let id = engine.start_now(SYSTEM_TENANT, "gated", "k", &json!({})).await.unwrap().run_id;
    wait_for_run(&db.pool, id, std::time::Duration::from_secs(10), |r| r.status == "running" && r.step == "pay").await;

    assert_eq!(engine.cancel(id, "fraud", "ops").await.unwrap(), Cancellation::Requested);
    gate.notify_waiters();
    let run = wait_for_run(&db.pool, id, std::time::Duration::from_secs(10), |r| {
        r.status == "cancelled" || r.status == "succeeded"
    })
    .await;
    worker.stop().await;
    let steps = db::runs::history(&db.pool, id).await.unwrap().into_iter().map(|h| h.step).collect();
    (db, run, steps)
}

#[tokio::test]
async fn cancelling_a_running_step_takes_effect_when_it_commits() {
    let (_db, run, steps) = cancel_while("pay").await;
    assert_eq!(run.status, "cancelled");
    assert!(run.cancel_requested_at.is_none());
    assert_eq!(steps, ["pay", "undo"], "pay's result committed, then the cancel path ran instead of enroll");
}

#[tokio::test]
async fn a_cancel_that_arrives_while_the_last_step_commits_is_too_late() {
    // pay routes straight to succeeded here: the run is done when its result lands.
    let (_db, run, steps) = cancel_while("last").await;
    assert_eq!(run.status, "succeeded");
    assert!(run.cancel_requested_at.is_none(), "the stale request is cleared");
    assert_eq!(steps, ["pay"]);
}

#[derive(Clone)]
struct Gate(Arc<tokio::sync::Notify>);

#[async_trait]
impl StepHandler for Gate {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }
    async fn run(&self, _ctx: &mut StepCtx) -> Outcome {
        self.0.notified().await;
        Outcome::next("ok")
    }
}
