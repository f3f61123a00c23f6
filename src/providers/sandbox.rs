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

    /// Applies a request once per idempotency key (see `books::request`)
    /// and answers with its stored result, misbehaving as the charge's
    /// payment method says.
    async fn request(
        &self,
        key: &str,
        operation: &str,
        method: &str,
        result: Value,
        apply: books::Apply,
        args: Value,
    ) -> Result<Value, ProviderError> {
        let outage = if method == "pm_sandbox_flaky" { 2 } else { 0 };
        let (calls, stored) = books::request(&self.pool, key, operation, outage, &result, apply, &args)
            .await
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let Some(result) = stored else {
            return Err(ProviderError::Unavailable(format!("sandbox outage (call {calls} of {operation})")));
        };
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
        let charge = json!({
            "reference": reference,
            "tenant_id": req.tenant_id,
            "purchase_id": req.purchase_id,
            "payment_method": req.payment_method,
            "currency": req.amount.currency().code(),
            "amount_minor": req.amount.minor_units(),
            "status": status,
        });
        let answer = serde_json::to_value(answer).expect("serializable");
        let result = self
            .request(req.idempotency_key, "authorize", req.payment_method, answer, books::OPEN_CHARGE, charge)
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
        let args = json!({"reference": reference, "minor": minor});
        let result = self
            .request(key, "capture", &charge.payment_method, json!({"amount_minor": minor}), books::CAPTURE, args)
            .await?;
        decode(result)
    }

    async fn void(&self, reference: &str, key: &str) -> Result<(), ProviderError> {
        let method = books::charge(&self.pool, reference)
            .await
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?
            .map(|c| c.payment_method)
            .unwrap_or_default();
        let args = json!({"reference": reference});
        self.request(key, "void", &method, json!({"voided": reference}), books::VOID, args).await?;
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
        let args = json!({"reference": reference, "minor": minor});
        let result = self
            .request(key, "refund", &charge.payment_method, json!({"amount_minor": minor}), books::REFUND, args)
            .await?;
        decode(result)
    }

    async fn lookup(&self, key: &str) -> Result<Option<Value>, ProviderError> {
        books::request_result(&self.pool, key).await.map_err(|e| ProviderError::Unavailable(e.to_string()))
    }
}
