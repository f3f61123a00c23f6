//! `bursar bench floor`: the least work PostgreSQL can do for a purchase
//! with Bursar's schema and guarantees, run by pgbench with no Bursar, no
//! HTTP and no reads. It answers "how fast could this machine go at best?",
//! so the purchases figure can be judged against the server rather than
//! against a number.
//!
//! The purchase is split as Bursar splits it. The create is one statement
//! per purchase (the idempotency key with its answer, customer, run,
//! purchase, seat, webhook), as an API request has to be. The workflow runs
//! in batches, every statement covering a whole batch, with each external
//! call's effect recorded before the call and its result after, a history
//! row per step, the sandbox's books, the notify step's three messages and
//! all four recorded as delivered (the scripts say what is left out). Both parts run alone with the whole machine, with enough clients to
//! keep it busy (about 90% and 98% on two cores); `purchases_per_sec` is what
//! the two together would allow, 1 / (1/create + 1/workflow).

use clap::Args;
use serde_json::json;

use super::{pgbench, pgbench_tps};
use sqlx::PgPool;

use crate::config::DbSettings;
use crate::db;

const SETUP: &str = include_str!("floor/setup.sql");
const CREATE: &str = include_str!("floor/create.sql");
const WORKER: &str = include_str!("floor/worker.sql");

/// pgbench's connections for the creates: one per request in flight. Each
/// waits for its own commit, so it takes this many to keep two cores busy.
const CREATE_CLIENTS: usize = 16;

#[derive(Args)]
pub struct FloorBench {
    #[command(flatten)]
    db: DbSettings,
    /// Purchases to create and then carry out (rounded to whole batches).
    #[arg(long, default_value_t = 20_480)]
    purchases: usize,
    /// Purchases per workflow statement.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// pgbench connections running the workflow (4 keep two cores busy).
    #[arg(long, default_value_t = 4)]
    workflow_clients: usize,
    /// Seconds of pgbench -N (0 skips it).
    #[arg(long, default_value_t = 15)]
    pgbench_seconds: u32,
}

pub async fn run(b: FloorBench) -> anyhow::Result<()> {
    let url = crate::db::audit::recreate_database(&b.db.database_url, "bursar_bench_floor").await?;
    let pool = db::connect(&url, 2).await?;
    db::migrate(&pool).await?;
    let figures = measure(&pool, &url, b.purchases, b.batch, b.workflow_clients).await?;
    pool.close().await;
    let pgbench_n_tps =
        if b.pgbench_seconds > 0 { pgbench_tps(&b.db.database_url, b.pgbench_seconds).await? } else { None };
    println!(
        "{}",
        json!({
            "bench": "floor",
            "purchases_per_sec": figures.purchases_per_sec().round(),
            "creates_per_sec": figures.creates_per_sec.round(),
            "workflow_per_sec": figures.workflow_per_sec.round(),
            "purchases": figures.purchases,
            "batch": b.batch,
            "workflow_clients": b.workflow_clients,
            "create_clients": CREATE_CLIENTS,
            "pgbench_n_tps": pgbench_n_tps,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        })
    );
    Ok(())
}

#[derive(Debug)]
pub struct Figures {
    /// What was run: the request rounded to whole batches per client.
    pub purchases: usize,
    pub creates_per_sec: f64,
    pub workflow_per_sec: f64,
}

impl Figures {
    /// Both parts sharing the machine: 1 / (1/create + 1/workflow).
    pub fn purchases_per_sec(&self) -> f64 {
        1.0 / (1.0 / self.creates_per_sec + 1.0 / self.workflow_per_sec)
    }
}

/// Runs the floor's purchases in the migrated, otherwise empty database at
/// `url` (`pool` is connected to it) and checks that every one of them
/// succeeded with its charge captured once.
pub async fn measure(
    pool: &PgPool,
    url: &str,
    purchases: usize,
    batch: usize,
    workflow_clients: usize,
) -> anyhow::Result<Figures> {
    anyhow::ensure!(batch > 0 && workflow_clients > 0, "the batch and the workflow's clients must be positive");
    sqlx::raw_sql(SETUP).execute(pool).await?;
    // Every pgbench client gets whole batches, and every batch was created.
    let per_round = batch * workflow_clients * CREATE_CLIENTS;
    let purchases = purchases.div_ceil(per_round).max(1) * per_round;
    let create = script("create", CREATE)?;
    let worker = script("worker", WORKER)?;

    let creates_per_client = (purchases / CREATE_CLIENTS).to_string();
    let clients = CREATE_CLIENTS.to_string();
    let creates =
        pgbench(&["-n", "-M", "prepared", "-c", &clients, "-j", "2", "-t", &creates_per_client, "-f", &create, url]);
    let batches_per_client = (purchases / batch / workflow_clients).to_string();
    let define = format!("batch={batch}");
    let clients = workflow_clients.to_string();
    let batches = pgbench(&[
        "-n",
        "-M",
        "prepared",
        "-c",
        &clients,
        "-j",
        "2",
        "-t",
        &batches_per_client,
        "-D",
        &define,
        "-f",
        &worker,
        url,
    ]);
    let _ = (std::fs::remove_file(&create), std::fs::remove_file(&worker));
    let (creates_per_sec, batches_per_sec) = (creates?, batches?);

    // The figures count only if every purchase got all the way, paid once.
    let totals = crate::db::audit::purchase_totals(pool).await?;
    let (succeeded, captured, sent) = (totals.runs_succeeded, totals.captured_in_full, totals.messages_sent);
    anyhow::ensure!(
        succeeded == purchases as i64 && captured == purchases as i64 && sent == 4 * purchases as i64,
        "{purchases} purchases, but {succeeded} runs succeeded, {captured} charges were captured and {sent} of their \
         messages sent"
    );
    Ok(Figures { purchases, creates_per_sec, workflow_per_sec: batches_per_sec * batch as f64 })
}

/// pgbench reads scripts from files only.
fn script(name: &str, sql: &str) -> anyhow::Result<String> {
    let unique = uuid::Uuid::now_v7().simple();
    let path = std::env::temp_dir().join(format!("bursar-floor-{unique}-{name}.sql"));
    std::fs::write(&path, sql)?;
    Ok(path.to_string_lossy().into_owned())
}
