//! `bursar chaos` (run by `ops/chaos`): the proof that crashes lose nothing
//! and charge nobody twice. It runs the API and several worker processes of
//! this binary against a PostgreSQL it may restart, sends a stream of
//! purchases mixing every sandbox payment method with duplicated and late
//! webhooks, SIGKILLs a random worker every few seconds (restarting it),
//! restarts PostgreSQL once, waits for quiescence, and checks the database,
//! the sandbox's books and what the LMS and the platform received.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::Rng;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::DbSettings;
use crate::{db, tenants};

#[derive(Args)]
pub struct Chaos {
    #[command(flatten)]
    db: DbSettings,
    /// How long purchases are sent and workers killed.
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// The data directory of the PostgreSQL to restart once (ops/chaos passes
    /// its private cluster's); without it PostgreSQL is not restarted.
    #[arg(long)]
    pgdata: Option<String>,
    #[arg(long, default_value_t = 3)]
    workers: usize,
    #[arg(long, default_value_t = 4)]
    kill_every_secs: u64,
    /// Purchases started per second.
    #[arg(long, default_value_t = 15)]
    rate: u32,
}

const METHODS: [(&str, u32); 5] = [
    ("pm_sandbox_ok", 45),
    ("pm_sandbox_declined", 10),
    ("pm_sandbox_requires_action", 15),
    ("pm_sandbox_flaky", 15),
    ("pm_sandbox_unknown", 15),
];
const SECRET: &str = "chaos-signing-secret-0123456789";

/// What the platform received: LMS calls per seat, webhook events per id.
#[derive(Default)]
struct Received {
    enrollments: HashMap<String, u32>,
    /// Deliveries per event id.
    events: HashMap<String, u32>,
    /// Event ids per (purchase, event type): more than one is a double send.
    per_purchase_event: HashMap<(String, String), HashSet<String>>,
}

struct Processes {
    exe: std::path::PathBuf,
    url: String,
    api: Child,
    workers: Vec<Child>,
}

impl Processes {
    fn spawn(exe: &std::path::Path, url: &str, args: &[&str]) -> anyhow::Result<Child> {
        Ok(Command::new(exe)
            .args(args)
            .env("DATABASE_URL", url)
            .env("BURSAR_LEASE", "3s")
            .env("BURSAR_RESCUE_SCHEDULE", "* * * * * *")
            .env("BURSAR_WORKER_CONCURRENCY", "32")
            .env("BURSAR_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    fn worker(&self) -> anyhow::Result<Child> {
        Processes::spawn(&self.exe, &self.url, &["worker"])
    }

    fn stop_all(&mut self) {
        for child in self.workers.iter_mut().chain(std::iter::once(&mut self.api)) {
            let _ = nix_term(child);
        }
        for child in self.workers.iter_mut().chain(std::iter::once(&mut self.api)) {
            let _ = child.wait();
        }
    }
}

/// SIGTERM: the graceful path (std's `Child::kill` is SIGKILL).
fn nix_term(child: &Child) -> nix::Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
}

/// A payment method drawn by the weights in METHODS, from a roll in 0..100.
fn method_for(mut roll: u32) -> &'static str {
    for (method, weight) in METHODS {
        if roll < weight {
            return method;
        }
        roll -= weight;
    }
    "pm_sandbox_ok"
}

