use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use bursar::config::{self, DbSettings, ServeSettings, WorkerSettings};
use bursar::engine::{Engine, Maintenance};
use bursar::{api, bench, db, steps, tenants, workflows};

/// A request's life allocates and frees many short-lived buffers on several
/// threads at once (JSON, SQL arguments, HTTP); glibc's allocator took about a
/// third of Bursar's CPU doing so (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Durable payment-and-enrollment workflows for learning platforms.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations.
    Migrate {
        #[command(flatten)]
        db: DbSettings,
    },
    /// Run the HTTP API and the workers in one process.
    Serve {
        #[command(flatten)]
        db: DbSettings,
        #[command(flatten)]
        worker: WorkerSettings,
        #[command(flatten)]
        serve: ServeSettings,
    },
    /// Run workers only (scale out on more machines against the same database).
    Worker {
        #[command(flatten)]
        db: DbSettings,
        #[command(flatten)]
        worker: WorkerSettings,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Print the HTTP API's OpenAPI document (also served at /openapi.json).
    Openapi,
    /// Inspect the workflow definitions this binary carries.
    Workflows {
        #[command(subcommand)]
        command: WorkflowsCommand,
    },
    /// Inspect and act on runs (talks to the database directly).
    Ops {
        #[command(subcommand)]
        command: OpsCommand,
        #[command(flatten)]
        db: DbSettings,
    },
    /// Crash the workers and the database while purchases run, then check nothing was lost or charged twice.
    Chaos(bursar::chaos::Chaos),
    /// Measure throughput and latency (prints one JSON line).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Replace a tenant's webhook secret (sandbox, voucher); prints the new one, once.
    RotateWebhookSecret {
        #[arg(long)]
        tenant: uuid::Uuid,
        #[arg(long)]
        provider: String,
        /// How long the previous secret stays valid.
        #[arg(long, default_value = "24h", value_parser = |s: &str| humantime::parse_duration(s))]
        grace: std::time::Duration,
        #[command(flatten)]
        db: DbSettings,
    },
    /// Create a tenant; prints its id, API key and webhook secrets (shown once).
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        db: DbSettings,
    },
}

