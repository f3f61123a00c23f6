//! `bursar bench`: figures, not pass/fail. Each benchmark prints one JSON line
//! and, so the figures can be judged against the machine, the `pgbench -N`
//! TPS of the same PostgreSQL server measured in the same run.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::config::DbSettings;
use crate::engine::{Engine, WorkerConfig};
use crate::{db, steps, workflows};

pub mod floor;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable no-op steps per second, and enqueue-to-start latency.
    Engine(EngineBench),
    /// Completed purchases per second through the HTTP API, and create-to-completed latency.
    Purchases(PurchaseBench),
    /// The least PostgreSQL work a purchase can be, run by pgbench: what the
    /// server alone could do, to judge the purchases figure against.
    Floor(floor::FloorBench),
}

#[derive(Args)]
pub struct PurchaseBench {
    #[command(flatten)]
    db: DbSettings,
    /// Purchases to make.
    #[arg(long, default_value_t = 6_000)]
    purchases: usize,
    /// Requests in flight at once from the load generator.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Runs in flight in the worker.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds of pgbench -N (0 skips it).
    #[arg(long, default_value_t = 15)]
    pgbench_seconds: u32,
}

#[derive(Args)]
pub struct EngineBench {
    #[command(flatten)]
    db: DbSettings,
    /// Runs of the 5-step `noop` workflow drained for the throughput figure.
    #[arg(long, default_value_t = 20_000)]
    runs: usize,
    /// Worker instances in this process.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Runs in flight per worker.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Runs started one at a time, unsaturated, for the latency figure.
    #[arg(long, default_value_t = 500)]
    latency_runs: usize,
    /// Starts per second during the latency phase.
    #[arg(long, default_value_t = 100)]
    latency_rate: u32,
    /// Seconds of pgbench -N (0 skips it).
    #[arg(long, default_value_t = 15)]
    pgbench_seconds: u32,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Engine(b) => engine(b).await,
        BenchCommand::Purchases(b) => purchases(b).await,
        BenchCommand::Floor(b) => floor::run(b).await,
    }
}