pub async fn run(c: Chaos) -> anyhow::Result<()> {
    if let Some(pgdata) = &c.pgdata {
        same_server(pgdata, &c.db.database_url)?;
    }
    let url = db::audit::recreate_database(&c.db.database_url, "bursar_chaos").await?;
    let pool = db::connect(&url, 8).await?;
    db::migrate(&pool).await?;
    let tenant = tenants::create(&pool, "chaos").await?;

    // The platform: an LMS callback and a webhook receiver, recording everything.
    let received = Arc::new(Mutex::new(Received::default()));
    let platform = {
        let (lms, events) = (received.clone(), received.clone());
        axum::Router::new()
            .route(
                "/lms",
                axum::routing::post(move |body: axum::Json<Value>| async move {
                    let seat = body["seat_id"].as_str().unwrap_or_default().to_owned();
                    *lms.lock().unwrap().enrollments.entry(seat).or_default() += 1;
                    axum::http::StatusCode::OK
                }),
            )
            .route(
                "/events",
                axum::routing::post(move |body: axum::Json<Value>| async move {
                    let id = body["id"].as_str().unwrap_or_default().to_owned();
                    let event = (text(&body["data"]["purchase_id"]), text(&body["type"]));
                    let mut received = events.lock().unwrap();
                    *received.events.entry(id.clone()).or_default() += 1;
                    received.per_purchase_event.entry(event).or_default().insert(id);
                    axum::http::StatusCode::OK
                }),
            )
    };
    let platform_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let platform_url = format!("http://{}", platform_listener.local_addr()?);
    tokio::spawn(async move { axum::serve(platform_listener, platform).await });
    let mut conn = pool.acquire().await?;
    db::settings::put(
        &mut *conn,
        tenant.tenant_id,
        &json!({"type": "callback", "url": format!("{platform_url}/lms"), "secret": SECRET}),
        &json!({"webhook_url": format!("{platform_url}/events"), "webhook_secret": SECRET}),
        &json!({}),
    )
    .await?;
    drop(conn);
    let offerings = [("cohort-a", Some(200)), ("cohort-b", Some(200)), ("self-paced", None)];
    for (id, capacity) in offerings {
        let o = db::offerings::Upsert {
            id,
            title: id,
            price_amount: rust_decimal::Decimal::new(4900, 2),
            currency: "USD",
            capacity,
            kind: "course",
            lms_course_id: Some("1"),
            lms_url: None,
        };
        db::offerings::upsert(&pool, tenant.tenant_id, &o).await?;
    }

    let exe = std::env::current_exe()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let api = format!("http://127.0.0.1:{port}");
    let mut procs = Processes {
        api: Processes::spawn(&exe, &url, &["serve", "--no-workers", "--listen", &format!("127.0.0.1:{port}")])?,
        workers: vec![],
        exe,
        url: url.clone(),
    };
    for _ in 0..c.workers {
        let w = procs.worker()?;
        procs.workers.push(w);
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    wait_ready(&http, &api).await?;

    let auth = format!("Bearer {}", tenant.api_key);
    let sandbox_secret = tenant.webhook_secrets["sandbox"].as_str().unwrap_or_default().to_owned();
    let started = Arc::new(Mutex::new(Vec::<(String, &'static str)>::new()));
    let completed_actions = Arc::new(Mutex::new(HashSet::<String>::new()));
    let duration = Duration::from_secs_f64(c.minutes * 60.0);
    let began = Instant::now();

    // The load: purchases, retried POSTs, buyers completing actions, webhooks twice and late.
    let load = {
        let (http, api, auth, started, completed) =
            (http.clone(), api.clone(), auth.clone(), started.clone(), completed_actions.clone());
        let (tenant_id, secret) = (tenant.tenant_id, sandbox_secret.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / c.rate.max(1) as f64));
            let mut i = 0u64;
            while began.elapsed() < duration {
                tick.tick().await;
                i += 1;
                let (method, offering, retry, complete) = {
                    let mut rng = rand::rng();
                    let method = method_for(rng.random_range(0..100));
                    (
                        method,
                        offerings[rng.random_range(0..offerings.len())].0,
                        rng.random_bool(0.1),
                        rng.random_bool(0.67),
                    )
                };
                let body = json!({"offering_id": offering, "customer": {"email": format!("learner{i}@chaos.example")},
                                  "payment": {"provider": "sandbox", "payment_method": method}});
                let key = format!("chaos-{i}");
                let Ok(id) = post_purchase(&http, &api, &auth, &key, &body).await else { continue };
                if retry {
                    let _ = post_purchase(&http, &api, &auth, &key, &body).await;
                }
                started.lock().unwrap().push((id.clone(), method));
                if method == "pm_sandbox_requires_action" && complete {
                    let (http, api, auth, completed, secret) =
                        (http.clone(), api.clone(), auth.clone(), completed.clone(), secret.clone());
                    tokio::spawn(async move {
                        if complete_action(&http, &api, &auth, &id, tenant_id, &secret).await.is_ok() {
                            completed.lock().unwrap().insert(id);
                        }
                    });
                }
            }
        })
    };

    // The chaos: kill a worker every few seconds, restart PostgreSQL once.
    let mut kills = 0u32;
    let mut pg_restarts = 0u32;
    let mut next_kill = Instant::now() + Duration::from_secs(c.kill_every_secs);
    while began.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= next_kill {
            let victim = { rand::rng().random_range(0..procs.workers.len()) };
            procs.workers[victim].kill()?; // SIGKILL
            procs.workers[victim].wait()?;
            procs.workers[victim] = procs.worker()?;
            kills += 1;
            next_kill = Instant::now() + Duration::from_secs(c.kill_every_secs);
        }
        if pg_restarts == 0
            && began.elapsed() > duration.mul_f64(0.4)
            && let Some(pgdata) = &c.pgdata
        {
            restart_postgres(pgdata)?;
            pg_restarts += 1;
        }
    }
    load.await?;

    let completed = completed_actions.lock().unwrap().clone();
    let quiet = wait_quiescent(&pool, &completed, Duration::from_secs(240)).await?;
    procs.stop_all();
    let started = started.lock().unwrap().clone();
    let received = std::mem::take(&mut *received.lock().unwrap());
    let (violations, counts) = check(&pool, &started, &completed, &received, quiet).await?;

    let summary = json!({
        "chaos": "done",
        "minutes": c.minutes,
        "purchases": started.len(),
        "kills": kills,
        "postgres_restarts": pg_restarts,
        "counts": counts,
        "violations": violations.len(),
        "violation_details": violations.iter().take(20).collect::<Vec<_>>(),
    });
    println!("{summary}");
    anyhow::ensure!(violations.is_empty(), "{} violation(s)", violations.len());
    Ok(())
}

