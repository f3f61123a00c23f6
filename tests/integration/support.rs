//! What every engine test needs: a fresh migrated database, an engine with
//! the test's own workflows and handlers, real workers, and a way to wait for
//! a run to reach a state without sleeping for a guessed time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bursar::db;
use bursar::db::runs::Run;
use bursar::engine::{
    Definition, Engine, HandlerRegistry, Maintenance, MaintenanceConfig, Outcome, StepCtx, StepHandler, WorkerConfig,
};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| bursar::config::DEFAULT_DATABASE_URL.to_owned())
}

fn with_database(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("DATABASE_URL is a URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
}

impl TestDb {
    /// A database of its own for one test, migrated.
    pub async fn new() -> TestDb {
        let name = format!("bursar_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&with_database(&server_url(), "postgres"))
            .await
            .expect("PostgreSQL answers at DATABASE_URL (run ops/pg-up)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        let url = with_database(&server_url(), &name);
        let pool = db::connect(&url, 12).await.unwrap();
        db::migrate(&pool).await.unwrap();
        TestDb { pool, url }
    }
}

pub fn engine(pool: &PgPool, definitions: &[&str], handlers: HandlerRegistry) -> Engine {
    let defs = definitions.iter().map(|d| Definition::parse(d).unwrap()).collect();
    Engine::new(pool.clone(), defs, handlers).unwrap()
}

/// Quick to notice and quick to give up, so tests finish fast.
pub fn fast_worker() -> WorkerConfig {
    WorkerConfig {
        concurrency: 16,
        claim_batch: 16,
        lease: Duration::from_secs(5),
        heartbeat: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

pub struct Running {
    stop: watch::Sender<bool>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the worker gracefully and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.handle.await.unwrap().unwrap();
    }
}

pub fn spawn_worker(engine: &Engine, config: WorkerConfig) -> Running {
    let (stop, mut rx) = watch::channel(false);
    let worker = engine.worker(config);
    let handle = tokio::spawn(worker.run(async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    Running { stop, handle }
}

/// Maintenance that rescues expired leases every second.
pub fn spawn_maintenance(pool: &PgPool) -> (Arc<std::sync::atomic::AtomicBool>, watch::Sender<bool>) {
    let config = MaintenanceConfig {
        rescue_schedule: "* * * * * *".into(),
        leader_retry: Duration::from_millis(200),
        ..MaintenanceConfig::default()
    };
    let m = Maintenance::new(pool.clone(), config).unwrap();
    let leading = m.leading();
    let (stop, mut rx) = watch::channel(false);
    tokio::spawn(m.run(async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    (leading, stop)
}

pub async fn run(pool: &PgPool, id: Uuid) -> Run {
    db::runs::get(pool, id).await.unwrap().expect("the run exists")
}

/// Waits until the run satisfies `done`, failing the test after `within`.
pub async fn wait_for_run(pool: &PgPool, id: Uuid, within: Duration, done: impl Fn(&Run) -> bool) -> Run {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let r = run(pool, id).await;
        if done(&r) {
            return r;
        }
        if tokio::time::Instant::now() > deadline {
            let history = db::runs::history(pool, id).await.unwrap();
            panic!("run did not get there in {within:?}: {r:#?}\nhistory: {history:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_for_status(pool: &PgPool, id: Uuid, status: &str) -> Run {
    wait_for_run(pool, id, Duration::from_secs(20), |r| r.status == status).await
}

pub async fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handler that returns `ok` and counts its calls.
#[derive(Clone, Default)]
pub struct Counting(pub Arc<AtomicU32>);

impl Counting {
    pub fn calls(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl StepHandler for Counting {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }
    async fn run(&self, _ctx: &mut StepCtx) -> Outcome {
        self.0.fetch_add(1, Ordering::SeqCst);
        Outcome::next("ok")
    }
}
