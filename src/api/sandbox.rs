//! The sandbox provider's test-mode endpoints.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::Caller;
use super::{AppState, ids};
use crate::db;
use crate::domain::money::{Money, MoneyJson};

#[derive(Deserialize)]
pub struct ChargesQuery {
    purchase_id: String,
}

/// What the sandbox really authorized, captured and refunded for a purchase:
/// the provider's side of the books, which tests hold the engine to.
pub async fn charges(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ChargesQuery>,
) -> Result<Json<Value>, ApiError> {
    let purchase_id = ids::parse_purchase(&q.purchase_id)
        .ok_or_else(|| ApiError::invalid(Some("purchase_id"), "not a purchase id"))?;
    let charges = db::sandbox::for_purchase(&state.pool, caller.tenant_id, purchase_id).await?;
    let mut data = Vec::new();
    for c in charges {
        let currency = c.currency.parse().map_err(ApiError::internal)?;
        let money = |minor| MoneyJson::from(Money::from_minor(minor, currency));
        data.push(json!({
            "reference": c.reference,
            "payment_method": c.payment_method,
            "status": c.status,
            "amount": money(c.amount_minor),
            "captured": money(c.captured_minor),
            "refunded": money(c.refunded_minor),
            "created_at": c.created_at,
        }));
    }
    Ok(Json(json!({"data": data, "next_cursor": null})))
}
