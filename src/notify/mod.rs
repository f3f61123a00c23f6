//! Delivery of the outbox: email over SMTP and signed webhooks to the
//! platform. A message exists only if the step that decided it committed;
//! it is claimed under a short lock, sent, and marked sent. Delivery is at
//! least once: a crash between sending and marking re-sends it, with the
//! same Message-ID or webhook event id, so receivers can tell.

mod email;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::db;
use crate::db::outbox::{Delivery, Message};
use crate::domain::settings::Notifications;
use crate::engine::retry::RetryPolicy;

#[derive(Debug, Clone)]
pub struct DelivererConfig {
    pub interval: Duration,
    pub batch: i64,
    /// How long a claimed message is this deliverer's.
    pub lock: Duration,
    pub retry: RetryPolicy,
}

impl Default for DelivererConfig {
    fn default() -> Self {
        DelivererConfig {
            interval: Duration::from_millis(250),
            batch: 32,
            lock: Duration::from_secs(60),
            retry: RetryPolicy {
                max_attempts: 12,
                initial: Duration::from_secs(2),
                max: Duration::from_secs(3600),
                ..RetryPolicy::default()
            },
        }
    }
}

pub struct Deliverer {
    pool: PgPool,
    http: reqwest::Client,
    config: DelivererConfig,
}

/// Why one delivery did not happen.
#[derive(Debug, Clone)]
pub(crate) enum DeliveryError {
    /// Worth trying again later.
    Transient(String),
    /// Will never work as configured (bad address, no such setting).
    Permanent(String),
}

impl Deliverer {
    pub fn new(pool: PgPool, config: DelivererConfig) -> Deliverer {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client");
        Deliverer { pool, http, config }
    }

    /// Delivers what is due now; returns how many messages it handled. The
    /// claimed messages are sent at once, each tenant's settings read once,
    /// and what became of them is recorded in one statement.
    pub async fn deliver_due(&self) -> anyhow::Result<usize> {
        let messages = db::outbox::claim_due(&self.pool, self.config.batch, self.config.lock).await?;
        let mut settings: HashMap<Uuid, Arc<Result<Notifications, DeliveryError>>> = HashMap::new();
        let mut sending = JoinSet::new();
        for m in messages {
            let targets = match m.tenant_id {
                Some(tenant) => match settings.get(&tenant) {
                    Some(found) => found.clone(),
                    None => {
                        let read = Arc::new(self.notifications(tenant).await);
                        settings.insert(tenant, read.clone());
                        read
                    }
                },
                None => Arc::new(Err(DeliveryError::Permanent("the message belongs to no tenant".into()))),
            };
            let http = self.http.clone();
            sending.spawn(async move {
                let outcome = match targets.as_ref() {
                    Ok(targets) => deliver(&http, targets, &m).await,
                    Err(e) => Err(e.clone()),
                };
                (m, outcome)
            });
        }
        let mut outcomes = Vec::with_capacity(sending.len());
        while let Some(sent) = sending.join_next().await {
            // A delivery that panicked is not recorded: its claim lapses and
            // it is tried again; the others' outcomes still are.
            match sent {
                Ok((m, outcome)) => outcomes.push((m.id, self.outcome(&m, outcome))),
                Err(e) => tracing::error!(error = %e, "a notification delivery panicked"),
            }
        }
        db::outbox::record(&self.pool, &outcomes).await?;
        Ok(outcomes.len())
    }

    async fn notifications(&self, tenant_id: Uuid) -> Result<Notifications, DeliveryError> {
        let (_, notifications, _) =
            db::settings::get(&self.pool, tenant_id).await.map_err(|e| DeliveryError::Transient(e.to_string()))?;
        serde_json::from_value(notifications).map_err(|e| DeliveryError::Permanent(e.to_string()))
    }

    /// What to record for a delivery: sent, tried again later, or given up.
    fn outcome(&self, m: &Message, delivered: Result<Option<String>, DeliveryError>) -> Delivery {
        match delivered {
            Ok(note) => Delivery::Sent { note },
            Err(DeliveryError::Permanent(e)) => {
                tracing::warn!(message = %m.dedup_key, error = %e, "notification cannot be delivered");
                Delivery::Failed { error: e }
            }
            Err(DeliveryError::Transient(e)) if m.attempts as u32 >= self.config.retry.max_attempts => {
                Delivery::Failed { error: format!("gave up after {} attempts: {e}", m.attempts) }
            }
            Err(DeliveryError::Transient(e)) => {
                let delay = self.config.retry.delay_after(m.attempts as u32);
                Delivery::Retry { error: e, at: Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default() }
            }
        }
    }

    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            let handled = match self.deliver_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "delivering notifications failed");
                    0
                }
            };
            if handled as i64 == self.config.batch {
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }
}

/// Sends one message to the tenant's target for its channel; `Ok(Some(note))`
/// when there is none (the message is done with, nothing was sent).
async fn deliver(
    http: &reqwest::Client,
    targets: &Notifications,
    m: &Message,
) -> Result<Option<String>, DeliveryError> {
    match m.channel.as_str() {
        "webhook" => match (&targets.webhook_url, &targets.webhook_secret) {
            (Some(url), Some(secret)) => webhook::send(http, url, secret, m).await.map(|()| None),
            _ => Ok(Some("skipped: no webhook_url configured".into())),
        },
        "email" => match &targets.smtp {
            Some(smtp) => email::send(smtp, m).await.map(|()| None),
            None => Ok(Some("skipped: no SMTP configured".into())),
        },
        other => Err(DeliveryError::Permanent(format!("unknown channel `{other}`"))),
    }
}
