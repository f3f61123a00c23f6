//! A worker process for the engine's crash test (tests/integration/crash.rs): it
//! charges the test's fake provider, and the test kills it with SIGKILL
//! mid-charge. Short lease and rescue schedule so the survivor takes over fast.

#[path = "../tests/integration/provider.rs"]
mod provider;

use std::time::Duration;

use bursar::engine::{Definition, Engine, HandlerRegistry, Maintenance, MaintenanceConfig, WorkerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bursar::config::init_logging();
    let pool = bursar::db::connect(&std::env::var("DATABASE_URL")?, 8).await?;
    let provider_url = std::env::var("PROVIDER_URL")?;
    let mut handlers = HandlerRegistry::new();
    handlers.register("charge", provider::ChargeHandler::new(provider_url, Duration::from_secs(30)));
    let engine = Engine::new(pool.clone(), vec![Definition::parse(provider::CHARGE_WORKFLOW)?], handlers)?;

    let maintenance = Maintenance::new(
        pool,
        MaintenanceConfig {
            rescue_schedule: "* * * * * *".into(),
            leader_retry: Duration::from_millis(200),
            ..MaintenanceConfig::default()
        },
    )?;
    let config = WorkerConfig {
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(500),
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let term = async {
        let mut s = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        s.recv().await;
    };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let m = tokio::spawn(maintenance.run(stopped(rx.clone())));
    let w = tokio::spawn(engine.worker(config).run(stopped(rx)));
    term.await;
    let _ = stop.send(true);
    w.await??;
    m.await?;
    Ok(())
}
