//! Webhooks to the platform: the event as JSON, signed with `Bursar-Signature`
//! and the tenant's notification secret; the event id is stable across retries.

use super::DeliveryError;
use crate::db::outbox::Message;

pub(super) async fn send(http: &reqwest::Client, url: &str, secret: &str, m: &Message) -> Result<(), DeliveryError> {
    let mut event = m.payload.clone();
    event["id"] = serde_json::Value::String(m.dedup_key.clone());
    let body = event.to_string();
    let signature = crate::signature::sign(secret, chrono::Utc::now().timestamp(), body.as_bytes());
    let res = http
        .post(url)
        .header("content-type", "application/json")
        .header("Bursar-Signature", signature)
        .header("Idempotency-Key", &m.dedup_key)
        .body(body)
        .send()
        .await
        .map_err(|e| DeliveryError::Transient(e.to_string()))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Transient(format!("the platform answered {}", res.status())))
    }
}
