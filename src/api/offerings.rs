//! `PUT /v1/offerings/{id}` and `GET /v1/offerings/{id}`: offerings mirrored
//! from the platform, upserted by the platform's own id.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::ApiError;
use super::extract::{ApiJson, Caller};
use super::{AppState, views};
use crate::db;
use crate::db::offerings::{OfferingRow, Upsert, Upserted};
use crate::domain::money::{Money, MoneyJson};
use crate::domain::offering::{Offering, OfferingInput};

#[utoipa::path(put, path = "/v1/offerings/{offering_id}", operation_id = "putOffering", tag = "offerings",
    params(("offering_id" = String, Path, description = "The platform's own id")),
    request_body = OfferingInput,
    responses(
        (status = 200, description = "Updated", body = views::Offering),
        (status = 201, description = "Created", body = views::Offering),
        (status = 400, description = "Bad input, naming the field", body = views::ErrorBody),
        (status = 401, body = views::ErrorBody),
        (status = 409, description = "The capacity is below the seats taken", body = views::ErrorBody),
        (status = 413, description = "The body is too large", body = views::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(offering_id): Path<String>,
    ApiJson(input): ApiJson<OfferingInput>,
) -> Result<(StatusCode, Json<views::Offering>), ApiError> {
    let o = Offering::parse(&offering_id, input)?;
    let upsert = Upsert {
        id: &o.id,
        title: &o.title,
        price_amount: o.price.amount(),
        currency: o.price.currency().code(),
        capacity: o.capacity,
        kind: o.kind.as_str(),
        lms_course_id: o.lms_course_id.as_deref(),
        lms_url: o.lms_url.as_deref(),
    };
    match db::offerings::upsert(&state.pool, caller.tenant_id, &upsert).await? {
        Upserted::Created(row) => Ok((StatusCode::CREATED, Json(to_view(&row)?))),
        Upserted::Updated(row) => Ok((StatusCode::OK, Json(to_view(&row)?))),
        Upserted::BelowSeatsTaken { seats_taken } => {
            Err(ApiError::conflict(format!("{seats_taken} seats are taken; the capacity cannot go below that")))
        }
    }
}

#[utoipa::path(get, path = "/v1/offerings/{offering_id}", operation_id = "getOffering", tag = "offerings",
    params(("offering_id" = String, Path, description = "The platform's own id")),
    responses((status = 200, body = views::Offering), (status = 401, body = views::ErrorBody),
        (status = 404, body = views::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(offering_id): Path<String>,
) -> Result<Json<views::Offering>, ApiError> {
    let row = db::offerings::get_with_seats_taken(&state.pool, caller.tenant_id, &offering_id)
        .await?
        .ok_or_else(|| ApiError::not_found("offering"))?;
    Ok(Json(to_view(&row)?))
}

fn to_view(row: &OfferingRow) -> Result<views::Offering, ApiError> {
    let currency = row.currency.parse().map_err(ApiError::internal)?;
    let price = Money::new(row.price_amount, currency).map_err(ApiError::internal)?;
    Ok(views::Offering {
        id: row.id.clone(),
        title: row.title.clone(),
        price: MoneyJson::from(price),
        capacity: row.capacity,
        kind: row.kind.clone(),
        lms: views::OfferingLms { course_id: row.lms_course_id.clone(), url: row.lms_url.clone() },
        seats_taken: row.seats_taken,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}
