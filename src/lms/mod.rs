//! Enrollment adapters behind one trait: a signed HTTP callback to the
//! platform, and Moodle web services. Every call carries the effects
//! ledger's key, and "already enrolled" counts as done, so repeating one is
//! harmless.

pub mod callback;
pub mod moodle;

use async_trait::async_trait;
use serde::Serialize;

use crate::domain::settings::LmsTarget;

#[derive(Debug, Clone, Serialize)]
pub struct Learner {
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lms_user_id: Option<String>,
}

/// One seat's enrollment, as the LMS is told of it.
#[derive(Debug, Clone, Serialize)]
pub struct SeatChange {
    pub seat_id: String,
    pub purchase_id: String,
    pub offering_id: String,
    pub lms_course_id: Option<String>,
    pub learner: Learner,
    /// enroll | suspend | reactivate
    pub action: &'static str,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LmsError {
    /// The LMS refused, for good (no such course, a 4xx).
    #[error("refused: {0}")]
    Refused(String),
    /// Down, slow or unreachable: try again.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Lms: Send + Sync {
    async fn apply(&self, change: &SeatChange, idempotency_key: &str) -> Result<(), LmsError>;
}

/// The adapter for a tenant's LMS target; None when Bursar records enrollments itself.
pub fn adapter(target: &LmsTarget, http: &reqwest::Client) -> Option<Box<dyn Lms>> {
    match target {
        LmsTarget::None => None,
        LmsTarget::Callback { url, secret } => {
            Some(Box::new(callback::Callback { url: url.clone(), secret: secret.clone(), http: http.clone() }))
        }
        LmsTarget::Moodle { base_url, token } => {
            Some(Box::new(moodle::Moodle { base_url: base_url.clone(), token: token.clone(), http: http.clone() }))
        }
    }
}
