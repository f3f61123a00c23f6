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

use std::collections::HashMap;
use std::sync::OnceLock;

use async_trait::async_trait;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::{Authorization, AuthorizeRequest, Captured, PaymentProvider, ProviderError, Refunded};
use crate::db::sandbox as books;
use crate::domain::money::Money;
use crate::lanes;

pub const METHODS: [&str; 5] =
    ["pm_sandbox_ok", "pm_sandbox_declined", "pm_sandbox_requires_action", "pm_sandbox_flaky", "pm_sandbox_unknown"];

pub struct Sandbox {
    pool: PgPool,
    /// The writer of the books, started by the first request (construction
    /// may happen outside a runtime).
    books: OnceLock<mpsc::Sender<Call>>,
}

/// A request waiting for the books' writer: the call's number and the
/// stored answer, or why the books could not be written.
type Call = lanes::Call<books::Request, Result<(i32, Option<Value>), String>>;

/// Requests that arrive together are written together, in one statement and
/// one commit (`books::requests`), as a busy provider's own database would.
const MAX_BATCH: usize = 256;

impl Sandbox {
    pub fn new(pool: PgPool) -> Sandbox {
        Sandbox { pool, books: OnceLock::new() }
    }

    fn books(&self) -> &mpsc::Sender<Call> {
        self.books.get_or_init(|| {
            let pool = self.pool.clone();
            // One writer: the sandbox's statements never wait on each other.
            let (sender, _writer) = lanes::spawn(MAX_BATCH, 1, move |calls: Vec<Call>| {
                let pool = pool.clone();
                async move { write(&pool, calls).await }
            });
            sender
        })
    }

    /// Applies a request once per idempotency key (see `books::requests`)
    /// and answers with its stored result, misbehaving as the charge's
    /// payment method says.
    async fn request(
        &self,
        key: &str,
        operation: &'static str,
        method: &str,
        result: Value,
        args: Value,
    ) -> Result<Value, ProviderError> {
        let outage = if method == "pm_sandbox_flaky" { 2 } else { 0 };
        let request = books::Request { key: key.to_owned(), operation, outage, result, args };
        let (calls, stored) = lanes::ask(self.books(), request)
            .await
            .ok_or_else(|| ProviderError::Unavailable("the sandbox's books have stopped".into()))?
            .map_err(ProviderError::Unavailable)?;
        let Some(result) = stored else {
            return Err(ProviderError::Unavailable(format!("sandbox outage (call {calls} of {operation})")));
        };
        if method == "pm_sandbox_unknown" && calls == 1 {
            return Err(ProviderError::Unavailable(format!("sandbox timeout: {operation} applied, answer lost")));
        }
        Ok(result)
    }
}

/// Writes a batch of calls: a charge, and a key, once per statement. If the
/// database refuses a statement (a deadlock with another process's batch, a
/// bad request), its calls are tried one by one, so one request does not fail
/// the others. Any other error (no connection, a lost answer, after which the
/// statement may have committed) goes to every caller as an outage: trying
/// again here would count the calls twice, and could queue every later call
/// behind a slow pool.
async fn write(pool: &PgPool, calls: Vec<Call>) {
    let charge = |c: &Call| c.request.args.get("reference").and_then(Value::as_str).unwrap_or_default().to_owned();
    let by_charge = lanes::rounds(calls.into_iter().map(|c| (charge(&c), c)).collect(), |(charge, _)| charge);
    for calls in by_charge {
        for round in lanes::rounds(calls, |(_, c)| &c.request.key) {
            let round: Vec<Call> = round.into_iter().map(|(_, c)| c).collect();
            match books::requests(pool, &round.iter().map(|c| &c.request).collect::<Vec<_>>()).await {
                Ok(answers) => reply(round, answers),
                Err(sqlx::Error::Database(e)) if round.len() > 1 => {
                    tracing::warn!(error = %e, calls = round.len(), "sandbox batch refused; trying its calls one by one");
                    for call in round {
                        match books::requests(pool, &[&call.request]).await {
                            Ok(answers) => reply(vec![call], answers),
                            Err(e) => {
                                let _ = call.reply.send(Err(e.to_string()));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, calls = round.len(), "sandbox batch failed");
                    for call in round {
                        let _ = call.reply.send(Err(e.to_string()));
                    }
                }
            }
        }
    }
}

fn reply(calls: Vec<Call>, mut answers: HashMap<String, (i32, Option<Value>)>) {
    for call in calls {
        let answer = answers.remove(&call.request.key).ok_or_else(|| format!("no answer for {}", call.request.key));
        let _ = call.reply.send(answer);
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
        let result = self.request(req.idempotency_key, "authorize", req.payment_method, answer, charge).await?;
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
        let result = self.request(key, "capture", &charge.payment_method, json!({"amount_minor": minor}), args).await?;
        decode(result)
    }

    async fn void(&self, reference: &str, key: &str) -> Result<(), ProviderError> {
        let method = books::charge(&self.pool, reference)
            .await
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?
            .map(|c| c.payment_method)
            .unwrap_or_default();
        let args = json!({"reference": reference});
        self.request(key, "void", &method, json!({"voided": reference}), args).await?;
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
        let result = self.request(key, "refund", &charge.payment_method, json!({"amount_minor": minor}), args).await?;
        decode(result)
    }

    async fn lookup(&self, key: &str) -> Result<Option<Value>, ProviderError> {
        books::request_result(&self.pool, key).await.map_err(|e| ProviderError::Unavailable(e.to_string()))
    }
}
