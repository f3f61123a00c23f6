//! What a step handler sees and returns. A handler loads, calls and decides;
//! it never writes the run's state itself: it returns a typed `Outcome` and the
//! engine commits the result, the next state, the history row and any outbox
//! messages in one transaction.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db;

/// What a step decided. The engine, not the handler, turns it into the run's
/// next state according to the workflow definition and the step's retry policy.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Go where the definition routes this label.
    Next(String),
    /// Try this step again after the policy's backoff (or `after`), parking the
    /// run when the attempts are used up.
    Retry { error: String, after: Option<Duration> },
    /// Sleep until one of `signals` arrives; at `deadline` the step's
    /// `deadline` route fires instead.
    Wait { signals: Vec<String>, deadline: Option<DateTime<Utc>> },
    /// End the run as failed with this code (a business outcome, not a bug).
    Fail { code: String, message: Option<String> },
    /// Stop and wait for a person; replay resumes this step.
    Park(String),
}

impl Outcome {
    pub fn next(label: impl Into<String>) -> Self {
        Outcome::Next(label.into())
    }
    pub fn retry(error: impl std::fmt::Display) -> Self {
        Outcome::Retry { error: error.to_string(), after: None }
    }
    pub fn wait(signals: &[&str], deadline: Option<DateTime<Utc>>) -> Self {
        Outcome::Wait { signals: signals.iter().map(|s| s.to_string()).collect(), deadline }
    }
    pub fn fail(code: impl Into<String>) -> Self {
        Outcome::Fail { code: code.into(), message: None }
    }
    pub fn park(reason: impl Into<String>) -> Self {
        Outcome::Park(reason.into())
    }
}

/// A step of some workflow. `outcomes` lists every label `run` may return in
/// `Outcome::Next`, so a definition that forgets to route one is refused at start.
#[async_trait]
pub trait StepHandler: Send + Sync + 'static {
    fn outcomes(&self) -> &[&'static str];
    async fn run(&self, ctx: &mut StepCtx) -> Outcome;
}

#[derive(Default, Clone)]
pub struct HandlerRegistry {
    handlers: HashMap<String, Arc<dyn StepHandler>>,
}

impl HandlerRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, name: &str, handler: impl StepHandler) -> &mut Self {
        self.handlers.insert(name.to_owned(), Arc::new(handler));
        self
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn StepHandler>> {
        self.handlers.get(name).cloned()
    }

    pub fn outcomes(&self, name: &str) -> Option<&[&'static str]> {
        self.handlers.get(name).map(|h| h.outcomes())
    }
}

/// A signal delivered to a waiting step.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub id: i64,
    pub name: String,
    pub payload: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub dedup_key: String,
    pub channel: String,
    pub payload: Value,
}

/// A write that commits in the step's completion transaction, with its
/// result, its next state and its history row, or not at all (if the lease
/// was lost). `sql` takes one parameter, `$1`: a JSON array of rows. The
/// writes of one statement staged by the steps of one completion batch run as
/// one execution of it, so the statement must apply each row on its own, and
/// no two rows of a batch may target the same row (each run's step writes its
/// own purchase, seats and effects; a statement that aggregates, such as a
/// seat counter, sums over the rows). To refuse a row, and with it the
/// step's result, it calls `bursar_refuse(message)`.
#[derive(Debug, Clone)]
pub struct Staged {
    pub sql: &'static str,
    pub row: Value,
}

/// The state one attempt of one step works with.
pub struct StepCtx {
    pub run_id: Uuid,
    pub tenant_id: Uuid,
    pub workflow: String,
    pub step: String,
    /// 1 for the first attempt of this step.
    pub attempt: u32,
    /// The run's context; whatever the handler leaves here is saved with its outcome.
    pub context: Value,
    /// The signal that resumed this step after a wait, if any.
    pub signal: Option<Signal>,
    pub(crate) outbox: Vec<OutboxMessage>,
    pub(crate) staged: Mutex<Vec<Staged>>,
    pub(crate) pool: PgPool,
    pub(crate) ledger: super::ledger::Ledger,
}

/// How an external call ended, as the caller of `StepCtx::effect` reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The other side answered no, for good (a decline, a 4xx): recorded, not retried.
    Definitive(String),
    /// Nobody knows whether it happened (timeout, 5xx, connection lost): the
    /// next attempt asks the other side before calling again.
    Unknown(String),
}

/// What the other side says about an earlier call made with a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    Succeeded(T),
    Failed(String),
    NotApplied,
}

