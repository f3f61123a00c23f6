//! The API's response bodies as types: what the handlers serialize is what
//! the OpenAPI document (`api/openapi.rs`) describes, one definition for
//! both. Names and shapes are API.md's.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use std::collections::BTreeMap;

use crate::domain::money::MoneyJson;
use crate::domain::settings::{Secret, ShownLms, ShownNotifications};

/// A purchase: the seats it buys, its payment and the run carrying it out.
#[derive(Debug, Serialize, ToSchema)]
pub struct Purchase {
    /// `pur_…`
    pub id: String,
    /// `processing`, `requires_action`, `completed`, `failed`, `cancelled`,
    /// `refunded` or `partially_refunded`.
    pub status: String,
    pub offering_id: String,
    pub quantity: i32,
    pub total: MoneyJson,
    /// `cus_…`
    pub customer_id: String,
    pub payment: Payment,
    pub seats: Vec<Seat>,
    /// Why a `failed` purchase failed; null otherwise.
    #[schema(required = true)]
    pub failure: Option<Failure>,
    pub run: RunRef,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Payment {
    pub provider: String,
    /// `pending`, `requires_action`, `authorized`, `declined`, `captured` or `refunded`.
    pub status: String,
    /// The provider's reference for the payment, once it has one.
    #[schema(required = true)]
    pub reference: Option<String>,
    pub captured: MoneyJson,
    pub refunded: MoneyJson,
    /// What the buyer must do while the purchase is `requires_action`.
    #[schema(value_type = Option<Object>, required = true)]
    pub next_action: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Seat {
    /// `seat_…`
    pub id: String,
    /// `unassigned`, `invited`, `active`, `declined`, `revoked`, `cancelled` or `refunded`.
    pub status: String,
    /// Who the seat is for; null until it is assigned.
    #[schema(required = true)]
    pub assignee: Option<Assignee>,
    #[schema(required = true)]
    pub enrolled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Assignee {
    #[schema(required = true)]
    pub email: Option<String>,
    #[schema(required = true)]
    pub lms_user_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Failure {
    /// `sold_out`, `payment_declined`, `payment_expired`, `enrollment_failed`, …
    #[schema(required = true)]
    pub code: Option<String>,
}

/// The workflow run behind a resource, as far as a platform needs it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunRef {
    /// `run_…`
    pub id: String,
    pub status: String,
    pub step: String,
}

/// A page of a list, newest first. `next_cursor` goes in `?cursor=` for the
/// next page; null on the last.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Offering {
    /// The platform's own id.
    pub id: String,
    pub title: String,
    pub price: MoneyJson,
    /// Null: unlimited seats.
    #[schema(required = true)]
    pub capacity: Option<i32>,
    /// `course` or `subscription`.
    pub kind: String,
    pub lms: OfferingLms,
    pub seats_taken: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OfferingLms {
    #[schema(required = true)]
    pub course_id: Option<String>,
    #[schema(required = true)]
    pub url: Option<String>,
}

/// Every refusal: `{"error": {"type", "message", "field"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_request`, `unauthorized`, `not_found`, `conflict`,
    /// `idempotency_mismatch`, `unprocessable`, `rate_limited` or `internal`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    /// The input at fault: a body field's path, a query parameter or a header.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
}

/// A tenant's settings with every secret replaced by `{"set": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    pub lms: ShownLms,
    pub notifications: ShownNotifications,
    /// Stored credentials by provider (`stripe`, `paypal`), each field shown as `{"set": true}`.
    pub providers: BTreeMap<String, BTreeMap<String, Secret>>,
}

/// What the sandbox provider really did for a purchase.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxCharge {
    pub reference: String,
    pub payment_method: String,
    /// `requires_action`, `authorized`, `declined`, `captured` or `voided`.
    pub status: String,
    pub amount: MoneyJson,
    pub captured: MoneyJson,
    pub refunded: MoneyJson,
    pub created_at: DateTime<Utc>,
}

/// The buyer's action completed, and the webhook the sandbox sent about it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxCompletion {
    pub reference: String,
    pub status: String,
    pub webhook: SentWebhook,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SentWebhook {
    pub event_id: String,
    pub delivered: bool,
    #[schema(required = true)]
    pub error: Option<String>,
}

/// A provider's event, verified and stored (`duplicate`: seen before, no effect).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    pub duplicate: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`), `ready` or `unavailable` (`/readyz`).
    pub status: String,
    /// What is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

/// A run as operators list it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    /// `run_…`
    pub id: String,
    pub workflow: String,
    pub version: i32,
    /// `ready`, `running`, `waiting`, `parked`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub step: String,
    pub attempt: i32,
    #[schema(required = true)]
    pub wake_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub failure_code: Option<String>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A run's whole story: each attempt, the effects with their keys and
/// outcomes, the signals received and the operators' actions.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunReport {
    #[serde(flatten)]
    pub run: RunSummary,
    #[schema(value_type = Object)]
    pub context: Value,
    #[schema(required = true)]
    pub waiting_for: Option<Vec<String>>,
    pub lease: Lease,
    #[schema(required = true)]
    pub cancel_requested_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Each attempt of each step, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub timeline: Value,
    /// The effects ledger's rows: external calls with their keys.
    #[schema(value_type = Vec<Object>)]
    pub effects: Value,
    #[schema(value_type = Vec<Object>)]
    pub signals: Value,
    /// Replays and cancels, with who asked and why.
    #[schema(value_type = Vec<Object>)]
    pub actions: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Lease {
    #[schema(required = true)]
    pub owner: Option<String>,
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    pub token: i64,
}

/// What a replay did, or with `?dry_run=true` would do.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayAnswer {
    pub dry_run: bool,
    pub resumes_at: String,
    /// Each recorded effect and what the replay does with it: `skip`,
    /// `ask_first` or `call_again`.
    #[schema(value_type = Vec<Object>)]
    pub effects: Value,
    pub run: RunSummary,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CancelAnswer {
    /// `cancelled` at once, or `requested` of a step that is running.
    pub cancellation: String,
    pub run: RunSummary,
}
