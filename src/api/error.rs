//! The API's one error shape: `{"error": {"type", "message", "field"?}}`.
//! Internal causes are logged in full and answered opaquely.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::views::{ErrorBody, ErrorDetail};
use crate::domain::offering::InvalidField;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn invalid(field: Option<&str>, message: impl ToString) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request",
            message: message.to_string(),
            field: field.map(str::to_owned),
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthorized",
            message: "a valid API key is required: Authorization: Bearer <key>".into(),
            field: None,
        }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, kind: "not_found", message: format!("no such {what}"), field: None }
    }

    /// A route that exists, asked with a method it does not answer.
    pub fn method_not_allowed() -> ApiError {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            kind: "invalid_request",
            message: "this route does not answer that method".into(),
            field: None,
        }
    }

    pub fn unprocessable(field: Option<&str>, message: impl ToString) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "unprocessable",
            message: message.to_string(),
            field: field.map(str::to_owned),
        }
    }

    pub fn idempotency_mismatch() -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "idempotency_mismatch",
            message: "this Idempotency-Key was used with a different request body".into(),
            field: Some("Idempotency-Key".into()),
        }
    }

    pub fn with_field(mut self, field: &str) -> ApiError {
        self.field = Some(field.to_owned());
        self
    }

    pub fn conflict(message: impl ToString) -> ApiError {
        ApiError { status: StatusCode::CONFLICT, kind: "conflict", message: message.to_string(), field: None }
    }

    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error answering a request");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal",
            message: "something went wrong on our side; it has been logged".into(),
            field: None,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<InvalidField> for ApiError {
    fn from(e: InvalidField) -> Self {
        ApiError::invalid(Some(&e.field), e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = ErrorDetail { kind: self.kind.to_owned(), message: self.message, field: self.field };
        (self.status, Json(ErrorBody { error })).into_response()
    }
}
