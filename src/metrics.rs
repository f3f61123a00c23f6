//! Prometheus metrics at `GET /metrics`. What happens in this process (step
//! attempts, retries, webhooks, adapter errors) is counted as it happens;
//! the state of the database (runs by status, the oldest due run's wait, the
//! notification backlog) is read at scrape time, so every process reports
//! the same truth about it.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::PgPool;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub workflow: String,
    pub step: String,
    /// next, retry, wait, fail, park, deadline
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub provider: String,
    /// accepted, duplicate, rejected
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterLabels {
    /// provider or lms
    pub kind: String,
    pub adapter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    workflow: String,
    status: String,
}

#[derive(Clone)]
pub struct StepBuckets;

impl MetricConstructor<Histogram> for StepBuckets {
    fn new_metric(&self) -> Histogram {
        // 1 ms to about 16 s.
        Histogram::new(exponential_buckets(0.001, 2.0, 15))
    }
}

pub struct Metrics {
    pub step_seconds: Family<StepLabels, Histogram, StepBuckets>,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub adapter_errors: Family<AdapterLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    step_seconds: Family::new_with_constructor(StepBuckets),
    webhooks: Family::default(),
    adapter_errors: Family::default(),
});

pub fn metrics() -> &'static Metrics {
    &METRICS
}

pub fn webhook(provider: &str, result: &str) {
    METRICS.webhooks.get_or_create(&WebhookLabels { provider: provider.into(), result: result.into() }).inc();
}

pub fn adapter_error(kind: &str, adapter: &str) {
    METRICS.adapter_errors.get_or_create(&AdapterLabels { kind: kind.into(), adapter: adapter.into() }).inc();
}

/// The exposition text: this process's counters and the database's state.
pub async fn render(pool: &PgPool) -> Result<String, sqlx::Error> {
    let mut registry = Registry::with_prefix("bursar");
    let m = metrics();
    registry.register(
        "step_duration_seconds",
        "Step attempts by outcome, and how long they took",
        m.step_seconds.clone(),
    );
    registry.register("webhooks", "Webhooks received, by provider and result", m.webhooks.clone());
    registry.register("adapter_errors", "Failed calls to providers and LMSs, by adapter", m.adapter_errors.clone());

    let runs = Family::<RunLabels, Gauge>::default();
    for (workflow, status, count) in crate::db::runs::counts(pool).await? {
        runs.get_or_create(&RunLabels { workflow, status }).set(count);
    }
    registry.register("runs", "Runs by workflow and status", runs);
    let lag = crate::db::runs::oldest_due_age_seconds(pool).await?;
    let oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    oldest.set(lag);
    registry.register("oldest_due_run_age_seconds", "How long the oldest due run has waited for a worker", oldest);
    let backlog = Gauge::<i64>::default();
    backlog.set(crate::db::outbox::backlog(pool).await?);
    registry.register("notification_backlog", "Notifications not yet delivered", backlog);

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String");
    Ok(out)
}
