//! Settings from the command line and the environment (DATABASE_URL,
//! BURSAR_*), checked at start so a bad value stops the process at once.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::engine::{MaintenanceConfig, WorkerConfig};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/bursar";

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Args, Debug, Clone)]
pub struct DbSettings {
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Connections in this process's pool.
    #[arg(long, env = "BURSAR_DB_POOL", default_value_t = 16)]
    pub db_pool: u32,
}

#[derive(Args, Debug, Clone)]
pub struct WorkerSettings {
    /// Runs in flight at once in this process.
    #[arg(long, env = "BURSAR_WORKER_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// How long a claimed run stays this worker's without renewal.
    #[arg(long, env = "BURSAR_LEASE", default_value = "30s", value_parser = duration)]
    pub lease: Duration,
    /// How long in-flight steps may finish after SIGTERM or SIGINT.
    #[arg(long, env = "BURSAR_SHUTDOWN_GRACE", default_value = "20s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// Longest wait between claims when no notification arrives.
    #[arg(long, env = "BURSAR_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    pub poll_interval: Duration,
    /// When expired leases are rescued (cron with seconds).
    #[arg(long, env = "BURSAR_RESCUE_SCHEDULE", default_value = "*/5 * * * * *")]
    pub rescue_schedule: String,
    /// How long the history of finished runs is kept.
    #[arg(long, env = "BURSAR_HISTORY_RETENTION", default_value = "30days", value_parser = duration)]
    pub history_retention: Duration,
}

impl WorkerSettings {
    pub fn worker_config(&self) -> anyhow::Result<WorkerConfig> {
        anyhow::ensure!(self.concurrency >= 1, "BURSAR_WORKER_CONCURRENCY must be at least 1");
        anyhow::ensure!(self.lease >= Duration::from_secs(1), "BURSAR_LEASE must be at least 1s");
        Ok(WorkerConfig {
            concurrency: self.concurrency,
            claim_batch: self.concurrency.min(128),
            lease: self.lease,
            heartbeat: self.lease / 3,
            poll_interval: self.poll_interval,
            shutdown_grace: self.shutdown_grace,
            ..WorkerConfig::default()
        })
    }

    pub fn maintenance_config(&self) -> MaintenanceConfig {
        MaintenanceConfig {
            rescue_schedule: self.rescue_schedule.clone(),
            history_retention: self.history_retention,
            ..MaintenanceConfig::default()
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeSettings {
    #[arg(long, env = "BURSAR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Make sure a tenant named "demo" exists and print a fresh API key for it.
    #[arg(long)]
    pub demo_tenant: bool,
    /// Serve the API only; run workers as `bursar worker` processes.
    #[arg(long)]
    pub no_workers: bool,
    /// The URL this server is reached at (default: http://BURSAR_LISTEN).
    #[arg(long, env = "BURSAR_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl ServeSettings {
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen)).trim_end_matches('/').to_owned()
    }
}

/// Human-readable logs by default; JSON lines with BURSAR_LOG_FORMAT=json.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BURSAR_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("BURSAR_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