async fn engine(b: EngineBench) -> anyhow::Result<()> {
    let url = db::audit::recreate_database(&b.db.database_url, "bursar_bench").await?;
    let pool = db::connect(&url, b.db.db_pool.max(8 * b.workers as u32)).await?;
    db::migrate(&pool).await?;
    let engine = Engine::new(pool.clone(), workflows::builtin()?, steps::registry(&steps::providers(&pool)))?;
    let steps_per_run = engine.workflows().latest("noop").context("noop workflow")?.steps.len();

    // Throughput: everything enqueued first, then drained by the workers.
    let keys: Vec<String> = (0..b.runs).map(|i| format!("throughput-{i}")).collect();
    for chunk in keys.chunks(5_000) {
        engine.start_many("noop", chunk, &json!({})).await?;
    }
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig {
        concurrency: b.concurrency,
        claim_batch: b.concurrency.min(256),
        completion_batch: 512,
        ..WorkerConfig::default()
    };
    let began = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..b.workers {
        let mut rx = stopped.clone();
        let worker = engine.worker(config.clone());
        handles.push(tokio::spawn(worker.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    wait_for_succeeded(&pool, b.runs as i64).await?;
    let elapsed = began.elapsed();
    let steps_per_sec = (b.runs * steps_per_run) as f64 / elapsed.as_secs_f64();

    // Latency: one start at a time, well under capacity.
    let interval = Duration::from_secs_f64(1.0 / b.latency_rate.max(1) as f64);
    let mut tick = tokio::time::interval(interval);
    for i in 0..b.latency_runs {
        tick.tick().await;
        engine.start_now(crate::engine::SYSTEM_TENANT, "noop", &format!("latency-{i}"), &json!({})).await?;
    }
    wait_for_succeeded(&pool, (b.runs + b.latency_runs) as i64).await?;
    let (p50, p99) = db::audit::start_latency_ms(&pool, "latency-").await?;
    let (p50, p99) = (hundredths(p50), hundredths(p99));
    let _ = stop.send(true);
    for h in handles {
        h.await??;
    }
    pool.close().await;

    let pgbench_tps =
        if b.pgbench_seconds > 0 { pgbench_tps(&b.db.database_url, b.pgbench_seconds).await? } else { None };
    let line = json!({
        "bench": "engine",
        "steps_per_sec": steps_per_sec.round(),
        "runs": b.runs,
        "steps_per_run": steps_per_run,
        "drain_seconds": hundredths(elapsed.as_secs_f64()),
        "workers": b.workers,
        "concurrency_per_worker": b.concurrency,
        "enqueue_to_start_ms": {"p50": p50, "p99": p99, "runs": b.latency_runs, "rate_per_sec": b.latency_rate},
        "pgbench_n_tps": pgbench_tps,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    println!("{line}");
    Ok(())
}

async fn wait_for_succeeded(pool: &PgPool, expected: i64) -> anyhow::Result<()> {
    loop {
        let (done, stuck) = db::audit::run_tally(pool, None).await?;
        anyhow::ensure!(stuck == 0, "{stuck} benchmark runs did not succeed");
        if done >= expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hundredths(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `pgbench -N` (no updates of the small tables: the closest stock workload to
/// many independent short write transactions) against the same server.
async fn pgbench_tps(url: &str, seconds: u32) -> anyhow::Result<Option<f64>> {
    if Command::new("pgbench").arg("--version").output().is_err() {
        tracing::warn!("pgbench is not installed; its figure is left out");
        return Ok(None);
    }
    let bench_url = db::audit::recreate_database(url, "bursar_pgbench").await?;
    let init = Command::new("pgbench").args(["-i", "-q", "-s", "10", &bench_url]).output()?;
    anyhow::ensure!(init.status.success(), "pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
    let tps = pgbench(&["-N", "-c", "8", "-j", "2", "-T", &seconds.to_string(), &bench_url])?;
    Ok(Some(tps.round()))
}

/// Runs pgbench and returns the transactions (script runs) per second it reports.
pub(crate) fn pgbench(args: &[&str]) -> anyhow::Result<f64> {
    let run = Command::new("pgbench").args(args).output().context("running pgbench")?;
    let out = String::from_utf8_lossy(&run.stdout);
    anyhow::ensure!(
        run.status.success() && !out.contains("aborted"),
        "pgbench failed: {}{}",
        out,
        String::from_utf8_lossy(&run.stderr)
    );
    out.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output: {out}"))
}

/// What `bursar serve` runs (API, workers, notification delivery), plus a
/// loopback callback LMS, in this process; the load generator posts
/// purchases to the API over HTTP with the sandbox's `pm_sandbox_ok`.
async fn purchases(b: PurchaseBench) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let url = db::audit::recreate_database(&b.db.database_url, "bursar_bench_purchases").await?;
    let pool = db::connect(&url, b.db.db_pool).await?;
    db::migrate(&pool).await?;
    let providers = steps::providers(&pool);
    let engine = Engine::new(pool.clone(), workflows::builtin()?, steps::registry(&providers))?;

    // The platform's enrollment endpoint: answers 200 and counts.
    let enrolled = Arc::new(AtomicU64::new(0));
    let lms = {
        let enrolled = enrolled.clone();
        axum::Router::new().route(
            "/enroll",
            axum::routing::post(move || {
                let enrolled = enrolled.clone();
                async move {
                    enrolled.fetch_add(1, Ordering::Relaxed);
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let lms_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let lms_url = format!("http://{}/enroll", lms_listener.local_addr()?);
    tokio::spawn(async move { axum::serve(lms_listener, lms).await });

    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", api_listener.local_addr()?);
    let router = crate::api::router(crate::api::AppState::new(engine.clone(), providers, api.clone()));
    tokio::spawn(async move { axum::serve(api_listener, router).await });
    let (stop, stopped) = watch::channel(false);
    let config =
        WorkerConfig { concurrency: b.concurrency, claim_batch: 128, completion_batch: 512, ..WorkerConfig::default() };
    let mut rx = stopped.clone();
    let worker = tokio::spawn(engine.worker(config).run(async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    // As serve does: the outbox's messages (webhooks, mail) are delivered
    // while purchases complete. The bench tenant has no targets, so each is
    // read, found to have nowhere to go, and recorded as done with.
    let mut rx = stopped.clone();
    let deliverer = crate::notify::Deliverer::new(pool.clone(), crate::notify::DelivererConfig::default());
    let delivery = tokio::spawn(deliverer.run(async move {
        let _ = rx.wait_for(|s| *s).await;
    }));

    let tenant = crate::tenants::create(&pool, "bench").await?;
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", tenant.api_key);
    let settings = json!({"lms": {"type": "callback", "url": lms_url, "secret": "bench-signing-secret-0123"}});
    let res = http.patch(format!("{api}/v1/settings")).header("authorization", &auth).json(&settings).send().await?;
    anyhow::ensure!(res.status().is_success(), "settings: {}", res.text().await?);
    let offering =
        json!({"title": "Bench 101", "price": {"amount": "49.00", "currency": "USD"}, "lms": {"course_id": "1"}});
    let res =
        http.put(format!("{api}/v1/offerings/bench-101")).header("authorization", &auth).json(&offering).send().await?;
    anyhow::ensure!(res.status().is_success(), "offering: {}", res.text().await?);

    let next = Arc::new(AtomicU64::new(0));
    // The time is the database's, from here to the last completion, so the
    // wait below can poll rarely and still measure exactly.
    let began_at = db::audit::now(&pool).await?;
    let began = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..b.clients {
        let (http, api, auth, next) = (http.clone(), api.clone(), auth.clone(), next.clone());
        let total = b.purchases as u64;
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let body = json!({"offering_id": "bench-101", "customer": {"email": format!("learner{i}@bench.example")},
                                  "payment": {"provider": "sandbox", "payment_method": "pm_sandbox_ok"}});
                let res = http
                    .post(format!("{api}/v1/purchases"))
                    .header("authorization", &auth)
                    .header("idempotency-key", format!("bench-{i}"))
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(res.status().as_u16() == 201, "purchase {i}: {}", res.text().await?);
            }
        }));
    }
    for c in clients {
        c.await??;
    }
    let posted = began.elapsed();
    loop {
        let (done, stuck) = db::audit::run_tally(&pool, Some("purchase")).await?;
        anyhow::ensure!(stuck == 0, "{stuck} purchases did not complete");
        if done as usize >= b.purchases {
            break;
        }
        // Rarely: counting the runs is work for the same two cores.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seconds = db::audit::seconds_to_last_finish(&pool, "purchase", began_at).await?;
    let elapsed = Duration::from_secs_f64(seconds);
    // Done only when every purchase's messages are: a deliverer that falls
    // behind would grow its backlog without end.
    while db::outbox::backlog(&pool).await? > 0 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let notified_seconds = db::audit::seconds_to_last_send(&pool, began_at).await?;
    let (p50, p99) = db::audit::run_duration_ms(&pool, "purchase").await?;
    let captured = db::audit::purchase_totals(&pool).await?.captured_in_full;
    let _ = stop.send(true);
    worker.await??;
    delivery.await?;
    pool.close().await;
    let pgbench_tps =
        if b.pgbench_seconds > 0 { pgbench_tps(&b.db.database_url, b.pgbench_seconds).await? } else { None };
    println!(
        "{}",
        json!({
            "bench": "purchases",
            "completed_per_sec": (b.purchases as f64 / elapsed.as_secs_f64()).round(),
            "notified_per_sec": (b.purchases as f64 / notified_seconds).round(),
            "purchases": b.purchases,
            "seconds": hundredths(elapsed.as_secs_f64()),
            "posting_seconds": hundredths(posted.as_secs_f64()),
            "create_to_completed_ms": {"p50": hundredths(p50), "p99": hundredths(p99)},
            "captured_once": captured,
            "lms_enrollments": enrolled.load(Ordering::Relaxed),
            "clients": b.clients,
            "worker_concurrency": b.concurrency,
            "pgbench_n_tps": pgbench_tps,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        })
    );
    Ok(())
}
