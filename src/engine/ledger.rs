//! Opens effects-ledger rows in batches. A step's `begin` must be committed
//! before its external call, so it cannot wait for the step's completion;
//! but the begins of many concurrent steps can share one statement and one
//! commit, as their completions do (see completer.rs).

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::db;
use crate::db::effects::{Begin, Entry};

struct Request {
    begin: Begin,
    reply: oneshot::Sender<Result<Entry, String>>,
}

#[derive(Clone)]
pub(crate) struct Ledger {
    sender: mpsc::Sender<Request>,
}

impl Ledger {
    /// Starts `lanes` writers sharing one queue (see src/lanes.rs).
    pub fn spawn(pool: sqlx::PgPool, max_batch: usize, lanes: usize) -> (Ledger, Vec<JoinHandle<()>>) {
        let (sender, handles) = crate::lanes::spawn(max_batch, lanes, move |requests: Vec<Request>| {
            let pool = pool.clone();
            async move { write(&pool, requests).await }
        });
        (Ledger { sender }, handles)
    }

    /// Opens the ledger row of one call (`db::effects::begin_many`), committed
    /// in a batch with other steps' begins, before the call is made.
    pub async fn begin(&self, key: &str, run_id: Uuid, step: &str, name: &str) -> Result<Entry, String> {
        let begin = Begin { key: key.to_owned(), run_id, step: step.to_owned(), name: name.to_owned() };
        let (reply, answer) = oneshot::channel();
        self.sender.send(Request { begin, reply }).await.map_err(|_| "the ledger writer has stopped".to_owned())?;
        answer.await.map_err(|_| "the ledger writer stopped before answering".to_owned())?
    }
}

async fn write(pool: &sqlx::PgPool, requests: Vec<Request>) {
    for round in crate::lanes::rounds(requests, |r| &r.begin.key) {
        let begins: Vec<&Begin> = round.iter().map(|r| &r.begin).collect();
        match db::effects::begin_many(pool, &begins).await {
            Ok(mut entries) => {
                for r in round {
                    let entry =
                        entries.remove(&r.begin.key).ok_or_else(|| format!("no ledger row for {}", r.begin.key));
                    let _ = r.reply.send(entry);
                }
            }
            Err(e) => {
                for r in round {
                    let _ = r.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
