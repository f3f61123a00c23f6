//! The sandbox provider writes its books in batches: calls that arrive
//! together share a statement. A batch must keep every promise a single
//! call keeps: one change per idempotency key, whatever arrives beside it.

use std::future::Future;
use std::sync::Arc;

use bursar::domain::money::{Currency, Money};
use bursar::providers::sandbox::Sandbox;
use bursar::providers::{Authorization, AuthorizeRequest, PaymentProvider};
use uuid::Uuid;

use crate::support::TestDb;

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, "USD".parse::<Currency>().unwrap())
}

/// Runs the calls at once and returns their answers in order.
async fn at_once<T: Send + 'static>(calls: Vec<impl Future<Output = T> + Send + 'static>) -> Vec<T> {
    let handles: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
    let mut answers = Vec::new();
    for h in handles {
        answers.push(h.await.unwrap());
    }
    answers
}

async fn authorize(sandbox: Arc<Sandbox>, key: String, method: &'static str) -> Result<Authorization, String> {
    let req = AuthorizeRequest {
        tenant_id: Uuid::now_v7(),
        purchase_id: Uuid::now_v7(),
        amount: usd(4900),
        payment_method: method,
        idempotency_key: &key,
    };
    sandbox.authorize(&req).await.map_err(|e| e.to_string())
}

fn reference(a: &Authorization) -> String {
    match a {
        Authorization::Authorized { reference } => reference.clone(),
        other => panic!("not authorized: {other:?}"),
    }
}

#[tokio::test]
async fn calls_that_arrive_together_change_the_books_once_per_key() {
    let db = TestDb::new().await;
    let sandbox = Arc::new(Sandbox::new(db.pool.clone()));

    // Twenty purchases at once, one of them retried five times over.
    let keys = (0..20).map(|i| format!("auth-{i}")).chain((0..5).map(|_| "auth-again".to_owned()));
    let answers = at_once(keys.map(|key| authorize(sandbox.clone(), key, "pm_sandbox_ok")).collect()).await;
    let references: Vec<String> = answers.into_iter().map(|a| reference(&a.unwrap())).collect();
    let (distinct, repeated) = references.split_at(20);
    assert!(repeated.iter().all(|r| *r == repeated[0]), "one key, one answer: {repeated:?}");
    let charges: i64 = sqlx::query_scalar("SELECT count(*) FROM sandbox_charges").fetch_one(&db.pool).await.unwrap();
    assert_eq!(charges, 21, "a charge per key");

    // Every charge captured at once, one of them by five retries and a
    // refund of another beside them.
    let captures = (distinct.iter().map(|r| (r.clone(), format!("capture-{r}"))))
        .chain((0..5).map(|_| (repeated[0].clone(), "capture-again".to_owned())))
        .map(|(reference, key)| {
            let sandbox = sandbox.clone();
            async move { sandbox.capture(&reference, usd(4900), &key).await.map(|c| c.amount_minor) }
        });
    let captured = at_once(captures.collect()).await;
    assert!(captured.iter().all(|c| matches!(c, Ok(4900))), "{captured:?}");
    let refunded = sandbox.refund(&distinct[0], usd(900), "refund-0").await.unwrap();
    assert_eq!(refunded.amount_minor, 900);

    let books: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT reference, captured_minor, refunded_minor FROM sandbox_charges ORDER BY reference")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(books.iter().all(|(_, captured, _)| *captured == 4900), "captured once each: {books:?}");
    let refunds: Vec<i64> = books.iter().map(|(_, _, refunded)| *refunded).filter(|r| *r > 0).collect();
    assert_eq!(refunds, [900]);
}

#[tokio::test]
async fn an_outage_and_a_lost_answer_behave_the_same_in_a_batch() {
    let db = TestDb::new().await;
    let sandbox = Arc::new(Sandbox::new(db.pool.clone()));
    // Calls of a flaky method fail twice, then the third applies; an unknown
    // one applies on the first call but loses the answer. Beside them, in the
    // same batches, ordinary calls go through.
    for call in 1..=3 {
        let (flaky, unknown, ok) = tokio::join!(
            authorize(sandbox.clone(), "flaky".into(), "pm_sandbox_flaky"),
            authorize(sandbox.clone(), "unknown".into(), "pm_sandbox_unknown"),
            authorize(sandbox.clone(), format!("ok-{call}"), "pm_sandbox_ok"),
        );
        assert_eq!(flaky.is_ok(), call == 3, "flaky call {call}: {flaky:?}");
        assert_eq!(unknown.is_ok(), call > 1, "unknown call {call}: {unknown:?}");
        assert!(ok.is_ok());
    }
    let found = sandbox.lookup("unknown").await.unwrap();
    assert!(found.is_some_and(|answer| answer["result"] == "authorized"));
    let charges: i64 = sqlx::query_scalar("SELECT count(*) FROM sandbox_charges").fetch_one(&db.pool).await.unwrap();
    assert_eq!(charges, 5, "flaky once, unknown once, three ordinary ones");
}
