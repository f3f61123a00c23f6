//! No secret reaches a log: every log line of a whole purchase, with its
//! settings, webhooks and notifications, is captured at debug level and
//! searched for each secret involved.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::app::TestApp;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    // Each test runs in a process of its own (nextest), so this subscriber is the one.
    let _ = tracing_subscriber::fmt().with_env_filter("debug").with_writer(move || writer.clone()).try_init();
    let app = TestApp::spawn().await;
    let lms_secret = "lms-secret-never-logged-0123";
    let stripe_key = "sk_test_never_logged_4567";
    app.patch_settings(&json!({
        "lms": {"type": "callback", "url": "http://127.0.0.1:9/unreachable", "secret": lms_secret},
        "notifications": {"webhook_url": "http://127.0.0.1:9/events", "webhook_secret": "notify-secret-never-logged-89"},
        "providers": {"stripe": {"api_key": stripe_key}}
    }))
    .await;
    app.put_offering("rust-101", &json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}})).await;
    let body = json!({"offering_id": "rust-101", "customer": {"email": "ana@example.org"},
                      "payment": {"provider": "sandbox", "payment_method": "pm_sandbox_requires_action"}});
    let id = app.post_purchase(Some("p"), &body).await.body["id"].as_str().unwrap().to_owned();
    let waiting = app.wait_for_purchase(&id, |p| p["run"]["status"] == "waiting").await;
    let reference = waiting["payment"]["next_action"]["reference"].as_str().unwrap().to_owned();
    app.complete_sandbox_payment(&reference).await;
    let forged = bursar::signature::sign("whsec_wrong", chrono::Utc::now().timestamp(), b"{}");
    app.post_webhook("sandbox", &app.tenant_id.to_string(), Some(&forged), "{}").await;
    // The LMS is unreachable: the enroll step fails and logs why, a few times.
    app.wait_for_purchase(&id, |p| p["run"]["step"] == "enroll").await;
    bursar::notify::Deliverer::new(app.db.pool.clone(), Default::default()).deliver_due().await.unwrap();

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(text.len() > 1000, "the flow logged something at debug level ({} bytes)", text.len());
    let sandbox_secret = app.webhook_secret("sandbox").await;
    for secret in [app.api_key.as_str(), &sandbox_secret, lms_secret, stripe_key, "notify-secret-never-logged-89"] {
        assert!(!text.contains(secret), "a secret reached the logs: {secret}");
    }
}
