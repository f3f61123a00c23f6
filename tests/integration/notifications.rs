use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use mailin_embedded::response::OK;
use mailin_embedded::{Handler, Response, Server};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::app::TestApp;

const WEBHOOK_SECRET: &str = "platform-webhook-secret-0123";

/// A real SMTP server on loopback that keeps every message it accepts.
#[derive(Clone, Default)]
struct Mailbox {
    current: Vec<u8>,
    received: Arc<Mutex<Vec<String>>>,
}

impl Handler for Mailbox {
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }
    fn data_end(&mut self) -> Response {
        self.received.lock().unwrap().push(String::from_utf8_lossy(&self.current).into_owned());
        self.current.clear();
        OK
    }
}

fn start_smtp() -> (u16, Arc<Mutex<Vec<String>>>) {
    let mailbox = Mailbox::default();
    let received = mailbox.received.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server = Server::new(mailbox);
    server.with_name("smtp.test").with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    (port, received)
}

/// The platform's webhook endpoint: checks the signature, records events,
/// fails the first `fail_first` deliveries.
#[derive(Clone, Default)]
struct Platform {
    events: Arc<Mutex<Vec<Value>>>,
    fail_first: Arc<AtomicU32>,
}

impl Respond for Platform {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let signature = req.headers.get("bursar-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if bursar::signature::verify(WEBHOOK_SECRET, signature, &req.body, chrono::Utc::now().timestamp()).is_err() {
            return ResponseTemplate::new(401);
        }
        if self.fail_first.load(Ordering::SeqCst) > 0 {
            self.fail_first.fetch_sub(1, Ordering::SeqCst);
            return ResponseTemplate::new(503);
        }
        self.events.lock().unwrap().push(serde_json::from_slice(&req.body).unwrap());
        ResponseTemplate::new(200)
    }
}

async fn setup(fail_first: u32) -> (TestApp, Arc<Mutex<Vec<String>>>, Platform, MockServer) {
    configured(TestApp::spawn().await, fail_first).await
}

/// `app` with a platform webhook, an SMTP server and an offering.
async fn configured(app: TestApp, fail_first: u32) -> (TestApp, Arc<Mutex<Vec<String>>>, Platform, MockServer) {
    let (port, mails) = start_smtp();
    let platform = Platform { fail_first: Arc::new(AtomicU32::new(fail_first)), ..Platform::default() };
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(platform.clone()).mount(&server).await;
    let set = app
        .patch_settings(&json!({"notifications": {
            "webhook_url": format!("{}/bursar/events", server.uri()),
            "webhook_secret": WEBHOOK_SECRET,
            "smtp": {"host": "127.0.0.1", "port": port, "from": "shop@academy.example", "starttls": false}
        }}))
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["notifications"]["webhook_secret"], json!({"set": true}));
    let offering = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"},
                          "lms": {"course_id": "42", "url": "https://lms.example/course/42"}});
    app.put_offering("rust-101", &offering).await;
    (app, mails, platform, server)
}

fn purchase() -> Value {
    json!({"offering_id": "rust-101", "customer": {"email": "ana@example.org"},
           "payment": {"provider": "sandbox", "payment_method": "pm_sandbox_ok"}})
}

#[tokio::test]
async fn a_completed_purchase_sends_its_receipt_enrollment_mail_and_webhooks_once() {
    let (app, mails, platform, _server) = setup(0).await;
    let id = app.post_purchase(Some("p"), &purchase()).await.body["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "completed").await;
    assert_eq!(app.deliver_all().await, 4, "created and completed webhooks, receipt, enrollment mail");
    assert_eq!(app.deliver_all().await, 0, "nothing is sent twice");

    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let receipt = mails.iter().find(|m| m.contains("Subject: Your receipt for Rust 101")).expect("a receipt");
    assert!(receipt.contains("To: ana@example.org") && receipt.contains("Total: 49.00 USD"), "{receipt}");
    let enrolled =
        mails.iter().find(|m| m.contains("Subject: You are enrolled in Rust 101")).expect("an enrollment mail");
    assert!(enrolled.contains("https://lms.example/course/42"), "{enrolled}");

    let events = platform.events.lock().unwrap().clone();
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["purchase.created", "purchase.completed"]);
    assert!(events.iter().all(|e| e["data"]["purchase_id"] == json!(id)));
}

