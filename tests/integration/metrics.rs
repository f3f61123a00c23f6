use serde_json::json;

use crate::app::TestApp;

#[tokio::test]
async fn metrics_show_runs_steps_webhooks_and_the_notification_backlog() {
    let app = TestApp::spawn().await;
    app.put_offering("rust-101", &json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}})).await;
    let body = json!({"offering_id": "rust-101", "customer": {"email": "ana@example.org"},
                      "payment": {"provider": "sandbox", "payment_method": "pm_sandbox_ok"}});
    let id = app.post_purchase(Some("p"), &body).await.body["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "completed").await;
    let forged = app.post_webhook("sandbox", &app.tenant_id.to_string(), Some("t=1,v1=00"), "{}").await;
    assert_eq!(forged.status, 400);

    let res = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    let has = |needle: &str| assert!(text.lines().any(|l| l.starts_with(needle)), "no `{needle}` in\n{text}");
    has("bursar_runs{workflow=\"purchase\",status=\"succeeded\"} 1");
    has("bursar_step_duration_seconds_count{workflow=\"purchase\",step=\"capture\",outcome=\"next\"} 1");
    has("bursar_webhooks_total{provider=\"sandbox\",result=\"rejected\"} 1");
    // Two webhooks (created, completed) and two mails (receipt, enrollment), not yet delivered.
    has("bursar_notification_backlog 4");
    has("bursar_oldest_due_run_age_seconds 0");
    assert!(!text.contains(&app.api_key) && !text.contains("whsec_"), "no secret in metrics");
}
