use std::future::Future;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use bursar::config::{self, DbSettings, ServeSettings, WorkerSettings};
use bursar::engine::{Engine, Maintenance};
use bursar::{api, bench, db, steps, tenants, workflows};

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
    /// Measure throughput and latency (prints one JSON line).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
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
    /// Resume a parked or failed run at its step.
    Replay {
        run_id: String,
        #[arg(long)]
        reason: String,
        /// List which effects would run again and which are skipped; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run (down its workflow's cancel path).
    Cancel {
        run_id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
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

    let maintenance = Maintenance::new(pool.clone(), worker.maintenance_config())?;
    let maintenance = tokio::spawn(maintenance.run(stopped(stop.clone())));
    let workers = tokio::spawn(engine.clone().worker(worker_config).run(stopped(stop.clone())));
    let deliverer = bursar::notify::Deliverer::new(pool.clone(), bursar::notify::DelivererConfig::default());
    let deliverer = tokio::spawn(deliverer.run(stopped(stop.clone())));

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
    }
    workers.await??;
    maintenance.await?;
    deliverer.await?;
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

fn stopped(mut rx: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
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
            let filter = db::runs::RunFilter { status, workflow, tenant_id: None, before: None, limit };
            let runs: Vec<_> = db::runs::list(&pool, &filter).await?.iter().map(ops::summary).collect();
            print(json, &serde_json::json!(runs), ops::list_text(&runs));
        }
        RunsCommand::Show { run_id, json } => {
            let report = ops::report(&pool, &find(&run_id).await?).await?;
            print(json, &report, ops::report_text(&report));
        }
        RunsCommand::Replay { run_id, reason, dry_run, json } => {
            let run = find(&run_id).await?;
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
        RunsCommand::Cancel { run_id, reason, json } => {
            let run = find(&run_id).await?;
            let done = engine()?.cancel(run.id, &reason, &actor).await?;
            let what = format!("{done:?}").to_lowercase();
            print(json, &serde_json::json!({"cancellation": what}), format!("cancel {what}\n"));
        }
    }
    Ok(())
}
