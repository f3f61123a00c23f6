//! Payment providers behind one trait. Every request carries the effects
//! ledger's idempotency key, so a retried request is the same request to the
//! provider, and `lookup` can ask what became of one whose answer was lost.

pub mod sandbox;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::money::Money;

/// Providers a purchase may name. Only those registered can be used.
pub const KNOWN: [&str; 5] = ["sandbox", "stripe", "paypal", "voucher", "credits"];

pub struct AuthorizeRequest<'a> {
    pub tenant_id: Uuid,
    pub purchase_id: Uuid,
    pub amount: Money,
    pub payment_method: &'a str,
    pub idempotency_key: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Authorization {
    Authorized {
        reference: String,
    },
    /// The buyer must act (3-D Secure, an approval, paying a voucher).
    RequiresAction {
        reference: String,
        next_action: Value,
    },
    Declined {
        reference: Option<String>,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Captured {
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refunded {
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The provider said no, for good.
    #[error("rejected: {0}")]
    Rejected(String),
    /// An outage, a timeout, a lost answer: whether it happened is unknown.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn authorize(&self, req: &AuthorizeRequest<'_>) -> Result<Authorization, ProviderError>;
    async fn capture(&self, reference: &str, amount: Money, key: &str) -> Result<Captured, ProviderError>;
    async fn void(&self, reference: &str, key: &str) -> Result<(), ProviderError>;
    async fn refund(&self, reference: &str, amount: Money, key: &str) -> Result<Refunded, ProviderError>;
    /// The answer the provider gave (or would give) to the request made with
    /// `key`, or None if it never received it.
    async fn lookup(&self, key: &str) -> Result<Option<Value>, ProviderError>;
}

#[derive(Clone, Default)]
pub struct Providers {
    by_name: HashMap<&'static str, Arc<dyn PaymentProvider>>,
}

impl Providers {
    pub fn register(&mut self, provider: impl PaymentProvider) {
        self.by_name.insert(provider.name(), Arc::new(provider));
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn PaymentProvider>> {
        self.by_name.get(name).cloned()
    }
}
