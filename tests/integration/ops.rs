//! Operators: find a stuck purchase, see why, replay it once the cause is
//! fixed, through the ops API and through `bursar ops runs`.

use serde_json::{Value, json};

use crate::app::TestApp;

/// A purchase whose capture the provider refused (its webhook said
/// authorized, the provider had not): the run parks at capture.
async fn parked_purchase(app: &TestApp) -> (String, String, String) {
    parked_purchase_number(app, 0).await
}

async fn parked_purchase_number(app: &TestApp, n: usize) -> (String, String, String) {
    let offering = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}});
    app.put_offering("rust-101", &offering).await;
    let body = json!({"offering_id": "rust-101", "customer": {"email": "ana@example.org"},
                      "payment": {"provider": "sandbox", "payment_method": "pm_sandbox_requires_action"}});
    let id = app.post_purchase(Some(&format!("p{n}")), &body).await.body["id"].as_str().unwrap().to_owned();
    let waiting =
        app.wait_for_purchase(&id, |p| p["status"] == "requires_action" && p["run"]["status"] == "waiting").await;
    let reference = waiting["payment"]["next_action"]["reference"].as_str().unwrap().to_owned();
    let event =
        json!({"id": format!("evt_early_{n}"), "type": "payment.authorized", "data": {"purchase_id": id}}).to_string();
    let secret = app.webhook_secret("sandbox").await;
    let signed = bursar::signature::sign(&secret, chrono::Utc::now().timestamp(), event.as_bytes());
    app.post_webhook("sandbox", &app.tenant_id.to_string(), Some(&signed), &event).await;
    let parked = app.wait_for_purchase(&id, |p| p["run"]["status"] == "parked").await;
    assert_eq!(parked["run"]["step"], "capture");
    (id, parked["run"]["id"].as_str().unwrap().to_owned(), reference)
}

#[tokio::test]
async fn a_stuck_purchase_is_found_explained_and_replayed_once_its_cause_is_fixed() {
    let app = TestApp::spawn().await;
    let (purchase, run, reference) = parked_purchase(&app).await;

    let list = app.ops(reqwest::Method::GET, "/runs?status=parked", None).await.body;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], json!(run));
    let show = app.ops(reqwest::Method::GET, &format!("/runs/{run}"), None).await.body;
    assert!(show["last_error"].as_str().unwrap().contains("refused the capture"), "{show:#}");
    let outcomes: Vec<_> = show["timeline"].as_array().unwrap().iter().map(|h| h["outcome"].clone()).collect();
    assert_eq!(outcomes.last().unwrap(), "park");
    assert_eq!(show["signals"][0]["name"], "payment.authorized");

    let dry = app
        .ops(reqwest::Method::POST, &format!("/runs/{run}/replay?dry_run=true"), Some(json!({"reason": "check"})))
        .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    let plan: Vec<(String, String)> = dry.body["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["step"].as_str().unwrap().to_owned(), e["on_replay"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(plan, [("authorize".to_owned(), "skip".to_owned()), ("capture".to_owned(), "call_again".to_owned())]);
    assert_eq!(dry.body["run"]["status"], "parked", "a dry run changes nothing");

    let no_reason = app.ops(reqwest::Method::POST, &format!("/runs/{run}/replay"), Some(json!({"reason": " "}))).await;
    assert_eq!((no_reason.status, no_reason.error()), (400, ("invalid_request", Some("reason"))));

    // The cause: the buyer never completed the action. Now they do; replay.
    bursar::db::sandbox::complete_action(&app.db.pool, app.tenant_id, &reference).await.unwrap().unwrap();
    let replayed = app
        .ops(reqwest::Method::POST, &format!("/runs/{run}/replay"), Some(json!({"reason": "buyer completed 3DS"})))
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    app.wait_for_status(&purchase, "completed").await;
    let charges = app.sandbox_charges(&purchase).await.body;
    assert_eq!(charges["data"][0]["captured"]["amount"], "49.00", "captured once");
    let show = app.ops(reqwest::Method::GET, &format!("/runs/{run}"), None).await.body;
    assert_eq!(show["actions"][0]["actor"], "api-key:default");
    assert_eq!(show["actions"][0]["reason"], "buyer completed 3DS");
    let authorize_calls = show["effects"].as_array().unwrap().iter().filter(|e| e["step"] == "authorize").count();
    assert_eq!(authorize_calls, 1);

    let again = app.ops(reqwest::Method::POST, &format!("/runs/{run}/cancel"), Some(json!({"reason": "late"}))).await;
    assert_eq!((again.status, again.error().0), (409, "conflict"), "a completed run cannot be cancelled");
    let other = app.other_tenant_key().await;
    let hidden = app.send(reqwest::Method::GET, &format!("/v1/ops/runs/{run}"), Some(&other), None).await;
    assert_eq!(hidden.status, 404);
}

