//! The operators' API: `/v1/ops/runs` to list, inspect, replay and cancel
//! the caller's runs. Replays and cancels need a reason and are written to
//! the run's audit trail with the API key's name.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, Caller};
use super::views::{CancelAnswer, ErrorBody, Page, ReplayAnswer, RunReport, RunSummary};
use crate::db::runs::{Run, RunFilter};
use crate::engine::{Cancellation, Error as EngineError, RunStatus};
use crate::{db, ops};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs with this status (`parked`, `waiting`, `running`, `failed`, …).
    status: Option<String>,
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// 1 to 500; 50 if not given.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/ops/runs", operation_id = "listRuns", tag = "operators", params(ListQuery),
    responses((status = 200, body = Page<RunSummary>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<RunSummary>>, ApiError> {
    let limit = super::page_limit(q.limit)?;
    if let Some(s) = q.status.as_deref().filter(|s| RunStatus::parse(s).is_none()) {
        return Err(ApiError::invalid(Some("status"), format!("`{s}` is not a run status")));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(ops::parse_run_id(c).ok_or_else(|| ApiError::invalid(Some("cursor"), "not a cursor"))?),
    };
    let filter = RunFilter {
        status: q.status,
        workflow: q.workflow,
        tenant_id: Some(caller.tenant_id),
        before,
        limit: limit + 1,
        ..RunFilter::default()
    };
    let mut runs = db::runs::list(&state.pool, &filter).await?;
    let more = runs.len() as i64 > limit;
    runs.truncate(limit as usize);
    let next_cursor = more.then(|| runs.last().map(|r| super::ids::run(r.id))).flatten();
    Ok(Json(Page { data: runs.iter().map(ops::summary).collect(), next_cursor }))
}

async fn own_run(state: &AppState, caller: &Caller, id: &str) -> Result<Run, ApiError> {
    let id = ops::parse_run_id(id).ok_or_else(|| ApiError::not_found("run"))?;
    db::runs::get(&state.pool, id)
        .await?
        .filter(|r| r.tenant_id == caller.tenant_id)
        .ok_or_else(|| ApiError::not_found("run"))
}

#[utoipa::path(get, path = "/v1/ops/runs/{run_id}", operation_id = "showRun", tag = "operators",
    params(("run_id" = String, Path)),
    responses((status = 200, body = RunReport), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunReport>, ApiError> {
    let run = own_run(&state, &caller, &id).await?;
    Ok(Json(ops::report(&state.pool, &run).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Reason {
    /// Why, for the run's audit trail.
    reason: String,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// Say what the replay would do, and do nothing.
    #[serde(default)]
    dry_run: bool,
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::NotFound => ApiError::not_found("run"),
        EngineError::Conflict(m) => ApiError::conflict(m),
        EngineError::InvalidInput(m) => ApiError::invalid(Some("reason"), m),
        other => ApiError::internal(other),
    }
}

fn actor(caller: &Caller) -> String {
    format!("api-key:{}", caller.key_name)
}

#[utoipa::path(post, path = "/v1/ops/runs/{run_id}/replay", operation_id = "replayRun", tag = "operators",
    params(("run_id" = String, Path), ReplayQuery), request_body = Reason,
    responses((status = 200, body = ReplayAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody),
                  (status = 409, description = "The run is not parked or failed", body = ErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ReplayQuery>,
    ApiJson(body): ApiJson<Reason>,
) -> Result<Json<ReplayAnswer>, ApiError> {
    let run = own_run(&state, &caller, &id).await?;
    let plan = ops::replay_plan(&state.pool, &run).await?;
    if !q.dry_run {
        state.engine.replay(run.id, &body.reason, &actor(&caller)).await.map_err(engine_error)?;
    }
    let run = db::runs::get(&state.pool, run.id).await?.ok_or_else(|| ApiError::not_found("run"))?;
    let effects = serde_json::to_value(plan).map_err(ApiError::internal)?;
    Ok(Json(ReplayAnswer { dry_run: q.dry_run, resumes_at: run.step.clone(), effects, run: ops::summary(&run) }))
}

#[utoipa::path(post, path = "/v1/ops/runs/{run_id}/cancel", operation_id = "cancelRun", tag = "operators",
    params(("run_id" = String, Path)), request_body = Reason,
    responses((status = 200, body = CancelAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Reason>,
) -> Result<Json<CancelAnswer>, ApiError> {
    let run = own_run(&state, &caller, &id).await?;
    let done = state.engine.cancel(run.id, &body.reason, &actor(&caller)).await.map_err(engine_error)?;
    let run = db::runs::get(&state.pool, run.id).await?.ok_or_else(|| ApiError::not_found("run"))?;
    let cancellation = match done {
        Cancellation::Applied => "applied",
        Cancellation::Requested => "requested",
    };
    Ok(Json(CancelAnswer { cancellation: cancellation.into(), run: ops::summary(&run) }))
}