#[tokio::test]
async fn a_sold_out_purchase_tells_the_platform_it_failed_and_cancels_its_seats() {
    let (app, mails, platform, _server) = setup(0).await;
    let one_seat = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}, "capacity": 1});
    assert_eq!(app.put_offering("rust-101", &one_seat).await.status, 200);
    let first = app.post_purchase(Some("first"), &purchase()).await.body["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&first, "completed").await;
    let second = app.post_purchase(Some("second"), &purchase()).await.body["id"].as_str().unwrap().to_owned();
    let failed = app.wait_for_status(&second, "failed").await;
    assert_eq!(failed["failure"]["code"], "sold_out");
    let seats: Vec<_> = failed["seats"].as_array().unwrap().iter().map(|s| s["status"].clone()).collect();
    assert_eq!(seats, [json!("cancelled")], "a seat that can never be is cancelled");

    app.deliver_all().await;
    let events = platform.events.lock().unwrap().clone();
    let of_second: Vec<_> = (events.iter())
        .filter(|e| e["data"]["purchase_id"] == json!(second))
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["data"]["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        of_second,
        [("purchase.created".to_owned(), "processing".to_owned()), ("purchase.failed".to_owned(), "failed".to_owned())]
    );
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 2, "the first purchase's receipt and enrollment mail only: {mails:#?}");
}

/// Enroll leaves notify what to say in the run's context; a run whose enroll
/// ran before it did reaches notify without it, and notify reads it instead.
#[tokio::test]
async fn notify_reads_the_purchase_when_the_context_carries_no_notice() {
    let (mut app, mails, _platform, _server) = configured(TestApp::spawn_idle().await, 0).await;
    let id = app.post_purchase(Some("p"), &purchase()).await.body["id"].as_str().unwrap().to_owned();
    // Where such a run stands: paid, its seat enrolled, notify next.
    sqlx::query(
        "WITH p AS (UPDATE purchases SET seats_reserved = true, payment_status = 'captured',
                                         authorized_minor = total_minor, captured_minor = total_minor
                                     RETURNING id, run_id),
              s AS (UPDATE seats SET status = 'active', enrolled_at = now() WHERE purchase_id IN (SELECT id FROM p))
         UPDATE runs SET step = 'notify' WHERE id IN (SELECT run_id FROM p) AND NOT context ? 'notice'",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    app.start_worker(crate::support::fast_worker());
    app.wait_for_status(&id, "completed").await;
    app.deliver_all().await;
    let mails = mails.lock().unwrap().clone();
    let enrolled =
        mails.iter().find(|m| m.contains("Subject: You are enrolled in Rust 101")).expect("an enrollment mail");
    assert!(
        enrolled.contains("To: ana@example.org") && enrolled.contains("https://lms.example/course/42"),
        "{enrolled}"
    );
    assert!(mails.iter().any(|m| m.contains("Subject: Your receipt for Rust 101")), "{mails:#?}");
}

#[tokio::test]
async fn a_platform_that_fails_gets_the_same_event_again_until_it_takes_it() {
    let (app, _mails, platform, _server) = setup(2).await;
    let id = app.post_purchase(Some("p"), &purchase()).await.body["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "completed").await;
    app.deliver_all().await;
    let events = platform.events.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "each event accepted once: {events:#?}");
    let attempts: i64 = sqlx::query_scalar("SELECT sum(attempts) FROM outbox WHERE channel = 'webhook'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 4, "two refused deliveries, then each of the two events delivered once");
    let unsent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status <> 'sent'").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(unsent, 0);
    let ids: Vec<_> = events.iter().map(|e| e["id"].clone()).collect();
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn a_mail_that_can_never_be_delivered_is_marked_failed_not_retried_forever() {
    let (app, mails, _platform, _server) = setup(0).await;
    // A recipient the mailer refuses to address: a permanent failure.
    sqlx::query(
        "INSERT INTO outbox (tenant_id, dedup_key, channel, payload)
         VALUES ($1, 'bad-mail', 'email', '{\"to\": \"not an address\", \"subject\": \"x\", \"text\": \"y\"}')",
    )
    .bind(app.tenant_id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    app.deliver_all().await;
    let (status, attempts, error): (String, i32, Option<String>) =
        sqlx::query_as("SELECT status, attempts, last_error FROM outbox WHERE dedup_key = 'bad-mail'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("failed", 1), "{error:?}");
    assert!(mails.lock().unwrap().is_empty());
}
