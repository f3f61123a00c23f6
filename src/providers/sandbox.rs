//! The sandbox provider: deterministic test-mode payment methods, like a
//! provider's test cards, with books of its own (`sandbox_charges`) that show
//! what was really captured. It honours idempotency keys as Stripe does: the
//! same key gets the same answer and moves money once.
//!
//! - `pm_sandbox_ok`: authorizes and captures.
//! - `pm_sandbox_declined`: declined at authorization.
//! - `pm_sandbox_requires_action`: waits until `complete` (the buyer's 3-D
//!   Secure, say), which then sends a signed webhook.
//! - `pm_sandbox_flaky`: the first two calls of each operation fail, as in an outage.
//! - `pm_sandbox_unknown`: the first call of each operation is applied but its
//!   answer is lost; only `lookup` finds out.

use async_trait::async_trait;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{Authorization, AuthorizeRequest, Captured, PaymentProvider, ProviderError, Refunded};
use crate::db::sandbox as books;
use crate::domain::money::Money;

pub const METHODS: [&str; 5] =
    ["pm_sandbox_ok", "pm_sandbox_declined", "pm_sandbox_requires_action", "pm_sandbox_flaky", "pm_sandbox_unknown"];

pub struct Sandbox {
    pool: PgPool,
}

impl Sandbox {
    pub fn new(pool: PgPool) -> Sandbox {
        Sandbox { pool }
    }

    /// Runs `apply` once per idempotency key and answers with its stored
    /// result, misbehaving as the charge's payment method says.
    async fn request(
        &self,
        key: &str,
        operation: &str,
        method: &str,
        apply: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<Value, sqlx::Error>,
    ) -> Result<Value, ProviderError> {
        let unavailable = |e: sqlx::Error| ProviderError::Unavailable(e.to_string());
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let (calls, stored) = books::note_request(&mut tx, key, operation).await.map_err(unavailable)?;
        if let Some(result) = stored {
            tx.commit().await.map_err(unavailable)?;
            return Ok(result);
        }
        if method == "pm_sandbox_flaky" && calls <= 2 {
            tx.commit().await.map_err(unavailable)?;
            return Err(ProviderError::Unavailable(format!("sandbox outage (call {calls} of {operation})")));
        }
        let result = apply(&mut tx).await.map_err(unavailable)?;
        books::store_result(&mut tx, key, &result).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        if method == "pm_sandbox_unknown" && calls == 1 {
            return Err(ProviderError::Unavailable(format!("sandbox timeout: {operation} applied, answer lost")));
        }
        Ok(result)
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ProviderError> {
    serde_json::from_value(v).map_err(|e| ProviderError::Unavailable(e.to_string()))
}

#[async_trait]
impl PaymentProvider for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn authorize(&self, req: &AuthorizeRequest<'_>) -> Result<Authorization, ProviderError> {
        if !METHODS.contains(&req.payment_method) {
            return Ok(Authorization::Declined {
                reference: None,
                reason: format!("`{}` is not a sandbox payment method", req.payment_method),
            });
        }
        let reference = format!("sbx_{}", uuid::Uuid::now_v7().simple());
        let result = self
            .request(req.idempotency_key, "authorize", req.payment_method, async |conn| {
                let (status, answer) = match req.payment_method {
                    "pm_sandbox_declined" => (
                        "declined",
                        Authorization::Declined {
                            reference: Some(reference.clone()),
                            reason: "card declined (sandbox)".into(),
                        },
                    ),
                    "pm_sandbox_requires_action" => (
                        "requires_action",
                        Authorization::RequiresAction {
                            reference: reference.clone(),
                            next_action: json!({"type": "sandbox_confirm", "reference": reference}),
                        },
                    ),
                    _ => ("authorized", Authorization::Authorized { reference: reference.clone() }),
                };
                let amount = req.amount;
                books::insert_charge(conn, &reference, req, amount, status).await?;
                Ok(serde_json::to_value(answer).expect("serializable"))
            })
            .await?;
        decode(result)
    }

    async fn capture(&self, reference: &str, amount: Money, key: &str) -> Result<Captured, ProviderError> {
        let Some(charge) =
            books::charge(&self.pool, reference).await.map_err(|e| ProviderError::Unavailable(e.to_string()))?
        else {
            return Err(ProviderError::Rejected(format!("no charge {reference}")));
        };
        if charge.status != "authorized" && charge.status != "captured" {
            return Err(ProviderError::Rejected(format!("charge {reference} is {}", charge.status)));
        }
        let minor = amount.minor_units();
        let result = self
            .request(key, "capture", &charge.payment_method, async |conn| {
                books::capture(conn, reference, minor).await?;
                Ok(json!({"amount_minor": minor}))
            })
            .await?;
        decode(result)
    }

    async fn void(&self, reference: &str, key: &str) -> Result<(), ProviderError> {
        let method = books::charge(&self.pool, reference)
            .await
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?
            .map(|c| c.payment_method)
            .unwrap_or_default();
        self.request(key, "void", &method, async |conn| {
            books::void(conn, reference).await?;
            Ok(json!({"voided": reference}))
        })
        .await?;
        Ok(())
    }

    async fn refund(&self, reference: &str, amount: Money, key: &str) -> Result<Refunded, ProviderError> {
        let unavailable = |e: sqlx::Error| ProviderError::Unavailable(e.to_string());
        let charge = books::charge(&self.pool, reference).await.map_err(unavailable)?;
        let Some(charge) = charge else {
            return Err(ProviderError::Rejected(format!("no charge {reference}")));
        };
        let minor = amount.minor_units();
        if charge.refunded_minor + minor > charge.captured_minor
            && books::request_result(&self.pool, key).await.map_err(unavailable)?.is_none()
        {
            return Err(ProviderError::Rejected("the refund exceeds what was captured".into()));
        }
        let result = self
            .request(key, "refund", &charge.payment_method, async |conn| {
                books::refund(conn, reference, minor).await?;
                Ok(json!({"amount_minor": minor}))
            })
            .await?;
        decode(result)
    }

    async fn lookup(&self, key: &str) -> Result<Option<Value>, ProviderError> {
        books::request_result(&self.pool, key).await.map_err(|e| ProviderError::Unavailable(e.to_string()))
    }
}
