//! Request extractors that answer in the API's error shape: the caller's
//! tenant from its API key, and JSON bodies whose errors name the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::{db, tenants};

/// The tenant whose API key made the request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: Uuid,
    pub key_name: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let key = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .filter(|k| !k.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let (tenant_id, key_name) = db::tenants::find_by_key_hash(&state.pool, &tenants::hash_api_key(key))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Caller { tenant_id, key_name })
    }
}

/// The token of `Bearer <token>`; the scheme's name is case-insensitive (RFC 9110).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A raw body within the size limit; a larger one is a 413 in the API's
/// error shape.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<RawBody, ApiError> {
        Bytes::from_request(req, state).await.map(RawBody).map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                let mut e = ApiError::invalid(None, format!("the body is larger than {} bytes", super::BODY_LIMIT));
                e.status = StatusCode::PAYLOAD_TOO_LARGE;
                e
            } else {
                ApiError::invalid(None, rejection.body_text())
            }
        })
    }
}

/// A query string. A parameter of the wrong type, or a missing one, is a
/// 400 `invalid_request` naming it.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<ApiQuery<T>, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            ApiError::invalid(field_at(&path, &message).as_deref(), format!("the query string: {message}"))
        })
    }
}

/// A JSON body. Malformed JSON, a missing field or a field of the wrong type
/// is a 400 `invalid_request` naming the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<ApiJson<T>, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        if let Some(field) = nul_field(&bytes) {
            return Err(ApiError::invalid(Some(&field), "text may not contain NUL (\\u0000) characters"));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(ApiJson).map_err(path_error)
    }
}

/// The first field whose text holds a NUL character, which PostgreSQL cannot
/// store: refused here, naming the field, rather than failing the write (and,
/// for a purchase, the batch it was written with).
fn nul_field(body: &[u8]) -> Option<String> {
    // JSON can only carry a NUL escaped; most bodies stop here.
    if !body.windows(6).any(|w| w == b"\\u0000") {
        return None;
    }
    fn find(value: &serde_json::Value, path: &str) -> Option<String> {
        let at = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
        match value {
            serde_json::Value::String(s) if s.contains('\0') => {
                Some(if path.is_empty() { ".".into() } else { path.into() })
            }
            serde_json::Value::Object(fields) => {
                fields.iter().find_map(|(key, v)| if key.contains('\0') { Some(at(key)) } else { find(v, &at(key)) })
            }
            serde_json::Value::Array(items) => {
                items.iter().enumerate().find_map(|(i, v)| find(v, &format!("{path}[{i}]")))
            }
            _ => None,
        }
    }
    find(&serde_json::from_slice(body).ok()?, "")
}

/// Decodes a JSON value already read, with the same field-naming errors.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = inner.to_string();
    let field = field_at(&path, &message);
    let message =
        if inner.is_syntax() || inner.is_eof() { format!("the body is not valid JSON: {message}") } else { message };
    ApiError::invalid(field.as_deref(), message)
}

/// The input a deserializing error is about: where it stopped (`path`,
/// serde_path_to_error's), and for a missing field, that field.
fn field_at(path: &str, message: &str) -> Option<String> {
    match message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
        Some(missing) if path == "." => Some(missing.to_owned()),
        Some(missing) => Some(format!("{path}.{missing}")),
        // `?` stands where the input broke off before a field.
        None if path != "." && !path.ends_with('?') => Some(path.to_owned()),
        None => None,
    }
}
