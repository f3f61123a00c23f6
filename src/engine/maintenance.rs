//! Periodic maintenance, run by one leader at a time: whoever holds a
//! PostgreSQL advisory lock on its own connection. If the leader dies its
//! session ends, the lock is released, and another process takes over.
//!
//! Jobs: rescuing runs whose lease expired (a crashed worker's runs must not
//! wait for a person), and pruning old history (the history table grows by a
//! row per attempt; unpruned it slows every query that touches it). Later
//! periodic work (reconciliation, expiries) registers with `add_job`.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cron::Schedule;
use sqlx::{Connection, PgConnection, PgPool};

use crate::db;

#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// Cron (with seconds) for lease rescue. Every 5 s by default, so a dead
    /// worker's runs resume within the lease plus 5 s.
    pub rescue_schedule: String,
    pub prune_schedule: String,
    pub history_retention: Duration,
    /// How often a follower tries to become leader.
    pub leader_retry: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            rescue_schedule: "*/5 * * * * *".into(),
            prune_schedule: "0 17 * * * *".into(),
            history_retention: Duration::from_secs(30 * 24 * 3600),
            leader_retry: Duration::from_secs(5),
        }
    }
}

type JobFn = Arc<dyn Fn(PgPool) -> Pin<Box<dyn Future<Output = anyhow::Result<u64>> + Send>> + Send + Sync>;

struct Job {
    name: String,
    schedule: Schedule,
    action: JobFn,
}

pub struct Maintenance {
    pool: PgPool,
    config: MaintenanceConfig,
    jobs: Vec<Job>,
    leading: Arc<AtomicBool>,
}

impl Maintenance {
    pub fn new(pool: PgPool, config: MaintenanceConfig) -> anyhow::Result<Maintenance> {
        let mut m = Maintenance { pool, config: config.clone(), jobs: vec![], leading: Arc::default() };
        m.add_job("rescue_expired_leases", &config.rescue_schedule, |pool| async move {
            let rescued = db::runs::rescue_expired(&pool).await?;
            if !rescued.is_empty() {
                tracing::warn!(count = rescued.len(), runs = ?rescued, "rescued runs whose lease expired");
            }
            Ok(rescued.len() as u64)
        })?;
        let retention = chrono::Duration::from_std(config.history_retention)?;
        m.add_job("prune_history", &config.prune_schedule, move |pool| async move {
            Ok(db::maintenance::prune(&pool, Utc::now() - retention, 10_000).await?)
        })?;
        Ok(m)
    }

    /// Registers a periodic job; `schedule` is a cron expression with seconds.
    pub fn add_job<F, Fut>(&mut self, name: &str, schedule: &str, action: F) -> anyhow::Result<()>
    where
        F: Fn(PgPool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
    {
        let schedule = Schedule::from_str(schedule)
            .map_err(|e| anyhow::anyhow!("maintenance job {name}: bad schedule `{schedule}`: {e}"))?;
        self.jobs.push(Job { name: name.to_owned(), schedule, action: Arc::new(move |p| Box::pin(action(p))) });
        Ok(())
    }

    /// True while this instance is the leader.
    pub fn leading(&self) -> Arc<AtomicBool> {
        self.leading.clone()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.lead_if_possible() => {}
            }
            self.leading.store(false, Ordering::SeqCst);
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.config.leader_retry) => {}
            }
        }
        self.leading.store(false, Ordering::SeqCst);
    }

    /// Returns when leadership could not be had or was lost.
    async fn lead_if_possible(&self) {
        let mut conn = match PgConnection::connect_with(&self.pool.connect_options()).await {
            Ok(c) => c,
            Err(e) => return tracing::warn!(error = %e, "maintenance: no connection"),
        };
        match db::maintenance::try_lead(&mut conn).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return tracing::warn!(error = %e, "maintenance: leader election failed"),
        }
        self.leading.store(true, Ordering::SeqCst);
        tracing::info!("maintenance: this process is the leader");
        let mut last: Vec<DateTime<Utc>> = Vec::with_capacity(self.jobs.len());
        for job in &self.jobs {
            let known = db::maintenance::last_run(&self.pool, &job.name).await.ok().flatten();
            last.push(known.unwrap_or_else(Utc::now));
        }
        loop {
            let now = Utc::now();
            for (job, last_run) in self.jobs.iter().zip(last.iter_mut()) {
                let due = job.schedule.after(last_run).next().is_some_and(|at| at <= now);
                if !due {
                    continue;
                }
                match (job.action)(self.pool.clone()).await {
                    Ok(_) => {}
                    Err(e) => tracing::warn!(job = %job.name, error = %e, "maintenance job failed"),
                }
                *last_run = now;
                let _ = db::maintenance::mark_run(&self.pool, &job.name, now).await;
            }
            let next = self
                .jobs
                .iter()
                .zip(&last)
                .filter_map(|(job, at)| job.schedule.after(at).next())
                .min()
                .unwrap_or(now + chrono::Duration::seconds(1));
            let nap = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(Duration::from_secs(5));
            tokio::time::sleep(nap).await;
            // Still leader? A dead session means the lock is gone, maybe to another process.
            if let Err(e) = conn.ping().await {
                tracing::warn!(error = %e, "maintenance: lost the leader's connection");
                return;
            }
        }
    }
}
