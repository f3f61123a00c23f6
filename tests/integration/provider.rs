//! A stateful fake payment provider on loopback (wiremock), and the step
//! handler that charges it through the effects ledger. The worker process of
//! the crash test compiles this file too, so both sides speak the same wire.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bursar::engine::{CallError, Lookup, Outcome, StepCtx, StepHandler};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Charges by idempotency key, as a real provider does: the same key twice is
/// one charge. `lose_first_answer` applies the first charge but never answers
/// it in time, as a provider behind a dropped connection would.
#[derive(Clone, Default)]
pub struct FakeProvider {
    /// POST /charges requests received, per key.
    pub posts: Arc<Mutex<HashMap<String, u32>>>,
    pub lookups: Arc<Mutex<u32>>,
    pub lose_first_answer: Arc<AtomicBool>,
}

impl FakeProvider {
    pub async fn start(&self) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/charges")).respond_with(self.clone()).mount(&server).await;
        Mock::given(method("GET"))
            .and(path_regex("^/charges/.+$"))
            .respond_with(Lookups(self.clone()))
            .mount(&server)
            .await;
        server
    }

    pub fn posts_total(&self) -> u32 {
        self.posts.lock().unwrap().values().sum()
    }
}

fn charge(key: &str) -> Value {
    json!({"id": format!("ch_{}", key.len()), "idempotency_key": key, "status": "succeeded"})
}

impl Respond for FakeProvider {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let Some(key) = req.headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
            return ResponseTemplate::new(400).set_body_json(json!({"error": "Idempotency-Key required"}));
        };
        *self.posts.lock().unwrap().entry(key.to_owned()).or_default() += 1;
        let response = ResponseTemplate::new(200).set_body_json(charge(key));
        if self.lose_first_answer.swap(false, Ordering::SeqCst) {
            return response.set_delay(Duration::from_secs(120));
        }
        response
    }
}

struct Lookups(FakeProvider);

impl Respond for Lookups {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        *self.0.lookups.lock().unwrap() += 1;
        let key = req.url.path().trim_start_matches("/charges/");
        let key = urlencoding_decode(key);
        if self.0.posts.lock().unwrap().contains_key(&key) {
            ResponseTemplate::new(200).set_body_json(charge(&key))
        } else {
            ResponseTemplate::new(404).set_body_json(json!({"error": "no such charge"}))
        }
    }
}

fn urlencoding_decode(s: &str) -> String {
    s.replace("%3A", ":").replace("%3a", ":")
}

/// Charges the fake provider once per run, whatever crashes in between.
pub struct ChargeHandler {
    pub base_url: String,
    pub client: reqwest::Client,
}

impl ChargeHandler {
    pub fn new(base_url: String, timeout: Duration) -> Self {
        ChargeHandler { base_url, client: reqwest::Client::builder().timeout(timeout).build().unwrap() }
    }
}

#[async_trait]
impl StepHandler for ChargeHandler {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }

    async fn run(&self, ctx: &mut StepCtx) -> Outcome {
        let call = |key: String| async move {
            let sent =
                self.client.post(format!("{}/charges", self.base_url)).header("Idempotency-Key", &key).send().await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    r.json::<Value>().await.map_err(|e| CallError::Unknown(e.to_string()))
                }
                Ok(r) if r.status().is_client_error() => Err(CallError::Definitive(r.status().to_string())),
                Ok(r) => Err(CallError::Unknown(r.status().to_string())),
                Err(e) => Err(CallError::Unknown(e.to_string())),
            }
        };
        let lookup = |key: String| async move {
            let url = format!("{}/charges/{}", self.base_url, key.replace(':', "%3A"));
            match self.client.get(url).send().await {
                Ok(r) if r.status().is_success() => {
                    r.json::<Value>().await.map(Lookup::Succeeded).map_err(|e| CallError::Unknown(e.to_string()))
                }
                Ok(r) if r.status() == 404 => Ok(Lookup::NotApplied),
                Ok(r) => Err(CallError::Unknown(r.status().to_string())),
                Err(e) => Err(CallError::Unknown(e.to_string())),
            }
        };
        match ctx.effect("charge", call, lookup).await {
            Ok(charge) => {
                ctx.context["charge"] = charge;
                Outcome::next("ok")
            }
            Err(e) => e.into_retry(),
        }
    }
}

pub const CHARGE_WORKFLOW: &str = r#"
name = "charge"
version = 1
start = "charge"
[steps.charge]
handler = "charge"
timeout = "60s"
retry = { max_attempts = 5, initial = "50ms", max = "1s" }
on = { ok = "succeeded" }
"#;
