//! The writer of new purchases. Each create is its own commit as far as its
//! request can tell, but requests that arrive together are written together,
//! in one statement and one commit (`db::purchases::create_many`): on two
//! cores a single-row commit costs about ten times its share of a batch's.

use std::collections::HashMap;
use std::sync::OnceLock;

use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::db::purchases::{self, Create};
use crate::lanes;

/// Most creates in one statement; two lanes, so one batch gathers while the
/// other commits.
const MAX_BATCH: usize = 64;
const LANES: usize = 2;

/// What became of a create: the customer's id, `None` when an earlier request
/// had taken its Idempotency-Key, or why it could not be written.
type Answer = Result<Option<Uuid>, String>;

type Call = lanes::Call<Create, Answer>;

#[derive(Clone)]
pub struct Creates {
    pool: PgPool,
    /// Started by the first create (the API's state may be built outside a runtime).
    writer: std::sync::Arc<OnceLock<mpsc::Sender<Call>>>,
}

impl Creates {
    pub fn new(pool: PgPool) -> Creates {
        Creates { pool, writer: Default::default() }
    }

    pub async fn create(&self, create: Create) -> Answer {
        let writer = self.writer.get_or_init(|| {
            let pool = self.pool.clone();
            lanes::spawn(MAX_BATCH, LANES, move |calls: Vec<Call>| {
                let pool = pool.clone();
                async move { write(&pool, calls).await }
            })
            .0
        });
        lanes::ask(writer, create).await.unwrap_or_else(|| Err("the purchase writer has stopped".to_owned()))
    }
}

/// Writes a batch, an Idempotency-Key once per statement (a retry that came
/// with its first request waits a round, then finds the key taken). If the
/// database refuses a statement (a key a concurrent statement took first, a
/// deadlock with another server's batch), its creates are written one by
/// one, so each gets its own answer. Any other error (no connection, a lost
/// answer after which the statement may have committed) goes to every caller:
/// their retries, with the same keys, find out which.
async fn write(pool: &PgPool, calls: Vec<Call>) {
    let by_key = calls.into_iter().map(|c| (format!("{}:{}", c.request.tenant_id, c.request.key), c)).collect();
    for round in lanes::rounds(by_key, |(key, _)| key) {
        let round: Vec<Call> = round.into_iter().map(|(_, c)| c).collect();
        match purchases::create_many(pool, &round.iter().map(|c| &c.request).collect::<Vec<_>>()).await {
            Ok(created) => reply(round, created),
            Err(e @ sqlx::Error::Database(_)) if round.len() > 1 => {
                // A key taken by the other lane is the usual cause, and expected.
                if !purchases::key_taken(&e) {
                    tracing::warn!(error = %e, creates = round.len(), "create batch refused; writing it one by one");
                }
                for call in round {
                    match purchases::create_many(pool, &[&call.request]).await {
                        Ok(created) => reply(vec![call], created),
                        Err(e) if purchases::key_taken(&e) => {
                            let _ = call.reply.send(Ok(None));
                        }
                        Err(e) => {
                            let _ = call.reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
            Err(e) if purchases::key_taken(&e) => reply(round, HashMap::new()),
            Err(e) => {
                for call in round {
                    let _ = call.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

fn reply(calls: Vec<Call>, created: HashMap<Uuid, Uuid>) {
    for call in calls {
        let _ = call.reply.send(Ok(created.get(&call.request.id).copied()));
    }
}
