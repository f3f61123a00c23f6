//! The API on loopback for a test: a fresh database, a tenant with its key,
//! the real router on port 0, and one method per endpoint.

use serde_json::Value;

use crate::support::TestDb;

pub struct TestApp {
    pub db: TestDb,
    pub address: String,
    pub api_key: String,
    pub tenant_id: uuid::Uuid,
    pub client: reqwest::Client,
    engine: bursar::engine::Engine,
    worker: Option<crate::support::Running>,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The error's type and field, asserting the error shape on the way.
    pub fn error(&self) -> (&str, Option<&str>) {
        let e = &self.body["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "an error has a message: {}", self.body);
        (e["type"].as_str().expect("an error has a type"), e["field"].as_str())
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        let mut app = TestApp::spawn_idle().await;
        app.start_worker(crate::support::fast_worker());
        app
    }

    /// The API without a worker: runs wait until `start_worker`.
    pub async fn spawn_idle() -> TestApp {
        // Logs of a failing test are shown with it (internal errors log their cause).
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
        let db = TestDb::new().await;
        let tenant = bursar::tenants::create(&db.pool, "Test Academy").await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let providers = bursar::steps::providers(&db.pool);
        let engine = bursar::engine::Engine::new(
            db.pool.clone(),
            bursar::workflows::builtin().unwrap(),
            bursar::steps::registry(&providers),
        )
        .unwrap();
        let router = bursar::api::router(bursar::api::AppState::new(engine.clone(), providers, address.clone()));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        TestApp {
            db,
            address,
            api_key: tenant.api_key,
            tenant_id: tenant.tenant_id,
            client: reqwest::Client::new(),
            engine,
            worker: None,
        }
    }

    pub fn start_worker(&mut self, config: bursar::engine::WorkerConfig) {
        self.worker = Some(crate::support::spawn_worker(&self.engine, config));
    }

    /// Another tenant on the same server.
    pub async fn other_tenant_key(&self) -> String {
        bursar::tenants::create(&self.db.pool, "Other Academy").await.unwrap().api_key
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<String>) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.address));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON answer, got {status}: {text}"));
        Answer { status, body }
    }

    pub async fn put_offering(&self, id: &str, body: &Value) -> Answer {
        self.put_offering_raw(id, &self.api_key, body.to_string()).await
    }

    pub async fn put_offering_raw(&self, id: &str, key: &str, body: String) -> Answer {
        self.send(reqwest::Method::PUT, &format!("/v1/offerings/{id}"), Some(key), Some(body)).await
    }

    pub async fn get_offering(&self, id: &str) -> Answer {
        self.get_offering_as(id, &self.api_key).await
    }

    pub async fn get_offering_as(&self, id: &str, key: &str) -> Answer {
        self.send(reqwest::Method::GET, &format!("/v1/offerings/{id}"), Some(key), None).await
    }
}

impl TestApp {
    pub async fn post_purchase(&self, key: Option<&str>, body: &Value) -> Answer {
        let mut req = self.client.post(format!("{}/v1/purchases", self.address)).bearer_auth(&self.api_key).json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        Answer { status, body: res.json().await.unwrap() }
    }

    pub async fn get_purchase(&self, id: &str) -> Answer {
        self.send(reqwest::Method::GET, &format!("/v1/purchases/{id}"), Some(&self.api_key), None).await
    }

    pub async fn list_purchases(&self, query: &str) -> Answer {
        self.send(reqwest::Method::GET, &format!("/v1/purchases?{query}"), Some(&self.api_key), None).await
    }

    pub async fn sandbox_charges(&self, purchase_id: &str) -> Answer {
        let path = format!("/v1/sandbox/charges?purchase_id={purchase_id}");
        self.send(reqwest::Method::GET, &path, Some(&self.api_key), None).await
    }

    /// Polls the purchase until `done`, failing after 20 s with its last state.
    pub async fn wait_for_purchase(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let p = self.get_purchase(id).await.body;
            if done(&p) {
                return p;
            }
            assert!(tokio::time::Instant::now() < deadline, "purchase did not get there: {p:#}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        self.wait_for_purchase(id, |p| p["status"] == status).await
    }
}

impl TestApp {
    pub async fn complete_sandbox_payment(&self, reference: &str) -> Answer {
        let path = format!("/v1/sandbox/payments/{reference}/complete");
        self.send(reqwest::Method::POST, &path, Some(&self.api_key), Some("{}".into())).await
    }

    pub async fn post_webhook(&self, provider: &str, tenant: &str, signature: Option<&str>, body: &str) -> Answer {
        let mut req = self
            .client
            .post(format!("{}/webhooks/{provider}/{tenant}", self.address))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(signature) = signature {
            req = req.header("Bursar-Signature", signature);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        Answer { status, body: res.json().await.unwrap() }
    }

    pub async fn webhook_secret(&self, provider: &str) -> String {
        bursar::db::webhooks::secret(&self.db.pool, self.tenant_id, provider).await.unwrap().unwrap()
    }
}

impl TestApp {
    pub async fn get_settings(&self) -> Answer {
        self.send(reqwest::Method::GET, "/v1/settings", Some(&self.api_key), None).await
    }

    pub async fn patch_settings(&self, body: &Value) -> Answer {
        self.send(reqwest::Method::PATCH, "/v1/settings", Some(&self.api_key), Some(body.to_string())).await
    }
}

impl TestApp {
    /// Delivers the outbox until nothing is due, as the deliverer loop would.
    pub async fn deliver_all(&self) -> usize {
        let mut config = bursar::notify::DelivererConfig::default();
        config.retry.initial = std::time::Duration::from_millis(10);
        config.retry.max = std::time::Duration::from_millis(50);
        config.retry.jitter = false;
        let deliverer = bursar::notify::Deliverer::new(self.db.pool.clone(), config);
        let mut handled = 0;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while bursar::db::outbox::backlog(&self.db.pool).await.unwrap() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the outbox did not drain");
            handled += deliverer.deliver_due().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        handled
    }
}

impl TestApp {
    pub async fn ops(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        self.send(method, &format!("/v1/ops{path}"), Some(&self.api_key), body.map(|b| b.to_string())).await
    }
}