#[derive(Subcommand)]
enum OpsCommand {
    /// Runs: list, show, replay, cancel.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// List runs, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// A run's whole timeline: attempts, effects, signals, operator actions.
    Show {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Resume parked or failed runs at their step: one by id, or many by filter.
    Replay {
        #[command(flatten)]
        select: Selection,
        #[arg(long)]
        reason: String,
        /// List what would happen (for one run: which effects run again); change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Cancel runs (down their workflow's cancel path): one by id, or many by filter.
    Cancel {
        #[command(flatten)]
        select: Selection,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

/// One run by id, or many by filter (then --status is required, and a
/// confirmation unless --yes).
#[derive(clap::Args)]
struct Selection {
    run_id: Option<String>,
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    workflow: Option<String>,
    #[arg(long)]
    step: Option<String>,
    /// Runs whose last error contains this text.
    #[arg(long)]
    error_contains: Option<String>,
    /// Created at or after (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Created before (RFC 3339).
    #[arg(long)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many runs.
    #[arg(long, default_value_t = 10_000)]
    max: i64,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

#[derive(Subcommand)]
enum WorkflowsCommand {
    /// Print a definition as a Mermaid state diagram.
    Show {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Validate every definition against the registered handlers.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    config::init_logging();
    match Cli::parse().command {
        Command::Migrate { db } => {
            let pool = db::connect(&db.database_url, 2).await.context("connecting to the database")?;
            db::migrate(&pool).await.context("migrating")?;
            tracing::info!("migrations applied");
        }
        Command::Serve { db, worker, serve } => run(db, worker, Some(serve)).await?,
        Command::Worker { db, worker } => run(db, worker, None).await?,
        Command::Tenant { command: TenantCommand::Create { name, db } } => {
            let pool = db::connect(&db.database_url, 2).await.context("connecting to the database")?;
            db::migrate(&pool).await?;
            let tenant = tenants::create(&pool, &name).await?;
            println!("{}", serde_json::to_string(&tenant)?);
        }
        Command::Tenant { command: TenantCommand::RotateWebhookSecret { tenant, provider, grace, db } } => {
            let pool = db::connect(&db.database_url, 2).await.context("connecting to the database")?;
            println!("{}", tenants::rotate_webhook_secret(&pool, tenant, &provider, grace).await?);
        }
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(bursar::api::openapi::document())?);
        }
        Command::Workflows { command } => {
            let defs = workflows::builtin()?;
            let pool = sqlx::PgPool::connect_lazy(bursar::config::DEFAULT_DATABASE_URL)?; // never used: no query runs
            let handlers = steps::registry(&steps::providers(&pool));
            match command {
                WorkflowsCommand::Show { name, version } => {
                    let def = defs
                        .iter()
                        .filter(|d| d.name == name && version.is_none_or(|v| v == d.version))
                        .max_by_key(|d| d.version)
                        .with_context(|| format!("no workflow named `{name}`"))?;
                    print!("{}", def.to_mermaid());
                }
                WorkflowsCommand::Check => {
                    let errors: Vec<_> = defs.iter().flat_map(|d| d.validate(&handlers)).collect();
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    anyhow::ensure!(errors.is_empty(), "{} problem(s) in the workflow definitions", errors.len());
                    println!("{} workflow definition(s) are valid", defs.len());
                }
            }
        }
        Command::Bench { command } => bench::run(command).await?,
        Command::Chaos(c) => bursar::chaos::run(c).await?,
        Command::Ops { command: OpsCommand::Runs { command }, db } => ops_runs(command, db).await?,
    }
    Ok(())
}

/// The API (with `serve`), the workers and the maintenance leader election,
/// until SIGTERM or SIGINT.
async fn run(db: DbSettings, worker: WorkerSettings, serve: Option<ServeSettings>) -> anyhow::Result<()> {
    let worker_config = worker.worker_config()?;
    let pool = db::connect(&db.database_url, db.db_pool).await.context("connecting to the database")?;
    db::migrate(&pool).await.context("migrating")?;
    let providers = steps::providers(&pool);
    let engine = Engine::new(pool.clone(), workflows::builtin()?, steps::registry(&providers))?;
    let stop = shutdown_on_signal();

    let mut background = Vec::new();
    if serve.as_ref().is_none_or(|s| !s.no_workers) {
        let maintenance = Maintenance::new(pool.clone(), worker.maintenance_config())?;
        let stop_maintenance = stop.clone();
        background.push(tokio::spawn(async move {
            maintenance.run(stopped(stop_maintenance)).await;
            Ok(())
        }));
        let worker = engine.clone().worker(worker_config);
        background.push(tokio::spawn(worker.run(stopped(stop.clone()))));
        let deliverer = bursar::notify::Deliverer::new(pool.clone(), bursar::notify::DelivererConfig::default());
        let stop_deliverer = stop.clone();
        background.push(tokio::spawn(async move {
            deliverer.run(stopped(stop_deliverer)).await;
            Ok(())
        }));
    }

    if let Some(serve) = serve {
        if serve.demo_tenant {
            print_demo_tenant(&pool).await?;
        }
        let listener =
            tokio::net::TcpListener::bind(serve.listen).await.with_context(|| format!("binding {}", serve.listen))?;
        tracing::info!(address = %serve.listen, "API listening");
        axum::serve(listener, api::router(api::AppState::new(engine.clone(), providers.clone(), serve.public_url())))
            .with_graceful_shutdown(stopped(stop.clone()))
            .await?;
    } else {
        stopped(stop.clone()).await;
    }
    for task in background {
        task.await??;
    }
    Ok(())
}

async fn print_demo_tenant(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let json = match db::tenants::find_by_name(pool, "demo").await? {
        Some(tenant_id) => {
            let api_key = tenants::issue_key(pool, tenant_id, "demo").await?;
            serde_json::json!({"tenant_id": tenant_id, "api_key": api_key})
        }
        None => serde_json::to_value(tenants::create(pool, "demo").await?)?,
    };
    println!("demo tenant: {json}");
    Ok(())
}

fn shutdown_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

/// A run as the command line prints it: `ops::summary`, as JSON for `--json`
/// and for the text table alike.
fn as_json(run: &db::runs::Run) -> serde_json::Value {
    serde_json::to_value(bursar::ops::summary(run)).expect("a summary serializes")
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// `bursar ops runs ...`: the operator's actions are recorded as the CLI's user.
async fn ops_runs(command: RunsCommand, db: DbSettings) -> anyhow::Result<()> {
    use bursar::ops;
    let pool = db::connect(&db.database_url, 2).await.context("connecting to the database")?;
    let print = |json: bool, value: &serde_json::Value, text: String| {
        if json {
            println!("{value}");
        } else {
            print!("{text}");
        }
    };
    let find = |id: &str| {
        let pool = pool.clone();
        let id = ops::parse_run_id(id);
        async move {
            let id = id.context("not a run id")?;
            db::runs::get(&pool, id).await?.context("no such run")
        }
    };
    let actor = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
    let engine = || -> anyhow::Result<Engine> {
        let providers = steps::providers(&pool);
        Ok(Engine::new(pool.clone(), workflows::builtin()?, steps::registry(&providers))?)
    };
    match command {
        RunsCommand::List { status, workflow, limit, json } => {
            let filter = db::runs::RunFilter { status, workflow, limit, ..Default::default() };
            let runs: Vec<_> = db::runs::list(&pool, &filter).await?.iter().map(as_json).collect();
            print(json, &serde_json::json!(runs), ops::list_text(&runs));
        }
        RunsCommand::Show { run_id, json } => {
            let report = serde_json::to_value(ops::report(&pool, &find(&run_id).await?).await?)?;
            print(json, &report, ops::report_text(&report));
        }
        RunsCommand::Replay { select, reason, dry_run, json } if select.run_id.is_some() => {
            let run = find(select.run_id.as_deref().unwrap_or_default()).await?;
            let plan = ops::replay_plan(&pool, &run).await?;
            if !dry_run {
                engine()?.replay(run.id, &reason, &actor).await?;
            }
            let rows: Vec<Vec<String>> =
                plan.iter().map(|p| vec![p.key.clone(), p.status.clone(), p.on_replay.to_owned()]).collect();
            let text = format!(
                "{} {} at step {}\n{}",
                if dry_run { "would resume" } else { "resumed" },
                bursar::api::ids::run(run.id),
                run.step,
                ops::table(&["EFFECT", "RECORDED", "ON REPLAY"], &rows)
            );
            print(json, &serde_json::json!({"dry_run": dry_run, "resumes_at": run.step, "effects": plan}), text);
        }
        RunsCommand::Cancel { select, reason, json } if select.run_id.is_some() => {
            let run = find(select.run_id.as_deref().unwrap_or_default()).await?;
            let done = engine()?.cancel(run.id, &reason, &actor).await?;
            let what = format!("{done:?}").to_lowercase();
            print(json, &serde_json::json!({"cancellation": what}), format!("cancel {what}\n"));
        }
        RunsCommand::Replay { select, reason, dry_run, json } => {
            let engine = engine()?;
            bulk(&pool, &select, "replay", dry_run, json, async |id| {
                engine.replay(id, &reason, &actor).await.map(|_| ())
            })
            .await?;
        }
        RunsCommand::Cancel { select, reason, json } => {
            let engine = engine()?;
            bulk(&pool, &select, "cancel", false, json, async |id| {
                engine.cancel(id, &reason, &actor).await.map(|_| ())
            })
            .await?;
        }
    }
    Ok(())
}

/// Applies `act` to every run the selection matches, with a progress bar,
/// after a confirmation unless --yes. A run that changed meanwhile (replayed,
/// finished) is counted as skipped with its reason; the others go on.
async fn bulk(
    pool: &sqlx::PgPool,
    select: &Selection,
    verb: &str,
    dry_run: bool,
    json: bool,
    act: impl AsyncFn(uuid::Uuid) -> Result<(), bursar::engine::Error>,
) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    anyhow::ensure!(select.status.is_some(), "select runs by id, or by filter with at least --status");
    let filter = db::runs::RunFilter {
        status: select.status.clone(),
        workflow: select.workflow.clone(),
        step: select.step.clone(),
        error_contains: select.error_contains.clone(),
        created_after: select.since,
        created_before: select.until,
        limit: select.max,
        ..Default::default()
    };
    let runs = db::runs::list(pool, &filter).await?;
    let summaries: Vec<_> = runs.iter().map(as_json).collect();
    if dry_run {
        if json {
            println!("{}", serde_json::json!({"dry_run": true, "would": verb, "runs": summaries}));
        } else {
            print!("would {verb} {} run(s)\n{}", runs.len(), bursar::ops::list_text(&summaries));
        }
        return Ok(());
    }
    if !select.yes {
        eprint!("{verb} {} run(s)? [y/N] ", runs.len());
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        anyhow::ensure!(answer.trim().eq_ignore_ascii_case("y"), "not confirmed; nothing changed");
    }
    let bar = indicatif::ProgressBar::new(runs.len() as u64);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut done, mut skipped) = (0, Vec::new());
    for run in &runs {
        match act(run.id).await {
            Ok(()) => done += 1,
            Err(e) => skipped.push(serde_json::json!({"id": bursar::api::ids::run(run.id), "reason": e.to_string()})),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::json!({"done": done, "skipped": skipped}));
    } else {
        println!("{verb}: {done} done, {} skipped", skipped.len());
        for s in &skipped {
            println!(
                "  skipped {}: {}",
                s["id"].as_str().unwrap_or_default(),
                s["reason"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}
