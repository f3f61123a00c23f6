//! The purchase writer (`api::creates`): creates that arrive together are one
//! statement, and each still gets its own answer.

use std::time::Duration;

use bursar::db::purchases::{Create, create_many};
use bursar::domain::purchase::NewPurchase;
use bursar::engine::Engine;
use bursar::steps::purchase::{Facts, start_context};
use serde_json::json;
use uuid::Uuid;

use crate::app::TestApp;

async fn app_with_offering() -> (TestApp, Engine) {
    let app = TestApp::spawn().await;
    let offering = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}, "capacity": null});
    assert_eq!(app.put_offering("rust-101", &offering).await.status, 201);
    let providers = bursar::steps::providers(&app.db.pool);
    let engine =
        Engine::new(app.db.pool.clone(), bursar::workflows::builtin().unwrap(), bursar::steps::registry(&providers))
            .unwrap();
    (app, engine)
}

/// A create as the API makes it, for key `key` by `email`.
fn create(engine: &Engine, tenant_id: Uuid, key: &str, email: &str, name: Option<&str>) -> Create {
    let id = Uuid::now_v7();
    let purchase = NewPurchase {
        offering_id: "rust-101".into(),
        quantity: 1,
        email: email.into(),
        name: name.map(Into::into),
        lms_user_id: None,
        provider: "sandbox".into(),
        payment_method: "pm_sandbox_ok".into(),
        enrollment_mode: "immediate",
        assignees: vec![],
    };
    let facts = Facts {
        id,
        tenant_id,
        offering_id: purchase.offering_id.clone(),
        quantity: 1,
        currency: "USD".into(),
        total_minor: 4900,
        provider: purchase.provider.clone(),
        payment_method: purchase.payment_method.clone(),
        customer_email: email.into(),
    };
    let run = engine.new_run(tenant_id, "purchase", &format!("purchase:{id}"), start_context(&facts)).unwrap();
    Create {
        id,
        tenant_id,
        currency: "USD".into(),
        total_minor: 4900,
        purchase,
        seat_ids: vec![Uuid::now_v7()],
        created_at: chrono::Utc::now(),
        created_event: json!({"type": "purchase.created"}),
        run,
        endpoint: "POST /v1/purchases",
        key: key.into(),
        request_hash: vec![1],
        response: json!({"id": id}),
    }
}

#[tokio::test]
async fn purchases_by_one_customer_in_one_statement_share_the_customer() {
    let (app, engine) = app_with_offering().await;
    let first = create(&engine, app.tenant_id, "k-1", "ana@example.org", Some("Ana"));
    let second = create(&engine, app.tenant_id, "k-2", "ana@example.org", None);
    let created = create_many(&app.db.pool, &[&first, &second]).await.expect("one statement takes both");
    assert_eq!(created.len(), 2);
    assert_eq!(created[&first.id], created[&second.id], "one customer");
    let customers: Vec<(Uuid, Option<String>)> =
        sqlx::query_as("SELECT id, name FROM customers").fetch_all(&app.db.pool).await.unwrap();
    assert_eq!(customers, vec![(created[&first.id], Some("Ana".to_owned()))], "the name given is kept");
    let stored: Vec<String> = sqlx::query_scalar("SELECT response->>'customer_id' FROM idempotency_keys ORDER BY key")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let expected = bursar::api::ids::customer(created[&first.id]);
    assert_eq!(stored, vec![expected.clone(), expected], "each stored answer names the customer");
}

#[tokio::test]
async fn a_refused_batch_is_written_one_by_one_and_each_create_gets_its_answer() {
    let (app, engine) = app_with_offering().await;
    let pool = app.db.pool.clone();
    // Another server's request holds key k-taken, not yet committed.
    let mut other = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, endpoint, key, request_hash, status_code, response)
         VALUES ($1, 'POST /v1/purchases', 'k-taken', '\\x00', 201, '{}')",
    )
    .bind(app.tenant_id)
    .execute(&mut *other)
    .await
    .unwrap();

    let creates = bursar::api::creates::Creates::new(pool.clone());
    // Spawned together on this test's single thread, the three are queued
    // before the writer runs, so they share its first statement.
    let tasks: Vec<_> = ["k-taken", "k-1", "k-2"]
        .into_iter()
        .map(|key| {
            let (creates, create) =
                (creates.clone(), create(&engine, app.tenant_id, key, &format!("{key}@example.org"), None));
            tokio::spawn(async move { creates.create(create).await })
        })
        .collect();
    // That statement waits for k-taken; the other request then commits it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the batch never waited for the held key");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    other.commit().await.unwrap();

    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert_eq!(answers[0], Ok(None), "k-taken answers as taken");
    assert!(matches!(answers[1], Ok(Some(_))) && matches!(answers[2], Ok(Some(_))), "{answers:?}");
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT k.key FROM idempotency_keys k JOIN purchases p ON k.response->>'id' = p.id::text ORDER BY k.key",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(keys, vec!["k-1", "k-2"], "the other two were created, k-taken's create was not");
    assert_eq!(counts(&pool).await, (2, 2, 2, 2), "k-taken left nothing behind");
}

/// Runs, customers, seats and `purchase.created` messages (the worker adds
/// others as the runs go on).
async fn counts(pool: &sqlx::PgPool) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM customers), (SELECT count(*) FROM seats),
                (SELECT count(*) FROM outbox WHERE dedup_key LIKE '%:created')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_create_whose_key_was_taken_earlier_leaves_the_rest_of_its_statement_alone() {
    let (app, engine) = app_with_offering().await;
    let earlier = create(&engine, app.tenant_id, "k-0", "ana@example.org", None);
    assert_eq!(create_many(&app.db.pool, &[&earlier]).await.unwrap().len(), 1);
    let again = create(&engine, app.tenant_id, "k-0", "bea@example.org", None);
    let other = create(&engine, app.tenant_id, "k-1", "cai@example.org", None);
    let created = create_many(&app.db.pool, &[&again, &other]).await.unwrap();
    assert_eq!(created.keys().collect::<Vec<_>>(), vec![&other.id], "only the free key's create is written");
    assert_eq!(counts(&app.db.pool).await, (2, 2, 2, 2), "nothing of the taken key's second create");
}