fn bursar_cli(db_url: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bursar"))
        .args(["ops", "runs"])
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("USER", "ana")
        .env("BURSAR_LOG", "error")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn the_command_line_lists_shows_and_replays_runs_as_the_api_does() {
    let app = TestApp::spawn().await;
    let (purchase, run, reference) = parked_purchase(&app).await;
    let url = app.db.url.clone();

    let (ok, out) = bursar_cli(&url, &["list", "--status", "parked", "--json"]);
    assert!(ok, "{out}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"], json!(run));
    let (ok, out) = bursar_cli(&url, &["list"]);
    assert!(ok && out.starts_with("ID") && out.contains(&run) && out.contains("parked"), "{out}");
    let (ok, out) = bursar_cli(&url, &["show", &run]);
    assert!(ok && out.contains("timeline") && out.contains("refused the capture"), "{out}");
    let (ok, out) = bursar_cli(&url, &["replay", &run, "--reason", "check", "--dry-run"]);
    assert!(ok && out.contains("would resume") && out.contains("call_again"), "{out}");

    bursar::db::sandbox::complete_action(&app.db.pool, app.tenant_id, &reference).await.unwrap().unwrap();
    let (ok, out) = bursar_cli(&url, &["replay", &run, "--reason", "fixed at the provider"]);
    assert!(ok, "{out}");
    app.wait_for_status(&purchase, "completed").await;
    let (ok, out) = bursar_cli(&url, &["show", &run, "--json"]);
    assert!(ok, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["actions"][0]["actor"].as_str(), report["actions"][0]["reason"].as_str()),
        (Some("cli:ana"), Some("fixed at the provider"))
    );
    let (ok, out) = bursar_cli(&url, &["replay", &run, "--reason", "again"]);
    assert!(!ok && out.contains("only a parked or failed run can be replayed"), "{out}");
}

#[tokio::test]
async fn many_runs_are_replayed_by_filter_after_a_confirmation() {
    let app = TestApp::spawn().await;
    let mut parked = Vec::new();
    for n in 0..2 {
        parked.push(parked_purchase_number(&app, n).await);
    }
    let url = app.db.url.clone();
    let (ok, out) = bursar_cli(&url, &["replay", "--reason", "x"]);
    assert!(!ok && out.contains("at least --status"), "a filter is required: {out}");
    let (ok, out) = bursar_cli(
        &url,
        &["replay", "--status", "parked", "--error-contains", "REFUSED THE CAPTURE", "--reason", "x", "--dry-run"],
    );
    assert!(ok && out.starts_with("would replay 2 run(s)"), "{out}");
    // No --yes and nobody to answer: nothing happens.
    let (ok, out) = bursar_cli(&url, &["replay", "--status", "parked", "--reason", "x"]);
    assert!(!ok && out.contains("not confirmed"), "{out}");
    for (_, run, _) in &parked {
        assert_eq!(
            bursar::db::runs::get(&app.db.pool, bursar::ops::parse_run_id(run).unwrap()).await.unwrap().unwrap().status,
            "parked"
        );
    }

    for (_, _, reference) in &parked {
        bursar::db::sandbox::complete_action(&app.db.pool, app.tenant_id, reference).await.unwrap().unwrap();
    }
    let (ok, out) = bursar_cli(
        &url,
        &[
            "replay",
            "--status",
            "parked",
            "--workflow",
            "purchase",
            "--step",
            "capture",
            "--reason",
            "provider fixed",
            "--yes",
            "--json",
        ],
    );
    assert!(ok, "{out}");
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((result["done"].clone(), result["skipped"].clone()), (json!(2), json!([])));
    for (purchase, _, _) in &parked {
        app.wait_for_status(purchase, "completed").await;
    }
    let (ok, out) = bursar_cli(&url, &["cancel", "--status", "parked", "--reason", "none left", "--yes"]);
    assert!(ok && out.contains("cancel: 0 done, 0 skipped"), "{out}");
}
