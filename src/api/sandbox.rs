//! The sandbox provider's test-mode endpoints.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{ApiQuery, Caller};
use super::views::{ErrorBody, Page, SandboxCharge, SandboxCompletion, SentWebhook};
use super::{AppState, ids};
use crate::db;
use crate::domain::money::{Money, MoneyJson};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChargesQuery {
    /// The purchase (`pur_…`) whose charges to list.
    purchase_id: String,
}

/// What the sandbox really authorized, captured and refunded for a purchase:
/// the provider's side of the books, which tests hold the engine to.
#[utoipa::path(get, path = "/v1/sandbox/charges", operation_id = "listSandboxCharges", tag = "sandbox",
    params(ChargesQuery),
    responses((status = 200, description = "What the sandbox provider really did", body = Page<SandboxCharge>),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn charges(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ChargesQuery>,
) -> Result<Json<Page<SandboxCharge>>, ApiError> {
    let purchase_id = ids::parse_purchase(&q.purchase_id)
        .ok_or_else(|| ApiError::invalid(Some("purchase_id"), "not a purchase id"))?;
    let charges = db::sandbox::for_purchase(&state.pool, caller.tenant_id, purchase_id).await?;
    let mut data = Vec::new();
    for c in charges {
        let currency = c.currency.parse().map_err(ApiError::internal)?;
        let money = |minor| MoneyJson::from(Money::from_minor(minor, currency));
        data.push(SandboxCharge {
            reference: c.reference,
            payment_method: c.payment_method,
            status: c.status,
            amount: money(c.amount_minor),
            captured: money(c.captured_minor),
            refunded: money(c.refunded_minor),
            created_at: c.created_at,
        });
    }
    Ok(Json(Page { data, next_cursor: None }))
}

/// The buyer completes the sandbox's action (3-D Secure, an approval): the
/// charge becomes authorized and the sandbox sends its signed
/// `payment.authorized` webhook to this Bursar, as a real provider would.
#[utoipa::path(post, path = "/v1/sandbox/payments/{reference}/complete", operation_id = "completeSandboxPayment",
    tag = "sandbox",
    params(("reference" = String, Path, description = "The sandbox's payment reference")),
    responses((status = 200, body = SandboxCompletion), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, description = "The payment is not waiting for an action", body = ErrorBody)))]
pub async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
) -> Result<Json<SandboxCompletion>, ApiError> {
    let charge = db::sandbox::charge(&state.pool, &reference).await?;
    let charge = charge.filter(|c| c.tenant_id == caller.tenant_id).ok_or_else(|| ApiError::not_found("payment"))?;
    if db::sandbox::complete_action(&state.pool, caller.tenant_id, &reference).await?.is_none() {
        return Err(ApiError::conflict(format!("the payment is {}, not waiting for an action", charge.status)));
    }
    let event_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let event = json!({
        "id": event_id,
        "type": "payment.authorized",
        "created": chrono::Utc::now().timestamp(),
        "data": {"reference": reference, "purchase_id": ids::purchase(charge.purchase_id)},
    });
    let delivered = deliver(&state, caller.tenant_id, &event).await;
    let webhook = SentWebhook { event_id, delivered: delivered.is_ok(), error: delivered.err() };
    Ok(Json(SandboxCompletion { reference, status: "authorized".into(), webhook }))
}

async fn deliver(state: &AppState, tenant_id: uuid::Uuid, event: &Value) -> Result<u16, String> {
    let secret = db::webhooks::secret(&state.pool, tenant_id, "sandbox")
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the tenant has no sandbox webhook secret")?;
    let body = event.to_string();
    let header = crate::signature::sign(&secret, chrono::Utc::now().timestamp(), body.as_bytes());
    let url = format!("{}/webhooks/sandbox/{tenant_id}", state.self_url);
    let res = state
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("Bursar-Signature", header)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status().is_success() { Ok(res.status().as_u16()) } else { Err(format!("answered {}", res.status())) }
}
