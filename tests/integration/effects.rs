use std::sync::atomic::Ordering;
use std::time::Duration;

use bursar::db;
use bursar::engine::{HandlerRegistry, SYSTEM_TENANT};
use serde_json::json;

use crate::provider::{CHARGE_WORKFLOW, ChargeHandler, FakeProvider};
use crate::support::*;

#[tokio::test]
async fn an_effect_whose_answer_was_lost_is_resolved_by_asking_not_by_calling_again() {
    let db = TestDb::new().await;
    let provider = FakeProvider::default();
    provider.lose_first_answer.store(true, Ordering::SeqCst);
    let server = provider.start().await;
    let mut h = HandlerRegistry::new();
    // The client gives up after 300 ms: the charge is applied, the answer lost.
    h.register("charge", ChargeHandler::new(server.uri(), Duration::from_millis(300)));
    let engine = engine(&db.pool, &[CHARGE_WORKFLOW], h);
    let worker = spawn_worker(&engine, fast_worker());

    let id = engine.start_now(SYSTEM_TENANT, "charge", "order-1", &json!({})).await.unwrap().run_id;
    let run = wait_for_status(&db.pool, id, "succeeded").await;
    worker.stop().await;

    assert_eq!(provider.posts_total(), 1, "charged once");
    assert_eq!(*provider.lookups.lock().unwrap(), 1, "the second attempt asked first");
    let key = format!("{id}:charge:charge");
    assert_eq!(provider.posts.lock().unwrap().get(&key), Some(&1), "with the ledger's stable key");
    assert_eq!(run.context["charge"]["idempotency_key"], json!(key));
    let effects = db::effects::for_run(&db.pool, id).await.unwrap();
    assert_eq!((effects[0].status.as_str(), effects[0].attempts), ("succeeded", 2));
    let h = db::runs::history(&db.pool, id).await.unwrap();
    assert_eq!(h[0].outcome, "retry");
    assert!(h[0].error.as_deref().unwrap().starts_with("outcome unknown"), "{:?}", h[0].error);
}

#[tokio::test]
async fn a_recorded_effect_is_not_repeated_when_its_step_runs_again() {
    let db = TestDb::new().await;
    let provider = FakeProvider::default();
    let server = provider.start().await;
    let mut h = HandlerRegistry::new();
    h.register("charge", ChargeHandler::new(server.uri(), Duration::from_secs(5)));
    let engine = engine(&db.pool, &[CHARGE_WORKFLOW], h);
    let worker = spawn_worker(&engine, fast_worker());
    let id = engine.start_now(SYSTEM_TENANT, "charge", "order-1", &json!({})).await.unwrap().run_id;
    wait_for_status(&db.pool, id, "succeeded").await;

    // An operator sends the run through the step again (as after a bad replay).
    sqlx::query("UPDATE runs SET status = 'failed' WHERE id = $1").bind(id).execute(&db.pool).await.unwrap();
    engine.replay(id, "checking the ledger", "test").await.unwrap();
    wait_for_status(&db.pool, id, "succeeded").await;
    worker.stop().await;
    assert_eq!(provider.posts_total(), 1);
    assert_eq!(db::runs::history(&db.pool, id).await.unwrap().len(), 2);
}
