//! `POST /v1/purchases` (with Idempotency-Key), `GET /v1/purchases/{id}`,
//! `GET /v1/purchases`. A purchase is created together with the run that
//! carries it out, in one transaction with its idempotency key.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, Caller, from_value};
use super::{AppState, ids, views};
use crate::db;
use crate::db::purchases::{PurchaseRow, SeatRow};
use crate::domain::money::{Currency, Money, MoneyJson};
use crate::domain::purchase::{NewPurchase, PurchaseInput};
use crate::steps::purchase::{Facts, start_context};

const ENDPOINT: &str = "POST /v1/purchases";

pub fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| ApiError::invalid(Some("Idempotency-Key"), "this request needs an Idempotency-Key header"))?;
    let key =
        key.to_str().map_err(|_| ApiError::invalid(Some("Idempotency-Key"), "the key must be printable ASCII"))?;
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::invalid(Some("Idempotency-Key"), "an Idempotency-Key has 1 to 255 characters"));
    }
    Ok(key.to_owned())
}

/// The same request whatever its key order or whitespace.
fn request_hash(body: &Value) -> Vec<u8> {
    Sha256::digest(body.to_string().as_bytes()).to_vec()
}

#[utoipa::path(post, path = "/v1/purchases", operation_id = "createPurchase", tag = "purchases",
    params(("Idempotency-Key" = String, Header, description = "1 to 255 characters: the same key and body answer \
        the first response; another body, 422 idempotency_mismatch")),
    request_body = PurchaseInput,
    responses(
        (status = 201, description = "Created (or, for a repeated key and body, the first answer)",
            body = views::Purchase),
        (status = 400, description = "Bad input, naming the field, or no Idempotency-Key", body = views::ErrorBody),
        (status = 401, body = views::ErrorBody),
        (status = 404, description = "No such offering", body = views::ErrorBody),
        (status = 413, body = views::ErrorBody),
        (status = 422, description = "idempotency_mismatch, or a provider this Bursar does not have",
            body = views::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = idempotency_key(&headers)?;
    let hash = request_hash(&body);
    let tenant = caller.tenant_id;
    // Until the create below, nothing is written: a refusal here leaves the
    // key free, unless an earlier request took it (then that one answers,
    // the key speaking before the body: a changed body is a mismatch).
    let answered = |error: ApiError| replay(&state, tenant, &key, &hash, error);
    let new = match from_value::<PurchaseInput>(body).and_then(|input| Ok(NewPurchase::parse(input)?)) {
        Ok(new) if state.providers.get(&new.provider).is_none() => {
            let why = format!("the `{}` provider is not configured on this Bursar", new.provider);
            return answered(ApiError::unprocessable(Some("payment.provider"), why)).await;
        }
        Ok(new) => new,
        Err(refused) => return answered(refused).await,
    };
    let Some(offering) = db::offerings::get(&state.pool, tenant, &new.offering_id).await? else {
        return answered(ApiError::not_found("offering").with_field("offering_id")).await;
    };
    let currency: Currency = offering.currency.parse().map_err(ApiError::internal)?;
    let price = Money::new(offering.price_amount, currency).map_err(ApiError::internal)?;
    let total = match price.times(new.quantity) {
        Ok(total) => total,
        Err(e) => return answered(ApiError::invalid(Some("quantity"), e)).await,
    };

    let purchase_id = Uuid::now_v7();
    let facts = Facts {
        id: purchase_id,
        tenant_id: tenant,
        offering_id: new.offering_id.clone(),
        quantity: new.quantity as i32,
        currency: currency.code().to_owned(),
        total_minor: total.minor_units(),
        provider: new.provider.clone(),
        payment_method: new.payment_method.clone(),
        customer_email: new.email.clone(),
    };
    let run_key = format!("purchase:{purchase_id}");
    let run = state.engine.new_run(tenant, "purchase", &run_key, start_context(&facts)).map_err(ApiError::internal)?;
    let seat_ids: Vec<Uuid> = (0..new.quantity).map(|_| Uuid::now_v7()).collect();
    // The database keeps microseconds: the answer shows what a read will.
    let created_at = Utc::now().trunc_subsecs(6);
    let created_event = json!({"type": "purchase.created", "data": {"purchase_id": ids::purchase(purchase_id), "offering_id": new.offering_id, "status": "processing"}});
    // The customer's id is the statement's to decide (an existing customer
    // keeps theirs); it fills it in, in the stored answer and in ours.
    let (row, seats) = as_written(&facts, &new, Uuid::nil(), &run, created_at, &seat_ids);
    let mut response = serde_json::to_value(to_view(&row, &seats)?).map_err(ApiError::internal)?;
    let create = db::purchases::Create {
        id: purchase_id,
        tenant_id: tenant,
        currency: currency.code().to_owned(),
        total_minor: total.minor_units(),
        purchase: new,
        seat_ids,
        created_at,
        created_event,
        run,
        endpoint: ENDPOINT,
        key: key.clone(),
        request_hash: hash.clone(),
        response: response.clone(),
    };
    let Some(customer_id) = state.creates.create(create).await.map_err(ApiError::internal)? else {
        return replay(&state, tenant, &key, &hash, ApiError::internal("an Idempotency-Key was taken, then gone"))
            .await;
    };
    response["customer_id"] = json!(ids::customer(customer_id));
    Ok((StatusCode::CREATED, Json(response)))
}

/// The answer stored for this Idempotency-Key, if an earlier request took
/// it: its response when the body is the same, `idempotency_mismatch` when
/// not. `otherwise` when the key is free.
async fn replay(
    state: &AppState,
    tenant: Uuid,
    key: &str,
    hash: &[u8],
    otherwise: ApiError,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    match db::purchases::stored_answer(&state.pool, tenant, ENDPOINT, key).await? {
        Some((first_hash, _, _)) if first_hash != hash => Err(ApiError::idempotency_mismatch()),
        Some((_, status, response)) => {
            let status = StatusCode::from_u16(status as u16).map_err(ApiError::internal)?;
            Ok((status, Json(response)))
        }
        None => Err(otherwise),
    }
}

/// A new purchase as a read would find it, built from what was written
/// (the create answers without reading it back).
fn as_written(
    facts: &Facts,
    new: &NewPurchase,
    customer_id: Uuid,
    run: &db::runs::NewRun,
    created_at: DateTime<Utc>,
    seat_ids: &[Uuid],
) -> (PurchaseRow, Vec<SeatRow>) {
    let row = PurchaseRow {
        id: facts.id,
        tenant_id: facts.tenant_id,
        offering_id: facts.offering_id.clone(),
        quantity: facts.quantity,
        customer_id,
        currency: facts.currency.clone(),
        total_minor: facts.total_minor,
        provider: facts.provider.clone(),
        payment_method: facts.payment_method.clone(),
        payment_status: "pending".into(),
        payment_reference: None,
        authorized_minor: 0,
        captured_minor: 0,
        refunded_minor: 0,
        next_action: None,
        seats_reserved: false,
        enrollment_mode: new.enrollment_mode.into(),
        run_id: run.id,
        created_at,
        status: "processing".into(),
        customer_email: facts.customer_email.clone(),
        run_status: "ready".into(),
        run_step: run.step.clone(),
        failure_code: None,
    };
    let seats = (seat_ids.iter().enumerate())
        .map(|(i, &id)| {
            let assignee = new.assignees.get(i);
            SeatRow {
                id,
                status: "unassigned".into(),
                assignee_email: assignee.and_then(|a| a.email.clone()),
                assignee_lms_user_id: assignee.and_then(|a| a.lms_user_id.clone()),
                enrolled_at: None,
            }
        })
        .collect();
    (row, seats)
}

#[utoipa::path(get, path = "/v1/purchases/{purchase_id}", operation_id = "getPurchase", tag = "purchases",
    params(("purchase_id" = String, Path, description = "pur_…")),
    responses((status = 200, body = views::Purchase), (status = 401, body = views::ErrorBody),
        (status = 404, body = views::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<views::Purchase>, ApiError> {
    let id = ids::parse_purchase(&id).ok_or_else(|| ApiError::not_found("purchase"))?;
    let mut conn = state.pool.acquire().await?;
    read(&mut conn, caller.tenant_id, id).await?.map(Json).ok_or_else(|| ApiError::not_found("purchase"))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this customer's purchases (`cus_…`).
    customer_id: Option<String>,
    /// Only purchases with this status.
    status: Option<String>,
    /// 1 to 500; 50 if not given.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

const STATUSES: [&str; 7] =
    ["processing", "requires_action", "completed", "failed", "cancelled", "refunded", "partially_refunded"];

#[utoipa::path(get, path = "/v1/purchases", operation_id = "listPurchases", tag = "purchases", params(ListQuery),
    responses((status = 200, body = views::Page<views::Purchase>), (status = 400, body = views::ErrorBody),
        (status = 401, body = views::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<views::Page<views::Purchase>>, ApiError> {
    let limit = super::page_limit(q.limit)?;
    let customer_id = match q.customer_id.as_deref() {
        None => None,
        Some(c) => {
            Some(ids::parse_customer(c).ok_or_else(|| ApiError::invalid(Some("customer_id"), "not a customer id"))?)
        }
    };
    if let Some(s) = q.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(ApiError::invalid(Some("status"), format!("`{s}` is not one of {}", STATUSES.join(", "))));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(ids::parse_purchase(c).ok_or_else(|| ApiError::invalid(Some("cursor"), "not a cursor"))?),
    };
    let filter = db::purchases::ListFilter { customer_id, status: q.status, before, limit: limit + 1 };
    let mut rows = db::purchases::list(&state.pool, caller.tenant_id, &filter).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more.then(|| rows.last().map(|r| ids::purchase(r.id))).flatten();
    let page: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut seats = db::purchases::seats_of(&state.pool, &page).await?;
    let mut data = Vec::with_capacity(rows.len());
    for row in &rows {
        data.push(to_view(row, &seats.remove(&row.id).unwrap_or_default())?);
    }
    Ok(Json(views::Page { data, next_cursor }))
}

async fn read(conn: &mut PgConnection, tenant_id: Uuid, id: Uuid) -> Result<Option<views::Purchase>, ApiError> {
    match db::purchases::get(conn, tenant_id, id).await? {
        Some(row) => {
            let seats = db::purchases::seats_of(conn, &[row.id]).await?.remove(&row.id).unwrap_or_default();
            Ok(Some(to_view(&row, &seats)?))
        }
        None => Ok(None),
    }
}

fn to_view(p: &PurchaseRow, seats: &[SeatRow]) -> Result<views::Purchase, ApiError> {
    let currency: Currency = p.currency.parse().map_err(ApiError::internal)?;
    let money = |minor: i64| MoneyJson::from(Money::from_minor(minor, currency));
    let seats = (seats.iter())
        .map(|s| views::Seat {
            id: ids::seat(s.id),
            status: s.status.clone(),
            assignee: (s.assignee_email.is_some() || s.assignee_lms_user_id.is_some()).then(|| views::Assignee {
                email: s.assignee_email.clone(),
                lms_user_id: s.assignee_lms_user_id.clone(),
            }),
            enrolled_at: s.enrolled_at,
        })
        .collect();
    Ok(views::Purchase {
        id: ids::purchase(p.id),
        status: p.status.clone(),
        offering_id: p.offering_id.clone(),
        quantity: p.quantity,
        total: money(p.total_minor),
        customer_id: ids::customer(p.customer_id),
        payment: views::Payment {
            provider: p.provider.clone(),
            status: p.payment_status.clone(),
            reference: p.payment_reference.clone(),
            captured: money(p.captured_minor),
            refunded: money(p.refunded_minor),
            next_action: p.next_action.clone(),
        },
        seats,
        failure: (p.status == "failed").then(|| views::Failure { code: p.failure_code.clone() }),
        run: views::RunRef { id: ids::run(p.run_id), status: p.run_status.clone(), step: p.run_step.clone() },
        created_at: p.created_at,
    })
}
