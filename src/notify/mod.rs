//! Delivery of the outbox: email over SMTP and signed webhooks to the
//! platform. A message exists only if the step that decided it committed;
//! it is claimed under a short lock, sent, and marked sent. Delivery is at
//! least once: a crash between sending and marking re-sends it, with the
//! same Message-ID or webhook event id, so receivers can tell.

mod email;
mod webhook;

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

use crate::db;
use crate::db::outbox::Message;
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
#[derive(Debug)]
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

    /// Delivers what is due now; returns how many messages it handled.
    pub async fn deliver_due(&self) -> anyhow::Result<usize> {
        let messages = db::outbox::claim_due(&self.pool, self.config.batch, self.config.lock).await?;
        for m in &messages {
            let outcome = self.deliver(m).await;
            match outcome {
                Ok(note) => db::outbox::mark_sent(&self.pool, m.id, note.as_deref()).await?,
                Err(DeliveryError::Permanent(e)) => {
                    tracing::warn!(message = %m.dedup_key, error = %e, "notification cannot be delivered");
                    db::outbox::mark_failed(&self.pool, m.id, &e).await?
                }
                Err(DeliveryError::Transient(e)) if m.attempts as u32 >= self.config.retry.max_attempts => {
                    db::outbox::mark_failed(&self.pool, m.id, &format!("gave up after {} attempts: {e}", m.attempts))
                        .await?
                }
                Err(DeliveryError::Transient(e)) => {
                    let delay = self.config.retry.delay_after(m.attempts as u32);
                    let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                    db::outbox::mark_retry(&self.pool, m.id, &e, at).await?
                }
            }
        }
        Ok(messages.len())
    }

    async fn deliver(&self, m: &Message) -> Result<Option<String>, DeliveryError> {
        let Some(tenant_id) = m.tenant_id else {
            return Err(DeliveryError::Permanent("the message belongs to no tenant".into()));
        };
        let (_, notifications, _) =
            db::settings::get(&self.pool, tenant_id).await.map_err(|e| DeliveryError::Transient(e.to_string()))?;
        let settings: Notifications =
            serde_json::from_value(notifications).map_err(|e| DeliveryError::Permanent(e.to_string()))?;
        match m.channel.as_str() {
            "webhook" => match (&settings.webhook_url, &settings.webhook_secret) {
                (Some(url), Some(secret)) => webhook::send(&self.http, url, secret, m).await.map(|()| None),
                _ => Ok(Some("skipped: no webhook_url configured".into())),
            },
            "email" => match &settings.smtp {
                Some(smtp) => email::send(smtp, m).await.map(|()| None),
                None => Ok(Some("skipped: no SMTP configured".into())),
            },
            other => Err(DeliveryError::Permanent(format!("unknown channel `{other}`"))),
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
