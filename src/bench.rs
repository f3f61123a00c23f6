//! `bursar bench`: figures, not pass/fail. Each benchmark prints one JSON line
//! and, so the figures can be judged against the machine, the `pgbench -N`
//! TPS of the same PostgreSQL server measured in the same run.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;

use crate::config::DbSettings;
use crate::engine::{Engine, WorkerConfig};
use crate::{db, steps, workflows};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable no-op steps per second, and enqueue-to-start latency.
    Engine(EngineBench),
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
    }
}

/// A fresh database named `name` on the server of `url`; returns its URL.
async fn fresh_database(url: &str, name: &str) -> anyhow::Result<String> {
    let mut admin_url = url::Url::parse(url).context("DATABASE_URL is not a URL")?;
    admin_url.set_path("/postgres");
    let mut admin = PgConnection::connect(admin_url.as_str()).await.context("connecting to the server")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
    admin_url.set_path(&format!("/{name}"));
    Ok(admin_url.to_string())
}

async fn engine(b: EngineBench) -> anyhow::Result<()> {
    let url = fresh_database(&b.db.database_url, "bursar_bench").await?;
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
    let (p50, p99) = start_latency_ms(&pool).await?;
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
        "drain_seconds": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
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
        let (done, stuck): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                    count(*) FILTER (WHERE status IN ('failed', 'parked', 'cancelled')) FROM runs",
        )
        .fetch_one(pool)
        .await?;
        anyhow::ensure!(stuck == 0, "{stuck} benchmark runs did not succeed");
        if done >= expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// From a run's creation to the start of its first step, measured by the
/// database's own clock on both ends.
async fn start_latency_ms(pool: &PgPool) -> anyhow::Result<(f64, f64)> {
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
         FROM (SELECT extract(epoch FROM (min(h.started_at) - r.created_at)) * 1000 AS ms
               FROM runs r JOIN run_history h ON h.run_id = r.id
               WHERE r.idempotency_key LIKE 'latency-%' GROUP BY r.id, r.created_at) t",
    )
    .fetch_one(pool)
    .await?;
    Ok(((p50 * 100.0).round() / 100.0, (p99 * 100.0).round() / 100.0))
}

/// `pgbench -N` (no updates of the small tables: the closest stock workload to
/// many independent short write transactions) against the same server.
async fn pgbench_tps(url: &str, seconds: u32) -> anyhow::Result<Option<f64>> {
    if Command::new("pgbench").arg("--version").output().is_err() {
        tracing::warn!("pgbench is not installed; its figure is left out");
        return Ok(None);
    }
    let bench_url = fresh_database(url, "bursar_pgbench").await?;
    let init = Command::new("pgbench").args(["-i", "-q", "-s", "10", &bench_url]).output()?;
    anyhow::ensure!(init.status.success(), "pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
    let run =
        Command::new("pgbench").args(["-N", "-c", "8", "-j", "2", "-T", &seconds.to_string(), &bench_url]).output()?;
    anyhow::ensure!(run.status.success(), "pgbench failed: {}", String::from_utf8_lossy(&run.stderr));
    let out = String::from_utf8_lossy(&run.stdout);
    let tps = out
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    Ok(tps.map(|t| t.round()))
}
