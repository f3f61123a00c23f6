//! The OpenAPI document says what the server does: it lists the routes of
//! API.md, and every answer the server gives in a walk through them
//! validates against the schema the document gives for that route and
//! status, with no field the schema does not name.

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{Answer, TestApp};

/// The routes of API.md that this Bursar serves, with their methods.
const ROUTES: [(&str, &str); 17] = [
    ("get", "/v1/settings"),
    ("patch", "/v1/settings"),
    ("put", "/v1/offerings/{offering_id}"),
    ("get", "/v1/offerings/{offering_id}"),
    ("post", "/v1/purchases"),
    ("get", "/v1/purchases"),
    ("get", "/v1/purchases/{purchase_id}"),
    ("get", "/v1/sandbox/charges"),
    ("post", "/v1/sandbox/payments/{reference}/complete"),
    ("post", "/webhooks/{provider}/{tenant_id}"),
    ("get", "/v1/ops/runs"),
    ("get", "/v1/ops/runs/{run_id}"),
    ("post", "/v1/ops/runs/{run_id}/replay"),
    ("post", "/v1/ops/runs/{run_id}/cancel"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// The document's components made strict for checking answers: an object
/// may carry no property its schema does not name (`unevaluatedProperties`,
/// which sees through `allOf`, unlike `additionalProperties`). A `$ref`
/// inside `allOf` is inlined, unstrict, so the whole decides.
fn strict(schema: &Value, components: &Value, in_all_of: bool) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (key, value) in map {
                let value = match key.as_str() {
                    "allOf" => Value::Array(
                        (value.as_array().unwrap().iter())
                            .map(|member| {
                                let member = match member["$ref"].as_str() {
                                    Some(r) => &components[r.trim_start_matches("#/components/schemas/")],
                                    None => member,
                                };
                                strict(member, components, true)
                            })
                            .collect(),
                    ),
                    "properties" => Value::Object(
                        value
                            .as_object()
                            .unwrap()
                            .iter()
                            .map(|(k, v)| (k.clone(), strict(v, components, false)))
                            .collect(),
                    ),
                    _ => strict(value, components, false),
                };
                out.insert(key.clone(), value);
            }
            if !in_all_of && (map.contains_key("properties") || map.contains_key("allOf")) {
                out.insert("unevaluatedProperties".into(), json!(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| strict(v, components, false)).collect()),
        other => other.clone(),
    }
}

struct Document {
    paths: Value,
    /// As served.
    components: Value,
    /// Made strict (see `strict`).
    strict: Value,
}

impl Document {
    /// Checks that the document names this answer of `method path` and that
    /// the answer fits it. A success must be listed as such; an error may fall
    /// to the route's `default` (the one error shape).
    fn check(&self, method: &str, path: &str, answer: &Answer) {
        let responses = &self.paths[path][method]["responses"];
        let mut response = &responses[answer.status.to_string()];
        if response.is_null() && answer.status >= 400 {
            response = &responses["default"];
        }
        assert!(response.is_object(), "{method} {path} answered {}, which the document does not list", answer.status);
        let what = format!("{method} {path} {}", answer.status);
        self.validate(&response["content"]["application/json"]["schema"], &answer.body, &what);
    }

    /// Checks a request body the test sends against what the document asks for.
    fn check_request(&self, method: &str, path: &str, body: &Value) {
        let schema = &self.paths[path][method]["requestBody"]["content"]["application/json"]["schema"];
        self.validate(schema, body, &format!("{method} {path} request"));
    }

    fn validate(&self, schema: &Value, instance: &Value, what: &str) {
        assert!(schema.is_object(), "{what}: no JSON schema");
        let mut root = strict(schema, &self.components, false);
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        root["components"] = json!({"schemas": self.strict});
        let validator =
            jsonschema::options().should_validate_formats(true).build(&root).expect("the document's schemas compile");
        let errors: Vec<String> =
            validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{what}: {errors:#?}\n{instance}");
    }
}

/// Where the document describes an object without saying what is in it,
/// as `Component.property` (`[]` for an array's items).
fn opaque_objects(schema: &Value, at: &str, out: &mut Vec<String>) {
    let Some(map) = schema.as_object() else { return };
    let is_object = |t: &Value| t == "object" || t.as_array().is_some_and(|ts| ts.contains(&json!("object")));
    let described =
        ["properties", "additionalProperties", "allOf", "oneOf", "anyOf", "$ref"].iter().any(|k| map.contains_key(*k));
    if map.get("type").is_some_and(is_object) && !described {
        out.push(at.to_owned());
    }
    for (key, value) in map {
        match key.as_str() {
            "properties" => {
                for (name, property) in value.as_object().unwrap() {
                    opaque_objects(property, &format!("{at}.{name}"), out);
                }
            }
            "items" => opaque_objects(value, &format!("{at}[]"), out),
            "additionalProperties" => opaque_objects(value, &format!("{at}{{}}"), out),
            "allOf" | "oneOf" | "anyOf" => {
                for member in value.as_array().unwrap() {
                    opaque_objects(member, at, out);
                }
            }
            _ => {}
        }
    }
}

async fn document(app: &TestApp) -> Document {
    let served = app.send(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(served.status, 200);
    let doc = served.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let components = doc["components"]["schemas"].clone();
    let strict_components: serde_json::Map<String, Value> = (components.as_object().unwrap().iter())
        .map(|(name, schema)| (name.clone(), strict(schema, &components, false)))
        .collect();
    Document { paths: doc["paths"].clone(), components, strict: Value::Object(strict_components) }
}

/// What the document leaves open is only what is open by design: a
/// provider's next action, a run's context and story, the settings a PATCH
/// replaces (each checked by its own parser), a webhook's event.
#[tokio::test]
async fn the_document_leaves_open_only_what_is_open_by_design() {
    let app = TestApp::spawn_idle().await;
    let doc = document(&app).await;
    let mut open = Vec::new();
    for (name, schema) in doc.components.as_object().unwrap() {
        opaque_objects(schema, name, &mut open);
    }
    let body =
        &doc.paths["/webhooks/{provider}/{tenant_id}"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    opaque_objects(body, "webhook event", &mut open);
    open.sort();
    assert_eq!(
        open,
        [
            "Payment.next_action",
            "ReplayAnswer.effects[]",
            "RunReport.actions[]",
            "RunReport.context",
            "RunReport.effects[]",
            "RunReport.signals[]",
            "RunReport.timeline[]",
            "SettingsPatch.lms",
            "SettingsPatch.notifications",
            "SettingsPatch.providers",
            "webhook event",
        ]
    );
}

#[tokio::test]
async fn the_document_lists_the_contracts_routes_and_every_answer_fits_it() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let mut listed: Vec<(String, String)> = Vec::new();
    for (path, methods) in doc.paths.as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            listed.push((method.clone(), path.clone()));
        }
    }
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);

    let key = Some(app.api_key.as_str());
    let send = |method: Method, path: String, body: Option<Value>| {
        let app = &app;
        async move { app.send(method, &path, key, body.map(|b| b.to_string())).await }
    };

    // Settings, offerings.
    doc.check("get", "/v1/settings", &send(Method::GET, "/v1/settings".into(), None).await);
    let patch = json!({"lms": {"type": "callback", "url": "https://platform.example/enroll", "secret": "0123456789abcdef"},
                       "notifications": {"webhook_url": "https://platform.example/events", "webhook_secret": "0123456789abcdef",
                                         "smtp": {"host": "127.0.0.1", "from": "shop@academy.example"}},
                       "providers": {"stripe": {"api_key": "sk_test_1"}}});
    doc.check_request("patch", "/v1/settings", &patch);
    doc.check("patch", "/v1/settings", &send(Method::PATCH, "/v1/settings".into(), Some(patch)).await);
    let none = json!({"lms": {"type": "none"}, "notifications": {}});
    doc.check("patch", "/v1/settings", &send(Method::PATCH, "/v1/settings".into(), Some(none)).await);
    let offering = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}, "capacity": 10,
                          "lms": {"course_id": "42", "url": "https://lms.example/course/42"}});
    doc.check_request("put", "/v1/offerings/{offering_id}", &offering);
    let put = send(Method::PUT, "/v1/offerings/rust-101".into(), Some(offering.clone())).await;
    assert_eq!(put.status, 201);
    doc.check("put", "/v1/offerings/{offering_id}", &put);
    doc.check(
        "put",
        "/v1/offerings/{offering_id}",
        &send(Method::PUT, "/v1/offerings/rust-101".into(), Some(offering)).await,
    );
    doc.check("get", "/v1/offerings/{offering_id}", &send(Method::GET, "/v1/offerings/rust-101".into(), None).await);
    doc.check("get", "/v1/offerings/{offering_id}", &send(Method::GET, "/v1/offerings/nope".into(), None).await);
    let wrong_method = send(Method::DELETE, "/v1/offerings/rust-101".into(), None).await;
    assert_eq!(wrong_method.status, 405);
    doc.check("get", "/v1/offerings/{offering_id}", &wrong_method);

    // Purchases: one that completes, one declined, one waiting for the buyer.
    let buy = |method: &str| {
        json!({"offering_id": "rust-101", "quantity": 2, "customer": {"email": "ana@example.org", "name": "Ana"},
               "payment": {"provider": "sandbox", "payment_method": method},
               "enrollment": {"assign_to": [{"email": "bo@example.org"}]}})
    };
    let mut ids = Vec::new();
    for (i, method) in ["pm_sandbox_ok", "pm_sandbox_declined", "pm_sandbox_requires_action"].iter().enumerate() {
        doc.check_request("post", "/v1/purchases", &buy(method));
        let created = app.post_purchase(Some(&format!("k{i}")), &buy(method)).await;
        assert_eq!(created.status, 201, "{}", created.body);
        doc.check("post", "/v1/purchases", &created);
        ids.push(created.body["id"].as_str().unwrap().to_owned());
    }
    let again = app.post_purchase(Some("k0"), &buy("pm_sandbox_declined")).await;
    assert_eq!(again.status, 422);
    doc.check("post", "/v1/purchases", &again);
    let mut bad = buy("pm_sandbox_ok");
    bad["quantity"] = json!(-1);
    doc.check("post", "/v1/purchases", &app.post_purchase(Some("bad"), &bad).await);
    doc.check("post", "/v1/purchases", &app.post_purchase(None, &buy("pm_sandbox_ok")).await);

    let completed = app.wait_for_status(&ids[0], "completed").await;
    let failed = app.wait_for_status(&ids[1], "failed").await;
    let waiting = app.wait_for_status(&ids[2], "requires_action").await;
    for (id, purchase) in ids.iter().zip([&completed, &failed, &waiting]) {
        let read = send(Method::GET, format!("/v1/purchases/{id}"), None).await;
        assert_eq!(&read.body, purchase);
        doc.check("get", "/v1/purchases/{purchase_id}", &read);
    }
    doc.check("get", "/v1/purchases", &send(Method::GET, "/v1/purchases?limit=2".into(), None).await);
    doc.check("get", "/v1/purchases", &send(Method::GET, "/v1/purchases?limit=abc".into(), None).await);
    let anonymous = app.send(Method::GET, "/v1/purchases", None, None).await;
    assert_eq!(anonymous.status, 401);
    doc.check("get", "/v1/purchases", &anonymous);

    // The sandbox, and its webhook coming back in.
    doc.check(
        "get",
        "/v1/sandbox/charges",
        &send(Method::GET, format!("/v1/sandbox/charges?purchase_id={}", ids[0]), None).await,
    );
    let reference = waiting["payment"]["next_action"]["reference"].as_str().unwrap();
    let path = format!("/v1/sandbox/payments/{reference}/complete");
    let completion = send(Method::POST, path.clone(), Some(json!({}))).await;
    assert_eq!(completion.status, 200, "{}", completion.body);
    doc.check("post", "/v1/sandbox/payments/{reference}/complete", &completion);
    doc.check("post", "/v1/sandbox/payments/{reference}/complete", &send(Method::POST, path, Some(json!({}))).await);
    let event = json!({"id": "evt_doc", "type": "ping"}).to_string();
    let signature =
        bursar::signature::sign(&app.webhook_secret("sandbox").await, chrono::Utc::now().timestamp(), event.as_bytes());
    let tenant = app.tenant_id.to_string();
    doc.check(
        "post",
        "/webhooks/{provider}/{tenant_id}",
        &app.post_webhook("sandbox", &tenant, Some(&signature), &event).await,
    );
    doc.check("post", "/webhooks/{provider}/{tenant_id}", &app.post_webhook("sandbox", &tenant, None, &event).await);

    // Operators.
    let runs = send(Method::GET, "/v1/ops/runs".into(), None).await;
    doc.check("get", "/v1/ops/runs", &runs);
    let run = failed["run"]["id"].as_str().unwrap();
    doc.check("get", "/v1/ops/runs/{run_id}", &send(Method::GET, format!("/v1/ops/runs/{run}"), None).await);
    doc.check_request("post", "/v1/ops/runs/{run_id}/replay", &json!({"reason": "look"}));
    let dry =
        send(Method::POST, format!("/v1/ops/runs/{run}/replay?dry_run=true"), Some(json!({"reason": "look"}))).await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    doc.check("post", "/v1/ops/runs/{run_id}/replay", &dry);
    let done = completed["run"]["id"].as_str().unwrap();
    doc.check(
        "post",
        "/v1/ops/runs/{run_id}/cancel",
        &send(Method::POST, format!("/v1/ops/runs/{done}/cancel"), Some(json!({"reason": "x"}))).await,
    );

    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(doc.paths["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_object());
    doc.check("get", "/healthz", &app.send(Method::GET, "/healthz", None, None).await);
    doc.check("get", "/readyz", &app.send(Method::GET, "/readyz", None, None).await);
}
