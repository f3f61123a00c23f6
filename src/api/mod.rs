//! The HTTP API (`../shared/API.md` is the contract): axum routers, one
//! module per resource, every error in one shape (`error.rs`).

pub mod creates;
mod error;
pub mod extract;
pub mod ids;
mod offerings;
pub mod openapi;
mod ops;
mod purchases;
mod sandbox;
mod settings;
pub mod views;
mod webhooks;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use sqlx::PgPool;

use crate::engine::Engine;
use crate::providers::Providers;

pub use error::ApiError;

/// Request bodies above this are refused: nothing in the API needs more.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub engine: Engine,
    pub providers: Providers,
    /// Where this server answers, for the sandbox's webhooks to itself.
    pub self_url: String,
    pub http: reqwest::Client,
    creates: creates::Creates,
}

impl AppState {
    pub fn new(engine: Engine, providers: Providers, self_url: String) -> AppState {
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().expect("a client");
        let pool = engine.pool().clone();
        AppState { creates: creates::Creates::new(pool.clone()), pool, engine, providers, self_url, http }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/offerings/{offering_id}", get(offerings::get).put(offerings::put))
        .route("/v1/purchases", get(purchases::list).post(purchases::create))
        .route("/v1/purchases/{purchase_id}", get(purchases::get))
        .route("/v1/sandbox/charges", get(sandbox::charges))
        .route("/v1/sandbox/payments/{reference}/complete", post(sandbox::complete))
        .route("/webhooks/{provider}/{tenant_id}", post(webhooks::receive))
        .route("/v1/settings", get(settings::get).patch(settings::patch))
        .route("/v1/ops/runs", get(ops::list))
        .route("/v1/ops/runs/{run_id}", get(ops::show))
        .route("/v1/ops/runs/{run_id}/replay", post(ops::replay))
        .route("/v1/ops/runs/{run_id}/cancel", post(ops::cancel))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// `?limit=` as the contract defines it: 50 unless given, 1 to 500.
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid(Some("limit"), "limit is from 1 to 500"));
    }
    Ok(limit)
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health", security(()),
    responses((status = 200, description = "The process is up", body = views::Health)))]
async fn healthz() -> Json<views::Health> {
    Json(views::Health { status: "ok".into(), reason: None })
}

/// The process can do its work: the database answers.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health", security(()), responses(
    (status = 200, description = "The database answers", body = views::Health),
    (status = 503, description = "It does not", body = views::Health)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<views::Health>) {
    match crate::db::ping(&state.pool).await {
        Ok(_) => (StatusCode::OK, Json(views::Health { status: "ready".into(), reason: None })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let down = views::Health { status: "unavailable".into(), reason: Some("database".into()) };
            (StatusCode::SERVICE_UNAVAILABLE, Json(down))
        }
    }
}

/// Prometheus text exposition (see `crate::metrics`).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health", security(()), responses(
    (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
async fn metrics(
    State(state): State<AppState>,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    let text = crate::metrics::render(&state.pool).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}
