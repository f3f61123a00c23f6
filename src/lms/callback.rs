//! The `callback` LMS: `POST url` with the seat change as JSON, signed with
//! `Bursar-Signature` and carrying an `Idempotency-Key`. Any 2xx is done.

use async_trait::async_trait;

use super::{Lms, LmsError, SeatChange};

pub struct Callback {
    pub url: String,
    pub secret: String,
    pub http: reqwest::Client,
}

#[async_trait]
impl Lms for Callback {
    async fn apply(&self, change: &SeatChange, idempotency_key: &str) -> Result<(), LmsError> {
        let body = serde_json::to_vec(change).map_err(|e| LmsError::Refused(e.to_string()))?;
        let signature = crate::signature::sign(&self.secret, chrono::Utc::now().timestamp(), &body);
        let sent = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("Bursar-Signature", signature)
            .header("Idempotency-Key", idempotency_key)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            // 408 and 429 say "later", not "no".
            Ok(r) if r.status().is_client_error() && r.status() != 408 && r.status() != 429 => {
                Err(LmsError::Refused(format!("the platform answered {}", r.status())))
            }
            Ok(r) => Err(LmsError::Unavailable(format!("the platform answered {}", r.status()))),
            Err(e) => Err(LmsError::Unavailable(e.to_string())),
        }
    }
}
