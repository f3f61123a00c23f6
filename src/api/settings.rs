//! `GET /v1/settings`, `PATCH /v1/settings`: where enrollments and
//! notifications go. Secrets are write-only: shown as `{"set": true}`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{ApiJson, Caller};
use super::{AppState, views};
use crate::db;
use crate::domain::settings::{LmsTarget, Notifications, merge_provider_credentials, shown_provider_credentials};

/// Only what is given changes.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = SettingsPatch)]
pub struct Patch {
    /// `{"type": "none"}`, `{"type": "callback", "url", "secret"}` (16+
    /// characters) or `{"type": "moodle", "base_url", "token"}`: replaces the target.
    #[schema(value_type = Option<Object>)]
    lms: Option<Value>,
    /// `{"webhook_url", "webhook_secret" (16+ characters), "smtp": {"host",
    /// "port", "from", "username", "password", "starttls"}}`: replaces them.
    #[schema(value_type = Option<Object>)]
    notifications: Option<Value>,
    /// `{"stripe": {"api_key", "webhook_secret"}, "paypal": {"client_id",
    /// "client_secret", "webhook_id"}}`, merged field by field; null removes.
    #[schema(value_type = Option<Object>)]
    providers: Option<Value>,
}

#[utoipa::path(get, path = "/v1/settings", operation_id = "getSettings", tag = "settings",
    responses((status = 200, body = views::Settings), (status = 401, body = views::ErrorBody)))]
pub async fn get(State(state): State<AppState>, caller: Caller) -> Result<Json<views::Settings>, ApiError> {
    let (lms, notifications, providers) = db::settings::get(&state.pool, caller.tenant_id).await?;
    Ok(Json(view(lms, notifications, providers)?))
}

#[utoipa::path(patch, path = "/v1/settings", operation_id = "patchSettings", tag = "settings", request_body = Patch,
    responses((status = 200, body = views::Settings), (status = 400, body = views::ErrorBody),
              (status = 401, body = views::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(patch): ApiJson<Patch>,
) -> Result<Json<views::Settings>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let (mut lms, mut notifications, mut providers) = db::settings::get(&mut *tx, caller.tenant_id).await?;
    if let Some(v) = patch.lms {
        lms = serde_json::to_value(LmsTarget::parse(v)?).map_err(ApiError::internal)?;
    }
    if let Some(v) = patch.notifications {
        notifications = serde_json::to_value(Notifications::parse(v)?).map_err(ApiError::internal)?;
    }
    if let Some(v) = patch.providers {
        merge_provider_credentials(&mut providers, v)?;
    }
    db::settings::put(&mut *tx, caller.tenant_id, &lms, &notifications, &providers).await?;
    tx.commit().await?;
    Ok(Json(view(lms, notifications, providers)?))
}

fn view(lms: Value, notifications: Value, providers: Value) -> Result<views::Settings, ApiError> {
    let lms: LmsTarget = serde_json::from_value(lms).map_err(ApiError::internal)?;
    let notifications: Notifications = serde_json::from_value(notifications).map_err(ApiError::internal)?;
    Ok(views::Settings {
        lms: lms.redacted(),
        notifications: notifications.redacted(),
        providers: shown_provider_credentials(&providers),
    })
}
