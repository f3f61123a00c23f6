use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bursar::db;
use bursar::engine::{Delivery, HandlerRegistry, Outcome, SYSTEM_TENANT, StepCtx, StepHandler};
use chrono::Utc;
use serde_json::json;

use crate::support::*;

/// Waits for `paid` (with a deadline `deadline_ms` from now), and records every
/// payload it is resumed with.
#[derive(Clone, Default)]
struct AwaitPayment {
    deadline_ms: Option<i64>,
    seen: Arc<Mutex<Vec<serde_json::Value>>>,
}

#[async_trait]
impl StepHandler for AwaitPayment {
    fn outcomes(&self) -> &[&'static str] {
        &["paid"]
    }
    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        match &ctx.signal {
            Some(signal) => {
                self.seen.lock().unwrap().push(signal.payload.clone());
                ctx.context["paid"] = signal.payload.clone();
                Outcome::next("paid")
            }
            None => {
                let deadline = self.deadline_ms.map(|ms| Utc::now() + chrono::Duration::milliseconds(ms));
                Outcome::wait(&["paid", "declined"], deadline)
            }
        }
    }
}

const PAYMENT: &str = r#"
name = "payment"
version = 1
start = "prepare"
[steps.prepare]
handler = "count"
on = { ok = "await" }
[steps.await]
handler = "await"
wait_for = ["paid", "declined"]
on = { paid = "succeeded", deadline = "expire" }
[steps.expire]
handler = "count"
on = { ok = "failed" }
"#;

fn setup(db: &TestDb, awaiting: AwaitPayment) -> bursar::engine::Engine {
    let mut h = HandlerRegistry::new();
    h.register("count", Counting::default());
    h.register("await", awaiting);
    engine(&db.pool, &[PAYMENT], h)
}

#[tokio::test]
async fn a_waiting_run_resumes_when_its_signal_arrives() {
    let db = TestDb::new().await;
    let awaiting = AwaitPayment::default();
    let engine = setup(&db, awaiting.clone());
    let worker = spawn_worker(&engine, fast_worker());
    let id = engine.start_now(SYSTEM_TENANT, "payment", "k", &json!({})).await.unwrap().run_id;
    let waiting = wait_for_status(&db.pool, id, "waiting").await;
    assert_eq!(waiting.waiting_for, Some(vec!["paid".to_string(), "declined".to_string()]));
    assert_eq!(waiting.wake_at, None, "no deadline was asked for");

    let d = engine.signal_now(id, "paid", "evt_1", &json!({"amount": "49.00"})).await.unwrap();
    assert_eq!(d, Delivery::Stored { woke: true });
    let run = wait_for_status(&db.pool, id, "succeeded").await;
    worker.stop().await;
    assert_eq!(run.context["paid"], json!({"amount": "49.00"}));
    let signals = db::signals::for_run(&db.pool, id).await.unwrap();
    assert_eq!(signals[0].consumed_by_step.as_deref(), Some("await"));
}

#[tokio::test]
async fn a_signal_that_arrives_before_the_wait_is_kept_and_consumed() {
    let db = TestDb::new().await;
    let awaiting = AwaitPayment::default();
    let engine = setup(&db, awaiting.clone());
    let id = engine.start_now(SYSTEM_TENANT, "payment", "k", &json!({})).await.unwrap().run_id;
    // No worker yet: the run has not reached its wait when the webhook comes.
    let d = engine.signal_now(id, "paid", "evt_early", &json!({"early": true})).await.unwrap();
    assert_eq!(d, Delivery::Stored { woke: false });

    let worker = spawn_worker(&engine, fast_worker());
    let run = wait_for_status(&db.pool, id, "succeeded").await;
    worker.stop().await;
    assert_eq!(run.context["paid"], json!({"early": true}));
    assert_eq!(awaiting.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_duplicated_signal_has_one_effect() {
    let db = TestDb::new().await;
    let awaiting = AwaitPayment::default();
    let engine = setup(&db, awaiting.clone());
    let worker = spawn_worker(&engine, fast_worker());
    let id = engine.start_now(SYSTEM_TENANT, "payment", "k", &json!({})).await.unwrap().run_id;
    wait_for_status(&db.pool, id, "waiting").await;

    // The provider delivers the same event ten times at once.
    let deliveries: Vec<_> = (0..10)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.signal_now(id, "paid", "evt_dup", &json!({"n": 1})).await.unwrap() })
        })
        .collect();
    let mut stored = 0;
    for d in deliveries {
        if matches!(d.await.unwrap(), Delivery::Stored { .. }) {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    wait_for_status(&db.pool, id, "succeeded").await;
    // And once more after the run finished.
    assert_eq!(engine.signal_now(id, "paid", "evt_dup", &json!({"n": 1})).await.unwrap(), Delivery::Duplicate);
    worker.stop().await;
    assert_eq!(awaiting.seen.lock().unwrap().len(), 1, "the step saw the event once");
    assert_eq!(db::signals::for_run(&db.pool, id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_deadline_fires_the_timer_step() {
    let db = TestDb::new().await;
    let engine = setup(&db, AwaitPayment { deadline_ms: Some(300), ..Default::default() });
    let worker = spawn_worker(&engine, fast_worker());
    let id = engine.start_now(SYSTEM_TENANT, "payment", "k", &json!({})).await.unwrap().run_id;
    let waiting = wait_for_status(&db.pool, id, "waiting").await;
    assert!(waiting.wake_at.is_some());
    let run = wait_for_run(&db.pool, id, Duration::from_secs(10), |r| r.status == "failed").await;
    worker.stop().await;
    assert_eq!(run.failure_code.as_deref(), Some("ok"), "expire's `ok` routes to failed");
    let h = db::runs::history(&db.pool, id).await.unwrap();
    let path: Vec<_> = h.iter().map(|e| (e.step.as_str(), e.outcome.as_str())).collect();
    assert_eq!(path, [("prepare", "next:ok"), ("await", "wait"), ("await", "deadline"), ("expire", "next:ok")]);
    assert!(h[2].started_at >= h[1].finished_at + chrono::Duration::milliseconds(250));
}

#[tokio::test]
async fn a_signal_for_an_unknown_run_is_refused() {
    let db = TestDb::new().await;
    let engine = setup(&db, AwaitPayment::default());
    let err = engine.signal_now(uuid::Uuid::now_v7(), "paid", "e", &json!({})).await.unwrap_err();
    assert!(matches!(err, bursar::engine::Error::NotFound));
}
