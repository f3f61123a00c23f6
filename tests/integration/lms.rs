use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::app::TestApp;

const SECRET: &str = "lms-signing-secret-0123456789";

/// The platform's enrollment endpoint: checks the signature as a platform
/// must, records what it was told, and answers with `status`.
#[derive(Clone)]
struct Platform {
    status: Arc<AtomicU16>,
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Respond for Platform {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let signature = req.headers.get("bursar-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if bursar::signature::verify(SECRET, signature, &req.body, chrono::Utc::now().timestamp()).is_err() {
            return ResponseTemplate::new(401);
        }
        let key = req.headers.get("idempotency-key").unwrap().to_str().unwrap().to_owned();
        self.received.lock().unwrap().push((key, serde_json::from_slice(&req.body).unwrap()));
        ResponseTemplate::new(self.status.load(Ordering::SeqCst))
    }
}

async fn setup(status: u16) -> (TestApp, Platform, MockServer) {
    let app = TestApp::spawn().await;
    let platform = Platform { status: Arc::new(AtomicU16::new(status)), received: Arc::default() };
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(platform.clone()).mount(&server).await;
    let settings = app
        .patch_settings(
            &json!({"lms": {"type": "callback", "url": format!("{}/bursar/enroll", server.uri()), "secret": SECRET}}),
        )
        .await;
    assert_eq!(settings.status, 200, "{}", settings.body);
    let offering = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}, "capacity": 3,
                          "lms": {"course_id": "42"}});
    app.put_offering("rust-101", &offering).await;
    (app, platform, server)
}

fn purchase() -> Value {
    json!({"offering_id": "rust-101", "customer": {"email": "ana@example.org", "lms_user_id": "1007"},
           "payment": {"provider": "sandbox", "payment_method": "pm_sandbox_ok"}})
}

#[tokio::test]
async fn settings_keep_secrets_write_only_and_refuse_bad_targets() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get_settings().await.body["lms"], json!({"type": "none"}));
    let set = app
        .patch_settings(
            &json!({"lms": {"type": "callback", "url": "https://platform.example/enroll", "secret": SECRET},
                                "providers": {"stripe": {"api_key": "sk_test_secret", "webhook_secret": "whsec_x"}}}),
        )
        .await;
    assert_eq!(set.status, 200);
    let shown = app.get_settings().await.body;
    assert_eq!(
        shown["lms"],
        json!({"type": "callback", "url": "https://platform.example/enroll", "secret": {"set": true}})
    );
    assert_eq!(shown["providers"]["stripe"]["api_key"], json!({"set": true}));
    let text = shown.to_string();
    assert!(!text.contains(SECRET) && !text.contains("sk_test_secret"), "no secret is returned: {text}");

    let bad = app.patch_settings(&json!({"lms": {"type": "callback", "url": "not a url", "secret": SECRET}})).await;
    assert_eq!((bad.status, bad.error()), (400, ("invalid_request", Some("lms.url"))));
    let bad = app.patch_settings(&json!({"notifications": {"webhook_url": "ftp://x"}})).await;
    assert_eq!(bad.error(), ("invalid_request", Some("notifications.webhook_url")));
    assert_eq!(app.get_settings().await.body["lms"]["url"], "https://platform.example/enroll", "unchanged");
}

#[tokio::test]
async fn the_callback_lms_is_told_of_each_seat_signed_and_keyed() {
    let (app, platform, _server) = setup(200).await;
    let id = app.post_purchase(Some("p1"), &purchase()).await.body["id"].as_str().unwrap().to_owned();
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["seats"][0]["status"], "active");

    let received = platform.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (key, body) = &received[0];
    assert_eq!(body["action"], "enroll");
    assert_eq!(body["purchase_id"], json!(id));
    assert_eq!(body["seat_id"], done["seats"][0]["id"]);
    assert_eq!((body["offering_id"].as_str(), body["lms_course_id"].as_str()), (Some("rust-101"), Some("42")));
    assert_eq!(body["learner"], json!({"email": "ana@example.org", "lms_user_id": "1007"}));
    let uuid = |prefixed: &Value| uuid::Uuid::parse_str(prefixed.as_str().unwrap().split_once('_').unwrap().1).unwrap();
    let expected = format!("{}:enroll:enroll:{}", uuid(&done["run"]["id"]), uuid(&done["seats"][0]["id"]));
    assert_eq!(*key, expected, "the effects ledger's key for this run, step and seat");
}

#[tokio::test]
async fn an_lms_that_is_down_is_retried_with_the_same_key_until_it_answers() {
    let (app, platform, _server) = setup(503).await;
    let id = app.post_purchase(Some("p1"), &purchase()).await.body["id"].as_str().unwrap().to_owned();
    let received = platform.received.clone();
    crate::support::wait_until(std::time::Duration::from_secs(10), "two refused calls", || {
        received.lock().unwrap().len() >= 2
    })
    .await;
    platform.status.store(200, Ordering::SeqCst);
    app.wait_for_status(&id, "completed").await;
    let calls = platform.received.lock().unwrap().clone();
    assert!(calls.len() >= 3);
    assert!(calls.iter().all(|(k, _)| *k == calls[0].0), "every retry carries the same Idempotency-Key");
    assert_eq!(app.sandbox_charges(&id).await.body["data"][0]["captured"]["amount"], "49.00");
}