#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    #[error("{0}")]
    Failed(String),
    #[error("outcome unknown: {0}")]
    Unknown(String),
    #[error("effects ledger: {0}")]
    Ledger(String),
    #[error("effects ledger holds a response that does not decode: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl EffectError {
    /// The usual way a handler treats an effect error: definitive failures are
    /// the caller's to route, everything else is retried.
    pub fn into_retry(self) -> Outcome {
        Outcome::retry(self)
    }
}

impl StepCtx {
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The idempotency key of effect `name` of this step: the same on every
    /// attempt and after any crash, so the other side sees one request.
    pub fn effect_key(&self, name: &str) -> String {
        format!("{}:{}:{}", self.run_id, self.step, name)
    }

    pub fn context_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.context)
    }

    pub fn set_context<T: Serialize>(&mut self, value: &T) -> Result<(), serde_json::Error> {
        self.context = serde_json::to_value(value)?;
        Ok(())
    }

    /// Have `write` commit together with this step's result (see `Staged`).
    /// A domain write staged here needs no guard against running twice: it
    /// lands exactly when the step's outcome does.
    pub fn stage(&self, sql: &'static str, row: Value) {
        self.staged.lock().expect("not poisoned").push(Staged { sql, row });
    }

    /// Queue a message (mail, webhook) that exists if and only if this step's
    /// result commits. `key` tells it apart from the step's other messages and
    /// keeps a retried step from sending it twice.
    pub fn emit(&mut self, channel: &str, key: &str, payload: Value) {
        self.outbox.push(OutboxMessage { dedup_key: self.effect_key(key), channel: channel.to_owned(), payload });
    }

    /// Perform an external call at most once in effect. The ledger row and its
    /// key are committed before `call` runs; `call` gets the key to pass on as
    /// the other side's idempotency key. If an earlier attempt's call ended
    /// unknown (a crash, a timeout), `lookup` asks the other side what became of
    /// it before anything is called again. A recorded result is returned as is.
    pub async fn effect<T, C, CF, L, LF>(&self, name: &str, call: C, lookup: L) -> Result<T, EffectError>
    where
        T: Serialize + DeserializeOwned,
        C: FnOnce(String) -> CF,
        CF: Future<Output = Result<T, CallError>>,
        L: FnOnce(String) -> LF,
        LF: Future<Output = Result<Lookup<T>, CallError>>,
    {
        let key = self.effect_key(name);
        let entry = self.ledger.begin(&key, self.run_id, &self.step, name).await.map_err(EffectError::Ledger)?;
        match entry.status.as_str() {
            "succeeded" => {
                return Ok(serde_json::from_value(entry.response.unwrap_or(Value::Null))?);
            }
            "failed" => return Err(EffectError::Failed(entry.error.unwrap_or_default())),
            _ => {}
        }
        if entry.attempts > 1 {
            // An earlier attempt may have reached the other side: ask before acting.
            match lookup(key.clone()).await {
                Ok(Lookup::Succeeded(v)) => return self.record_success(&key, v).await,
                Ok(Lookup::Failed(e)) => return self.record_failure(&key, e).await,
                Ok(Lookup::NotApplied) => {}
                Err(CallError::Definitive(e) | CallError::Unknown(e)) => {
                    return Err(EffectError::Unknown(format!("could not resolve {key}: {e}")));
                }
            }
        }
        match call(key.clone()).await {
            Ok(v) => self.record_success(&key, v).await,
            Err(CallError::Definitive(e)) => self.record_failure(&key, e).await,
            Err(CallError::Unknown(e)) => {
                db::effects::note_error(&self.pool, &key, &e).await.map_err(|e| EffectError::Ledger(e.to_string()))?;
                Err(EffectError::Unknown(e))
            }
        }
    }

    // The outcome of a call is recorded with the step's result: if that is
    // lost, the ledger row stays pending and the next attempt asks the other
    // side, which is what `lookup` is for.
    async fn record_success<T: Serialize>(&self, key: &str, v: T) -> Result<T, EffectError> {
        let response = serde_json::to_value(&v)?;
        self.stage(db::effects::SUCCEED, serde_json::json!({"key": key, "response": response}));
        Ok(v)
    }

    async fn record_failure<T>(&self, key: &str, e: String) -> Result<T, EffectError> {
        self.stage(db::effects::FAIL, serde_json::json!({"key": key, "error": e}));
        Err(EffectError::Failed(e))
    }
}
