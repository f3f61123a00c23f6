use serde_json::{Value, json};

use crate::app::TestApp;

async fn waiting_purchase(app: &TestApp) -> (String, String) {
    let offering = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}, "capacity": 5});
    app.put_offering("rust-101", &offering).await;
    let body = json!({
        "offering_id": "rust-101",
        "customer": {"email": "ana@example.org"},
        "payment": {"provider": "sandbox", "payment_method": "pm_sandbox_requires_action"}
    });
    let id = app.post_purchase(Some("3ds"), &body).await.body["id"].as_str().unwrap().to_owned();
    let waiting =
        app.wait_for_purchase(&id, |p| p["status"] == "requires_action" && p["run"]["status"] == "waiting").await;
    assert_eq!(waiting["run"]["step"], "authorize");
    let action = &waiting["payment"]["next_action"];
    assert_eq!(action["type"], "sandbox_confirm");
    (id, action["reference"].as_str().unwrap().to_owned())
}

fn event(purchase_id: &str, event_id: &str) -> String {
    json!({"id": event_id, "type": "payment.authorized", "data": {"reference": "r", "purchase_id": purchase_id}})
        .to_string()
}

#[tokio::test]
async fn a_payment_that_needs_the_buyer_waits_and_resumes_on_the_signed_webhook() {
    let app = TestApp::spawn().await;
    let (id, reference) = waiting_purchase(&app).await;
    let charges = app.sandbox_charges(&id).await.body;
    assert_eq!(charges["data"][0]["status"], "requires_action");

    let completed = app.complete_sandbox_payment(&reference).await;
    assert_eq!(completed.status, 200, "{}", completed.body);
    assert_eq!(completed.body["webhook"]["delivered"], true, "{}", completed.body);
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["payment"]["captured"]["amount"], "49.00");
    assert_eq!(done["payment"]["next_action"], Value::Null);
    let charges = app.sandbox_charges(&id).await.body;
    assert_eq!(
        (charges["data"][0]["status"].as_str(), charges["data"][0]["captured"]["amount"].as_str()),
        (Some("captured"), Some("49.00"))
    );
    assert_eq!(app.complete_sandbox_payment(&reference).await.status, 409, "only once");
}

/// A run started by an older Bursar carries only the purchase id in its
/// context: the steps read what they need from the purchase instead.
#[tokio::test]
async fn a_run_whose_context_names_only_the_purchase_still_completes() {
    let app = TestApp::spawn().await;
    let (id, reference) = waiting_purchase(&app).await;
    let stripped: u64 = sqlx::query(
        "UPDATE runs SET context = jsonb_build_object('purchase_id', context->'purchase_id')
         WHERE context ? 'purchase' AND context ? 'payment_reference'",
    )
    .execute(&app.db.pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(stripped, 1, "the waiting run carried the purchase and its payment reference");

    assert_eq!(app.complete_sandbox_payment(&reference).await.status, 200);
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["payment"]["captured"]["amount"], "49.00");
    assert_eq!(done["seats"][0]["status"], "active");
}

#[tokio::test]
async fn the_same_webhook_twice_has_one_effect() {
    let app = TestApp::spawn().await;
    let (id, reference) = waiting_purchase(&app).await;
    // The buyer acts at the provider; the provider's webhook then arrives twice.
    bursar::db::sandbox::complete_action(&app.db.pool, app.tenant_id, &reference).await.unwrap().unwrap();
    let secret = app.webhook_secret("sandbox").await;
    let body = event(&id, "evt_twice");
    let signed = bursar::signature::sign(&secret, chrono::Utc::now().timestamp(), body.as_bytes());
    let tenant = app.tenant_id.to_string();
    let first = app.post_webhook("sandbox", &tenant, Some(&signed), &body).await;
    let second = app.post_webhook("sandbox", &tenant, Some(&signed), &body).await;
    assert_eq!((first.status, first.body["duplicate"].clone()), (200, json!(false)));
    assert_eq!((second.status, second.body["duplicate"].clone()), (200, json!(true)));
    app.wait_for_status(&id, "completed").await;
    let run_signals: i64 = sqlx::query_scalar("SELECT count(*) FROM signals").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(run_signals, 1);
    assert_eq!(bursar::db::webhooks::count(&app.db.pool, app.tenant_id).await.unwrap(), 1);
}

/// A provider sends events Bursar has no use for (a dispute, a payout): signed
/// correctly, they are stored and acknowledged, not refused and resent.
#[tokio::test]
async fn a_signed_event_about_no_purchase_is_stored_and_acknowledged() {
    let app = TestApp::spawn().await;
    let secret = app.webhook_secret("sandbox").await;
    let tenant = app.tenant_id.to_string();
    for body in [
        json!({"id": "evt_dispute", "type": "charge.dispute.created", "data": {"reference": "sbx_1"}}),
        json!({"id": "evt_ping", "type": "ping"}),
        json!({"id": "evt_odd", "type": "payment.authorized", "data": {"purchase_id": 42}}),
    ] {
        let body = body.to_string();
        let signed = bursar::signature::sign(&secret, chrono::Utc::now().timestamp(), body.as_bytes());
        let first = app.post_webhook("sandbox", &tenant, Some(&signed), &body).await;
        assert_eq!((first.status, first.body["duplicate"].clone()), (200, json!(false)), "{body}");
        let again = app.post_webhook("sandbox", &tenant, Some(&signed), &body).await;
        assert_eq!((again.status, again.body["duplicate"].clone()), (200, json!(true)), "{body}");
    }
    assert_eq!(bursar::db::webhooks::count(&app.db.pool, app.tenant_id).await.unwrap(), 3);
    let signals: i64 = sqlx::query_scalar("SELECT count(*) FROM signals").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(signals, 0, "nothing waits for them");
}

