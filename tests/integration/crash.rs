//! A worker *process* killed with SIGKILL in the middle of a step: another
//! process finishes the run, and the charge it was making is applied once.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bursar::db;
use bursar::engine::{HandlerRegistry, SYSTEM_TENANT};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::provider::{CHARGE_WORKFLOW, FakeProvider};
use crate::support::*;

/// The example `crash_worker`, built by `cargo test` beside this test binary.
fn crash_worker_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = profile_dir.join("examples").join("crash_worker");
    assert!(bin.exists(), "{} is missing: run the tests with `cargo test`/`cargo nextest run`", bin.display());
    bin
}

fn spawn_process(db_url: &str, provider_url: &str) -> Child {
    Command::new(crash_worker_binary())
        .env("DATABASE_URL", db_url)
        .env("PROVIDER_URL", provider_url)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_worker_process_killed_mid_step_is_finished_by_another_with_the_effect_applied_once() {
    let db = TestDb::new().await;
    let provider = FakeProvider::default();
    // The charge is applied, and the answer hangs: the process is mid-step.
    provider.lose_first_answer.store(true, Ordering::SeqCst);
    let server = provider.start().await;

    // Start the run here; only the child processes execute it.
    let mut h = HandlerRegistry::new();
    h.register("charge", crate::provider::ChargeHandler::new(server.uri(), Duration::from_secs(1)));
    let engine = engine(&db.pool, &[CHARGE_WORKFLOW], h);
    let id = engine.start_now(SYSTEM_TENANT, "charge", "order-9", &json!({})).await.unwrap().run_id;

    let mut first = spawn_process(&db.url, &server.uri());
    wait_until(Duration::from_secs(30), "the first process to reach the provider", || provider.posts_total() == 1)
        .await;
    let victim = run(&db.pool, id).await;
    assert_eq!(victim.status, "running");
    kill(Pid::from_raw(first.id() as i32), Signal::SIGKILL).unwrap();
    first.wait().unwrap();

    let mut second = spawn_process(&db.url, &server.uri());
    let done = wait_for_run(&db.pool, id, Duration::from_secs(30), |r| r.status == "succeeded").await;
    kill(Pid::from_raw(second.id() as i32), Signal::SIGTERM).unwrap();
    let status = second.wait().unwrap();
    assert!(status.success(), "the second process shut down cleanly on SIGTERM: {status}");

    assert_eq!(provider.posts_total(), 1, "the charge was made once");
    assert_eq!(*provider.lookups.lock().unwrap(), 1, "the survivor asked the provider instead of charging");
    assert_eq!(done.context["charge"]["status"], json!("succeeded"));
    let h = db::runs::history(&db.pool, id).await.unwrap();
    assert_eq!(h[0].outcome, "lease_expired");
    assert_eq!(h[0].worker, victim.lease_owner.unwrap());
    assert_eq!(h.last().unwrap().outcome, "next:ok");
    assert_ne!(h.last().unwrap().worker, h[0].worker);
}
