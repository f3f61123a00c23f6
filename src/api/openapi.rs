//! The OpenAPI document of the HTTP API, generated from the handlers'
//! annotations and the request and response types they use, so it says
//! what the code does; served at `GET /openapi.json`. API.md is the
//! contract it must match (tests/integration/openapi.rs holds it to both).

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Bursar",
        description = "Durable payment-and-enrollment workflows for learning platforms. Authenticate with \
                       `Authorization: Bearer <api key>`; every refusal is `{\"error\": {\"type\", \"message\", \
                       \"field\"?}}`."
    ),
    paths(
        super::settings::get,
        super::settings::patch,
        super::offerings::put,
        super::offerings::get,
        super::purchases::create,
        super::purchases::get,
        super::purchases::list,
        super::sandbox::charges,
        super::sandbox::complete,
        super::webhooks::receive,
        super::ops::list,
        super::ops::show,
        super::ops::replay,
        super::ops::cancel,
        super::healthz,
        super::readyz,
        super::metrics,
    ),
    modifiers(&ApiKey, &EveryRefusal),
    security(("api_key" = []))
)]
struct ApiDoc;

/// The API key, sent as a bearer token.
struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = Http::builder().scheme(HttpAuthScheme::Bearer).bearer_format("bsk_…").build();
        components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// What any route may answer besides what its annotation lists: an error in
/// the one shape (a 500, a 405 for another method), and, where a body is
/// read, a 413 for one over the size limit.
struct EveryRefusal;

impl Modify for EveryRefusal {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = || {
            ResponseBuilder::new()
                .description("An error: {\"error\": {\"type\", \"message\", \"field\"?}}")
                .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses.entry("default".into()).or_insert_with(|| error().into());
                if operation.request_body.is_some() {
                    responses.entry("413".into()).or_insert_with(|| error().into());
                }
            }
        }
    }
}

pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

pub async fn serve() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}