#[tokio::test]
async fn a_webhook_with_a_bad_signature_is_refused_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let (id, _reference) = waiting_purchase(&app).await;
    let body = event(&id, "evt_forged");
    let now = chrono::Utc::now().timestamp();
    let tenant = app.tenant_id.to_string();
    let secret = app.webhook_secret("sandbox").await;
    let cases = [
        None,
        Some(bursar::signature::sign("whsec_guessed", now, body.as_bytes())),
        Some(bursar::signature::sign(&secret, now - 600, body.as_bytes())),
        Some(bursar::signature::sign(&secret, now, b"a different body")),
        Some("t=1,v1=zz".to_owned()),
    ];
    for signature in &cases {
        let a = app.post_webhook("sandbox", &tenant, signature.as_deref(), &body).await;
        assert_eq!((a.status, a.error()), (400, ("invalid_request", Some("Bursar-Signature"))), "{signature:?}");
    }
    // The voucher secret does not sign sandbox events.
    let voucher = bursar::signature::sign(&app.webhook_secret("voucher").await, now, body.as_bytes());
    assert_eq!(app.post_webhook("sandbox", &tenant, Some(&voucher), &body).await.status, 400);
    assert_eq!(app.post_webhook("sandbox", "not-a-tenant", None, &body).await.status, 404);
    // Too large to read: refused in the error shape before anything is looked at.
    let huge = json!({"id": "evt_huge", "type": "payment.authorized", "data": {"padding": "x".repeat(100_000)}});
    let a = app.post_webhook("sandbox", &tenant, None, &huge.to_string()).await;
    assert_eq!((a.status, a.error().0), (413, "invalid_request"));

    assert_eq!(bursar::db::webhooks::count(&app.db.pool, app.tenant_id).await.unwrap(), 0);
    let signals: i64 = sqlx::query_scalar("SELECT count(*) FROM signals").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(signals, 0);
    assert_eq!(app.get_purchase(&id).await.body["status"], "requires_action");
}

#[tokio::test]
async fn a_rotated_secret_keeps_the_old_one_valid_for_its_grace_period_only() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant_id.to_string();
    let old = app.webhook_secret("sandbox").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bursar"))
        .args(["tenant", "rotate-webhook-secret", "--tenant", &tenant, "--provider", "sandbox", "--grace", "1h"])
        .env("DATABASE_URL", &app.db.url)
        .env("BURSAR_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rotated: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new = rotated["webhook_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    let send = |secret: String, n: u32| {
        let body =
            json!({"id": format!("evt_rot_{n}"), "type": "payment.authorized", "data": {"purchase_id": "pur_none"}})
                .to_string();
        let signed = bursar::signature::sign(&secret, chrono::Utc::now().timestamp(), body.as_bytes());
        let (app, tenant) = (&app, tenant.clone());
        async move { app.post_webhook("sandbox", &tenant, Some(&signed), &body).await.status }
    };
    assert_eq!(send(old.clone(), 1).await, 200, "the old secret still works during the grace period");
    assert_eq!(send(new.clone(), 2).await, 200);

    // Rotate again with no grace: the secret from the first rotation stops working at once.
    let newest =
        bursar::tenants::rotate_webhook_secret(&app.db.pool, app.tenant_id, "sandbox", std::time::Duration::ZERO)
            .await
            .unwrap()["webhook_secret"]
            .as_str()
            .unwrap()
            .to_owned();
    assert_eq!(send(new, 3).await, 400);
    assert_eq!(send(old, 4).await, 400);
    assert_eq!(send(newest, 5).await, 200);
}

#[tokio::test]
async fn a_payment_failed_webhook_fails_the_purchase_and_frees_its_seat() {
    let app = TestApp::spawn().await;
    let (id, _reference) = waiting_purchase(&app).await;
    let body = json!({"id": "evt_failed", "type": "payment.failed", "data": {"purchase_id": id}}).to_string();
    let secret = app.webhook_secret("sandbox").await;
    let signed = bursar::signature::sign(&secret, chrono::Utc::now().timestamp(), body.as_bytes());
    assert_eq!(app.post_webhook("sandbox", &app.tenant_id.to_string(), Some(&signed), &body).await.status, 200);
    let failed = app.wait_for_status(&id, "failed").await;
    assert_eq!(failed["failure"]["code"], "payment_declined");
    assert_eq!(failed["payment"]["captured"]["amount"], "0.00");
    assert_eq!(failed["seats"][0]["status"], "cancelled");
    assert_eq!(app.get_offering("rust-101").await.body["seats_taken"], 0);
}
