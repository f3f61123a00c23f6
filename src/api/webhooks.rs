//! `POST /webhooks/{provider}/{tenant_id}`. The signature is checked against
//! the tenant's secret before anything is read or stored; a valid event is
//! stored once per event id and its signal put in the purchase run's mailbox,
//! in one transaction, then answered 2xx. The run does the rest.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::RawBody;
use super::views::{ErrorBody, WebhookReceipt};
use super::{AppState, ids};
use crate::{db, signature};

/// Providers whose webhooks Bursar verifies with its own signature scheme.
const SIGNED_BY_BURSAR: [&str; 2] = ["sandbox", "voucher"];

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: EventData,
}

/// What Bursar reads of an event's data: the purchase it concerns, when it
/// concerns one. Any other event is stored for the record.
#[derive(Deserialize, Default)]
struct EventData {
    /// Any JSON: an event whose `purchase_id` is not one of ours is kept all the same.
    purchase_id: Option<Value>,
}

#[utoipa::path(post, path = "/webhooks/{provider}/{tenant_id}", operation_id = "receiveWebhook", tag = "webhooks",
    security(()),
    params(("provider" = String, Path, description = "sandbox or voucher (stripe and paypal: not yet)"),
           ("tenant_id" = String, Path),
           ("Bursar-Signature" = String, Header,
               description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">")),
    request_body(content = Object, description = "The provider's event: {\"id\", \"type\", \"data\"}"),
    responses((status = 200, description = "Verified and stored", body = WebhookReceipt),
              (status = 400, description = "A bad or missing signature, or not an event: nothing stored",
                  body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn receive(
    State(state): State<AppState>,
    Path((provider, tenant)): Path<(String, String)>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<WebhookReceipt>, ApiError> {
    if !SIGNED_BY_BURSAR.contains(&provider.as_str()) {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    let tenant_id = Uuid::try_parse(&tenant).map_err(|_| ApiError::not_found("tenant"))?;
    let secrets = db::webhooks::secrets(&state.pool, tenant_id, &provider).await?;
    if secrets.is_empty() {
        return Err(ApiError::not_found("tenant"));
    }
    let header = headers.get("bursar-signature").and_then(|h| h.to_str().ok()).unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let verified = secrets.iter().map(|s| signature::verify(s, header, &body, now)).find(Result::is_ok).unwrap_or_else(
        // Report the current secret's verdict.
        || signature::verify(&secrets[0], header, &body, now),
    );
    verified.map_err(|e| {
        crate::metrics::webhook(&provider, "rejected");
        ApiError::invalid(Some("Bursar-Signature"), e)
    })?;

    let payload: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(None, format!("the event is not JSON: {e}")))?;
    let event: Event = super::extract::from_value(payload.clone())?;
    let signal = match event.kind.as_str() {
        "payment.authorized" | "payment.failed" => Some(event.kind.as_str()),
        _ => None, // stored for the record; nothing waits for it
    };
    let purchase = match event.data.purchase_id.as_ref().and_then(Value::as_str).and_then(ids::parse_purchase) {
        Some(id) => db::purchases::get(&mut *state.pool.acquire().await?, tenant_id, id).await?,
        None => None,
    };
    let mut tx = state.pool.begin().await?;
    let run_id = purchase.as_ref().map(|p| p.run_id);
    let stored = db::webhooks::insert(&mut tx, tenant_id, &provider, &event.id, &event.kind, &payload, run_id).await?;
    if stored && let (Some(name), Some(run_id)) = (signal, run_id) {
        state.engine.signal(&mut tx, run_id, name, &event.id, &payload).await.map_err(ApiError::internal)?;
    }
    tx.commit().await?;
    crate::metrics::webhook(&provider, if stored { "accepted" } else { "duplicate" });
    if purchase.is_none() && signal.is_some() {
        let why = "a payment event for no purchase of this tenant; stored only";
        tracing::warn!(%tenant_id, provider, event = %event.id, "{why}");
    }
    Ok(Json(WebhookReceipt { received: true, duplicate: !stored }))
}