#[tokio::test]
async fn an_lms_that_refuses_for_good_gets_the_buyer_refunded() {
    let (app, platform, _server) = setup(404).await;
    let id = app.post_purchase(Some("p1"), &purchase()).await.body["id"].as_str().unwrap().to_owned();
    let failed = app.wait_for_status(&id, "failed").await;
    assert_eq!(failed["failure"]["code"], "enrollment_failed");
    assert_eq!(failed["payment"]["refunded"]["amount"], "49.00");
    assert_eq!(failed["seats"][0]["status"], "refunded");
    let charge = &app.sandbox_charges(&id).await.body["data"][0];
    assert_eq!(
        (charge["captured"]["amount"].as_str(), charge["refunded"]["amount"].as_str()),
        (Some("49.00"), Some("49.00"))
    );
    assert_eq!(app.get_offering("rust-101").await.body["seats_taken"], 0, "the seat is free again");
    assert_eq!(platform.received.lock().unwrap().len(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn a_refund_step_that_runs_again_after_its_refund_was_recorded_refunds_nothing_twice() {
    let (app, _platform, _server) = setup(404).await;
    let id = app.post_purchase(Some("p1"), &purchase()).await.body["id"].as_str().unwrap().to_owned();
    let failed = app.wait_for_status(&id, "failed").await;
    let run = uuid::Uuid::parse_str(&failed["run"]["id"].as_str().unwrap()["run_".len()..]).unwrap();

    // The state a crash could leave: the refund recorded on the purchase, but
    // the step's completion lost, so its ledger row is pending and the run
    // goes through the refund step again.
    sqlx::query("UPDATE effects SET status = 'pending', response = NULL WHERE run_id = $1 AND step = 'refund'")
        .bind(run)
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE runs SET status = 'ready', step = 'refund', attempt = 0, wake_at = now(), failure_code = NULL,
                finished_at = NULL WHERE id = $1",
    )
    .bind(run)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('bursar_runs', '')").execute(&app.db.pool).await.unwrap();

    let again = app.wait_for_purchase(&id, |p| p["run"]["status"] != "ready" && p["run"]["status"] != "running").await;
    assert_eq!(again["status"], "failed", "{again:#}");
    assert_eq!(again["failure"]["code"], "enrollment_failed");
    assert_eq!(again["payment"]["refunded"]["amount"], "49.00", "refunded once, not twice");
    let charge = &app.sandbox_charges(&id).await.body["data"][0];
    assert_eq!(charge["refunded"]["amount"], "49.00", "the provider refunded once: the step asked before calling");
}

#[tokio::test]
async fn provider_credentials_are_checked_and_patched_field_by_field() {
    let app = TestApp::spawn().await;
    let stored = || async { bursar::db::settings::get(&app.db.pool, app.tenant_id).await.unwrap().2 };
    let both = json!({"providers": {"stripe": {"api_key": "sk_test_1", "webhook_secret": "whsec_1"}}});
    assert_eq!(app.patch_settings(&both).await.status, 200);
    // Rotating the webhook secret keeps the API key.
    let rotated = app.patch_settings(&json!({"providers": {"stripe": {"webhook_secret": "whsec_2"}}})).await;
    assert_eq!(rotated.status, 200);
    assert_eq!(rotated.body["providers"]["stripe"], json!({"api_key": {"set": true}, "webhook_secret": {"set": true}}));
    assert_eq!(stored().await["stripe"], json!({"api_key": "sk_test_1", "webhook_secret": "whsec_2"}));

    let refused = [
        (json!({"stripe": {"bogus": "1"}}), "providers.stripe.bogus"),
        (json!({"stripe": {"api_key": 42}}), "providers.stripe.api_key"),
        (json!({"stripe": {"api_key": ""}}), "providers.stripe.api_key"),
        (json!({"paypal": {"api_key": "x"}}), "providers.paypal.api_key"),
        (json!({"adyen": {"api_key": "x"}}), "providers.adyen"),
        (json!({"stripe": "sk_test_3"}), "providers.stripe"),
        (json!(["stripe"]), "providers"),
    ];
    for (providers, field) in refused {
        let a = app.patch_settings(&json!({"providers": providers})).await;
        assert_eq!((a.status, a.error()), (400, ("invalid_request", Some(field))), "{providers}");
    }
    assert_eq!(stored().await["stripe"]["api_key"], "sk_test_1", "a refused PATCH changes nothing");

    // null removes a field, or a provider's credentials altogether.
    let paypal = json!({"providers": {"paypal": {"client_id": "c", "client_secret": "s", "webhook_id": "w"},
                                      "stripe": {"webhook_secret": null}}});
    assert_eq!(app.patch_settings(&paypal).await.status, 200);
    assert_eq!(stored().await["stripe"], json!({"api_key": "sk_test_1"}));
    let removed = app.patch_settings(&json!({"providers": {"stripe": null}})).await;
    assert_eq!(
        removed.body["providers"],
        json!({"paypal": {"client_id": {"set": true}, "client_secret": {"set": true}, "webhook_id": {"set": true}}})
    );
}