async fn wait_ready(http: &reqwest::Client, api: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        if http.get(format!("{api}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the API did not become ready")
}

async fn post_purchase(
    http: &reqwest::Client,
    api: &str,
    auth: &str,
    key: &str,
    body: &Value,
) -> anyhow::Result<String> {
    // Through a PostgreSQL restart the API may answer 500 for a moment: retry with the same key.
    for _ in 0..20 {
        if let Ok(res) = http
            .post(format!("{api}/v1/purchases"))
            .header("authorization", auth)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            && res.status().as_u16() == 201
        {
            let v: Value = res.json().await?;
            return Ok(v["id"].as_str().context("an id")?.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("purchase {key} could not be started")
}

/// The buyer completes the action; the sandbox sends its webhook, and then
/// the same event comes twice more, once late, as providers do.
async fn complete_action(
    http: &reqwest::Client,
    api: &str,
    auth: &str,
    purchase: &str,
    tenant_id: Uuid,
    secret: &str,
) -> anyhow::Result<()> {
    let think = rand::rng().random_range(200..2000);
    tokio::time::sleep(Duration::from_millis(think)).await;
    let mut reference = None;
    for _ in 0..100 {
        let p: Value = http
            .get(format!("{api}/v1/purchases/{purchase}"))
            .header("authorization", auth)
            .send()
            .await?
            .json()
            .await?;
        if let Some(r) = p["payment"]["next_action"]["reference"].as_str() {
            reference = Some(r.to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reference = reference.context("no action to complete")?;
    let res = http
        .post(format!("{api}/v1/sandbox/payments/{reference}/complete"))
        .header("authorization", auth)
        .send()
        .await?;
    anyhow::ensure!(res.status().is_success(), "complete: {}", res.status());
    let event = json!({"id": format!("evt_again_{purchase}"), "type": "payment.authorized",
                       "data": {"reference": reference, "purchase_id": purchase}})
    .to_string();
    let url = format!("{api}/webhooks/sandbox/{tenant_id}");
    for delay in [0u64, 0, 5000] {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let signature = crate::signature::sign(secret, chrono::Utc::now().timestamp(), event.as_bytes());
        let _ = http.post(&url).header("Bursar-Signature", signature).body(event.clone()).send().await;
    }
    Ok(())
}

/// The cluster in `pgdata` must be the server at `url`: restarting another
/// would test nothing, and stop a server somebody else may be using.
fn same_server(pgdata: &str, url: &str) -> anyhow::Result<()> {
    let pid_file = std::path::Path::new(pgdata).join("postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("--pgdata {pgdata}: no running cluster there ({} unreadable)", pid_file.display()))?;
    // postmaster.pid's fourth line is the port the cluster listens on.
    let port = pid.lines().nth(3).and_then(|l| l.trim().parse::<u16>().ok());
    let url_port = url::Url::parse(url).context("DATABASE_URL is not a URL")?.port().unwrap_or(5432);
    let Some(port) = port else { anyhow::bail!("--pgdata {pgdata}: no port in {}", pid_file.display()) };
    anyhow::ensure!(
        port == url_port,
        "--pgdata {pgdata} is the cluster on port {port}, but DATABASE_URL is on port {url_port}: \
         chaos would restart a server it is not testing"
    );
    Ok(())
}

fn restart_postgres(pgdata: &str) -> anyhow::Result<()> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/pg_ctl"))
        .filter(|p| p.exists())
        .max()
        .context("no pg_ctl")?;
    let mut cmd = if nix_is_root() { Command::new("runuser") } else { Command::new(&bin) };
    if nix_is_root() {
        cmd.args(["-u", "postgres", "--"]).arg(&bin);
    }
    let status = cmd
        .args(["-D", pgdata, "-m", "immediate", "-w", "restart"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "restarting PostgreSQL failed");
    Ok(())
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Until no run is due or running, nothing waits but buyers who never acted,
/// and the outbox is drained; false if that did not happen in time.
async fn wait_quiescent(pool: &PgPool, completed: &HashSet<String>, within: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let busy = db::audit::busy_runs(pool).await.unwrap_or(1);
        let backlog = db::outbox::backlog(pool).await.unwrap_or(1);
        let waiting = waiting_purchases(pool).await.unwrap_or_default();
        let stuck_waiting = waiting.iter().filter(|(id, _)| completed.contains(id)).count();
        if busy == 0 && backlog == 0 && stuck_waiting == 0 {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(false)
}

async fn waiting_purchases(pool: &PgPool) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = db::audit::waiting_purchases(pool).await?;
    Ok(rows.into_iter().map(|(id, s)| (crate::api::ids::purchase(id), s)).collect())
}

async fn check(
    pool: &PgPool,
    started: &[(String, &'static str)],
    completed_actions: &HashSet<String>,
    received: &Received,
    quiet: bool,
) -> anyhow::Result<(Vec<String>, Value)> {
    let mut v = Vec::new();
    if !quiet {
        v.push("the system did not become quiescent within the time allowed".to_owned());
    }
    // Every purchase is terminal, or waits for a buyer who never acted.
    let rows = db::audit::purchase_books(pool).await?;
    let mut by_status: HashMap<String, u32> = HashMap::new();
    for p in &rows {
        let pid = crate::api::ids::purchase(p.id);
        let (status, total, provider_captured) = (p.run_status.as_str(), p.total_minor, p.provider_captured_minor);
        *by_status.entry(status.to_owned()).or_default() += 1;
        let outstanding =
            status == "waiting" && p.payment_status == "requires_action" && !completed_actions.contains(&pid);
        if !matches!(status, "succeeded" | "failed" | "cancelled") && !outstanding {
            v.push(format!("{pid}: run {status} at {}", p.run_step));
        }
        if status == "succeeded" && (provider_captured != total || p.captured_minor != total) {
            v.push(format!("{pid}: completed but the provider captured {provider_captured} of {total}"));
        }
        if provider_captured > total {
            v.push(format!("{pid}: captured {provider_captured}, more than its total {total}"));
        }
        if status == "failed" && provider_captured - p.refunded_minor != 0 {
            v.push(format!("{pid}: failed but keeps {} captured", provider_captured - p.refunded_minor));
        }
    }
    // No purchase captured more than once at the provider.
    for id in db::audit::purchases_captured_twice(pool).await? {
        v.push(format!("{}: captured by more than one charge", crate::api::ids::purchase(id)));
    }
    // Every active seat enrolled at the LMS; no failed purchase's seat enrolled.
    let seats = db::audit::seats_with_run_status(pool).await?;
    let mut lms_duplicates = 0;
    for (seat, status, run_status) in &seats {
        let calls = received.enrollments.get(&crate::api::ids::seat(*seat)).copied().unwrap_or(0);
        if status == "active" && calls == 0 {
            v.push(format!("{}: active but never enrolled at the LMS", crate::api::ids::seat(*seat)));
        }
        if status != "active" && run_status == "failed" && calls > 0 {
            v.push(format!("{}: enrolled at the LMS for a failed purchase", crate::api::ids::seat(*seat)));
        }
        lms_duplicates += calls.saturating_sub(1);
    }
    // No seat beyond capacity.
    for o in db::audit::oversold_offerings(pool).await? {
        v.push(format!("offering {o}: more active seats than its capacity"));
    }
    // Notifications: none sent twice, the outbox drained. Delivery is at
    // least once: a worker killed between the receiver's 200 and marking the
    // message sent sends it again, with the same event id (and
    // Idempotency-Key) for the receiver to drop. Those redeliveries are
    // counted and shown; two different messages for one event are a violation.
    let redelivered: u32 = received.events.values().map(|n| n.saturating_sub(1)).sum();
    for ((purchase, kind), ids) in &received.per_purchase_event {
        if ids.len() > 1 {
            v.push(format!("{purchase}: {} different `{kind}` notifications", ids.len()));
        }
    }
    let (pending, failed) = db::audit::undelivered_messages(pool).await?;
    if pending + failed > 0 {
        v.push(format!("outbox not drained: {pending} pending, {failed} failed"));
    }
    // And none lost: every webhook recorded as sent (not skipped for want of
    // a target) reached the platform under its event id.
    let sent = db::audit::delivered_webhook_ids(pool).await?;
    let lost: Vec<&String> = sent.iter().filter(|id| !received.events.contains_key(*id)).collect();
    if !lost.is_empty() {
        v.push(format!("{} webhooks recorded as sent never reached the platform, e.g. {}", lost.len(), lost[0]));
    }
    let counts = json!({
        "runs_by_status": by_status,
        "methods": started.iter().fold(HashMap::<&str, u32>::new(), |mut m, (_, method)| { *m.entry(method).or_default() += 1; m }),
        "actions_completed": completed_actions.len(),
        "seats_active": seats.iter().filter(|s| s.1 == "active").count(),
        "lms_calls": received.enrollments.values().sum::<u32>(),
        "lms_duplicate_calls": lms_duplicates,
        "notifications_received": received.events.values().sum::<u32>(),
        "notifications_redelivered_same_id": redelivered,
    });
    Ok((v, counts))
}

#[cfg(test)]
mod tests {
    /// A data directory holding a postmaster.pid that says `port`.
    fn cluster_on(port: u16) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("bursar-chaos-test-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid = format!("4242\n{}\n1764000000\n{port}\n/tmp\n127.0.0.1\n", dir.display());
        std::fs::write(dir.join("postmaster.pid"), pid).unwrap();
        dir
    }

    #[test]
    fn chaos_restarts_only_the_cluster_it_tests() {
        let dir = cluster_on(5499);
        let pgdata = dir.to_str().unwrap();
        assert!(super::same_server(pgdata, "postgres://postgres@127.0.0.1:5499/bursar").is_ok());
        let other = super::same_server(pgdata, "postgres://postgres@127.0.0.1:5432/bursar").unwrap_err();
        assert!(other.to_string().contains("port 5499, but DATABASE_URL is on port 5432"), "{other}");
        assert!(super::same_server(pgdata, "postgres://postgres@127.0.0.1/bursar").is_err(), "no port means 5432");
        assert!(super::same_server("/nonexistent/pgdata", "postgres://postgres@127.0.0.1:5499/bursar").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
