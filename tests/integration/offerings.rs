use serde_json::{Value, json};

use crate::app::TestApp;

fn rust_101() -> Value {
    json!({
        "title": "Rust 101 — March cohort",
        "price": {"amount": "49.00", "currency": "USD"},
        "capacity": 30,
        "kind": "course",
        "lms": {"course_id": "42", "url": "https://lms.example/course/42"}
    })
}

#[tokio::test]
async fn an_offering_is_upserted_by_the_platforms_id_and_read_back() {
    let app = TestApp::spawn().await;
    let created = app.put_offering("rust-101-mar", &rust_101()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let got = app.get_offering("rust-101-mar").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["title"], "Rust 101 — March cohort");
    assert_eq!(got.body["price"], json!({"amount": "49.00", "currency": "USD"}));
    assert_eq!((got.body["capacity"].clone(), got.body["seats_taken"].clone()), (json!(30), json!(0)));
    assert_eq!(got.body["lms"], json!({"course_id": "42", "url": "https://lms.example/course/42"}));

    let mut changed = rust_101();
    changed["price"] = json!({"amount": "1000", "currency": "JPY"});
    changed["capacity"] = Value::Null;
    let updated = app.put_offering("rust-101-mar", &changed).await;
    assert_eq!(updated.status, 200);
    assert_eq!(updated.body["price"], json!({"amount": "1000", "currency": "JPY"}));
    assert_eq!(updated.body["capacity"], Value::Null, "null means unlimited");
    assert_eq!(updated.body["created_at"], got.body["created_at"]);
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused() {
    let app = TestApp::spawn().await;
    let none = app.send(reqwest::Method::GET, "/v1/offerings/x", None, None).await;
    assert_eq!((none.status, none.error()), (401, ("unauthorized", None)));
    let wrong = app.get_offering_as("x", "bsk_not_a_key").await;
    assert_eq!((wrong.status, wrong.error()), (401, ("unauthorized", None)));
    let put = app.put_offering_raw("x", "bsk_nope", rust_101().to_string()).await;
    assert_eq!(put.status, 401);
    // The scheme's name is case-insensitive (RFC 9110); the key is not.
    let url = format!("{}/v1/offerings/x", app.address);
    let lower = app.client.get(&url).header("authorization", format!("bearer {}", app.api_key)).send().await.unwrap();
    assert_eq!(lower.status(), 404, "authenticated, and x does not exist");
    let upper = app.client.get(&url).header("authorization", format!("Bearer {}", app.api_key.to_uppercase()));
    assert_eq!(upper.send().await.unwrap().status(), 401);
    assert_eq!(app.get_offering("x").await.status, 404, "and the refused PUT stored nothing");
}

#[tokio::test]
async fn another_tenants_offering_is_not_found() {
    let app = TestApp::spawn().await;
    app.put_offering("rust-101-mar", &rust_101()).await;
    let other = app.other_tenant_key().await;
    let seen = app.get_offering_as("rust-101-mar", &other).await;
    assert_eq!((seen.status, seen.error()), (404, ("not_found", None)));
    // The other tenant's own offering of the same id is its own.
    let mut theirs = rust_101();
    theirs["title"] = json!("Theirs");
    assert_eq!(app.put_offering_raw("rust-101-mar", &other, theirs.to_string()).await.status, 201);
    assert_eq!(app.get_offering("rust-101-mar").await.body["title"], "Rust 101 — March cohort");
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"amount": "1.005", "currency": "USD"}), "price.amount"),
        (json!({"amount": "10.5", "currency": "JPY"}), "price.amount"),
        (json!({"amount": "-1.00", "currency": "USD"}), "price.amount"),
        (json!({"amount": "1.00", "currency": "XYZ"}), "price.currency"),
        (json!({"amount": 49, "currency": "USD"}), "price.amount"),
    ];
    for (price, field) in cases {
        let mut body = rust_101();
        body["price"] = price.clone();
        let a = app.put_offering("bad", &body).await;
        assert_eq!((a.status, a.error()), (400, ("invalid_request", Some(field))), "price {price}");
    }
    let mut body = rust_101();
    body["capacity"] = json!(-1);
    let a = app.put_offering("bad", &body).await;
    assert_eq!((a.status, a.error()), (400, ("invalid_request", Some("capacity"))));
    body["capacity"] = json!("ten");
    assert_eq!(app.put_offering("bad", &body).await.error(), ("invalid_request", Some("capacity")));
    let mut body = rust_101();
    body["kind"] = json!("webinar");
    assert_eq!(app.put_offering("bad", &body).await.error(), ("invalid_request", Some("kind")));
    let mut body = rust_101();
    body.as_object_mut().unwrap().remove("title");
    assert_eq!(app.put_offering("bad", &body).await.error(), ("invalid_request", Some("title")));
    let a = app.put_offering_raw("bad", &app.api_key, "{not json".into()).await;
    assert_eq!((a.status, a.error()), (400, ("invalid_request", None)), "no field to name");
    let huge = json!({"title": "x".repeat(100_000), "price": {"amount": "1.00", "currency": "USD"}});
    let a = app.put_offering("bad", &huge).await;
    assert_eq!((a.status, a.error().0), (413, "invalid_request"));

    assert_eq!(app.get_offering("bad").await.status, 404, "none of them stored anything");
}

#[tokio::test]
async fn capacity_cannot_drop_below_the_seats_taken() {
    let app = TestApp::spawn().await;
    app.put_offering("c", &rust_101()).await;
    // Seats are taken by purchases; set the counter directly until they exist.
    sqlx::query("UPDATE offerings SET seats_taken = 5 WHERE id = 'c'").execute(&app.db.pool).await.unwrap();
    let mut smaller = rust_101();
    smaller["capacity"] = json!(4);
    let a = app.put_offering("c", &smaller).await;
    assert_eq!((a.status, a.error().0), (409, "conflict"));
    assert_eq!(app.get_offering("c").await.body["capacity"], 30);
}

#[tokio::test]
async fn unknown_routes_answer_in_the_error_shape() {
    let app = TestApp::spawn().await;
    let a = app.send(reqwest::Method::GET, "/v1/nothing-here", Some(&app.api_key), None).await;
    assert_eq!((a.status, a.error().0), (404, "not_found"));
    let h = app.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!((h.status, h.body["status"].as_str()), (200, Some("ok")));
    let r = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, 200);
    let m = app.send(reqwest::Method::DELETE, "/v1/purchases", Some(&app.api_key), None).await;
    assert_eq!((m.status, m.error()), (405, ("invalid_request", None)), "a method the route does not answer");
}
