use serde_json::{Value, json};

use crate::app::TestApp;

async fn app_with_offering(capacity: Value) -> TestApp {
    let app = TestApp::spawn().await;
    let offering = json!({
        "title": "Rust 101",
        "price": {"amount": "49.00", "currency": "USD"},
        "capacity": capacity,
        "lms": {"course_id": "42"}
    });
    assert_eq!(app.put_offering("rust-101", &offering).await.status, 201);
    app
}

fn purchase(method: &str) -> Value {
    json!({
        "offering_id": "rust-101",
        "quantity": 1,
        "customer": {"email": "ana@example.org", "name": "Ana", "lms_user_id": "1007"},
        "payment": {"provider": "sandbox", "payment_method": method}
    })
}

fn captured(charges: &Value) -> Vec<String> {
    charges["data"].as_array().unwrap().iter().map(|c| c["captured"]["amount"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_purchase_is_paid_captured_and_its_seat_enrolled() {
    let app = app_with_offering(json!(30)).await;
    let created = app.post_purchase(Some("order-1"), &purchase("pm_sandbox_ok")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("pur_"));
    assert_eq!(created.body["status"], "processing");
    assert_eq!(created.body["total"], json!({"amount": "49.00", "currency": "USD"}));
    assert!(created.body["customer_id"].as_str().unwrap().starts_with("cus_"));

    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["payment"]["status"], "captured");
    assert_eq!(done["payment"]["captured"], json!({"amount": "49.00", "currency": "USD"}));
    assert_eq!(done["seats"][0]["status"], "active");
    assert_eq!(done["seats"][0]["assignee"]["email"], "ana@example.org", "a single seat goes to the buyer");
    assert_eq!(done["run"]["status"], "succeeded");
    assert_eq!(done["failure"], Value::Null);
    assert_eq!(app.get_offering("rust-101").await.body["seats_taken"], 1);
    assert_eq!(captured(&app.sandbox_charges(&id).await.body), ["49.00"], "the provider captured it once");
}

#[tokio::test]
async fn the_same_key_and_body_answer_the_first_purchase_even_concurrently() {
    let app = app_with_offering(json!(null)).await;
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, key) = (app.client.clone(), format!("{}/v1/purchases", app.address), app.api_key.clone());
            tokio::spawn(async move {
                let res = client
                    .post(url)
                    .bearer_auth(key)
                    .header("Idempotency-Key", "retry-me")
                    .json(&purchase("pm_sandbox_ok"))
                    .send()
                    .await
                    .unwrap();
                (res.status().as_u16(), res.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for a in attempts {
        answers.push(a.await.unwrap());
    }
    assert!(answers.iter().all(|(status, _)| *status == 201), "{answers:?}");
    // The stored answer is the first one, byte for byte (the customer's id
    // and the time are filled in by the database for the stored copy).
    assert!(answers.iter().all(|(_, body)| *body == answers[0].1), "one purchase, one answer: {answers:?}");
    let id = answers[0].1["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "completed").await;
    let list = app.list_purchases("limit=10").await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(captured(&app.sandbox_charges(&id).await.body), ["49.00"]);

    let mut other = purchase("pm_sandbox_ok");
    other["quantity"] = json!(2);
    let mismatch = app.post_purchase(Some("retry-me"), &other).await;
    assert_eq!((mismatch.status, mismatch.error().0), (422, "idempotency_mismatch"));
    let mut elsewhere = purchase("pm_sandbox_ok");
    elsewhere["offering_id"] = json!("nope");
    let mismatch = app.post_purchase(Some("retry-me"), &elsewhere).await;
    assert_eq!((mismatch.status, mismatch.error().0), (422, "idempotency_mismatch"), "the key speaks first");
    // Before the body is judged, too: a taken key with a changed body is a
    // mismatch, whatever is wrong with the new body.
    let mut invalid = purchase("pm_sandbox_ok");
    invalid["quantity"] = json!(0);
    let mut unconfigured = purchase("pm_sandbox_ok");
    unconfigured["payment"]["provider"] = json!("stripe");
    for body in [invalid, unconfigured] {
        let mismatch = app.post_purchase(Some("retry-me"), &body).await;
        assert_eq!((mismatch.status, mismatch.error().0), (422, "idempotency_mismatch"), "{body}");
    }
    let missing = app.post_purchase(None, &purchase("pm_sandbox_ok")).await;
    assert_eq!((missing.status, missing.error()), (400, ("invalid_request", Some("Idempotency-Key"))));
}

#[tokio::test]
async fn fifty_concurrent_purchases_of_ten_seats_sell_exactly_ten() {
    let app = app_with_offering(json!(10)).await;
    let posts: Vec<_> = (0..50)
        .map(|i| {
            let (client, url, key) = (app.client.clone(), format!("{}/v1/purchases", app.address), app.api_key.clone());
            let mut body = purchase("pm_sandbox_ok");
            body["customer"]["email"] = json!(format!("learner{i}@example.org"));
            tokio::spawn(async move {
                let res = client.post(url).bearer_auth(key).header("Idempotency-Key", format!("k{i}")).json(&body);
                res.send().await.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for p in posts {
        ids.push(p.await.unwrap());
    }
    let mut completed = 0;
    let mut sold_out = 0;
    for id in &ids {
        let p = app.wait_for_purchase(id, |p| p["status"] == "completed" || p["status"] == "failed").await;
        let charges = app.sandbox_charges(id).await.body;
        if p["status"] == "completed" {
            completed += 1;
            assert_eq!(captured(&charges), ["49.00"]);
        } else {
            assert_eq!(p["failure"]["code"], "sold_out");
            assert_eq!(charges["data"], json!([]), "a sold-out purchase never reaches the provider");
            sold_out += 1;
        }
    }
    assert_eq!((completed, sold_out), (10, 40));
    assert_eq!(app.get_offering("rust-101").await.body["seats_taken"], 10);
}

#[tokio::test]
async fn a_declined_payment_releases_the_seats_and_fails() {
    let app = app_with_offering(json!(1)).await;
    let id =
        app.post_purchase(Some("d"), &purchase("pm_sandbox_declined")).await.body["id"].as_str().unwrap().to_owned();
    let failed = app.wait_for_status(&id, "failed").await;
    assert_eq!(failed["failure"]["code"], "payment_declined");
    assert_eq!(failed["payment"]["status"], "declined");
    assert_eq!(failed["seats"][0]["status"], "cancelled");
    assert_eq!(app.get_offering("rust-101").await.body["seats_taken"], 0, "the seat is back");
    assert_eq!(captured(&app.sandbox_charges(&id).await.body), ["0.00"]);
    // And so the one seat can still be sold.
    let ok = app.post_purchase(Some("ok"), &purchase("pm_sandbox_ok")).await.body["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&ok, "completed").await;
}

#[tokio::test]
async fn provider_outages_are_retried_and_lost_answers_resolved_without_charging_twice() {
    let app = app_with_offering(json!(null)).await;
    for method in ["pm_sandbox_flaky", "pm_sandbox_unknown"] {
        let id = app.post_purchase(Some(method), &purchase(method)).await.body["id"].as_str().unwrap().to_owned();
        let done = app.wait_for_status(&id, "completed").await;
        assert_eq!(done["payment"]["captured"]["amount"], "49.00", "{method}");
        let charges = app.sandbox_charges(&id).await.body;
        assert_eq!(charges["data"].as_array().unwrap().len(), 1, "{method}: one authorization at the provider");
        assert_eq!(captured(&charges), ["49.00"], "{method}: captured once");
    }
}

#[tokio::test]
async fn bad_purchase_requests_are_refused_and_store_nothing() {
    let app = app_with_offering(json!(null)).await;
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (json!({"quantity": -1}), 400, "invalid_request", Some("quantity")),
        (json!({"quantity": "two"}), 400, "invalid_request", Some("quantity")),
        (
            json!({"payment": {"provider": "bitcoin", "payment_method": "x"}}),
            400,
            "invalid_request",
            Some("payment.provider"),
        ),
        (
            json!({"payment": {"provider": "stripe", "payment_method": "pm_x"}}),
            422,
            "unprocessable",
            Some("payment.provider"),
        ),
        (json!({"customer": {"email": "not-an-email"}}), 400, "invalid_request", Some("customer.email")),
        (json!({"offering_id": "nope"}), 404, "not_found", Some("offering_id")),
        (json!({"enrollment": {"mode": "confirmation"}}), 400, "invalid_request", Some("enrollment.mode")),
        // PostgreSQL cannot store NUL in text.
        (
            json!({"customer": {"email": "ana@example.org", "name": "Ana\u{0}"}}),
            400,
            "invalid_request",
            Some("customer.name"),
        ),
    ];
    for (i, (change, status, kind, field)) in cases.into_iter().enumerate() {
        let mut body = purchase("pm_sandbox_ok");
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let a = app.post_purchase(Some(&format!("bad-{i}")), &body).await;
        assert_eq!((a.status, a.error()), (status, (kind, field)), "case {i}: {change}");
    }
    assert_eq!(app.list_purchases("").await.body["data"], json!([]));
    // A refused request did not use up its key.
    let ok = app.post_purchase(Some("bad-6"), &purchase("pm_sandbox_ok")).await;
    assert_eq!(ok.status, 201);
}

#[tokio::test]
async fn another_tenant_cannot_see_a_purchase_and_lists_page_with_a_cursor() {
    let app = app_with_offering(json!(null)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.post_purchase(Some(&format!("p{i}")), &purchase("pm_sandbox_ok")).await.body["id"].clone());
    }
    let other = app.other_tenant_key().await;
    let seen = app
        .send(reqwest::Method::GET, &format!("/v1/purchases/{}", ids[0].as_str().unwrap()), Some(&other), None)
        .await;
    assert_eq!(seen.status, 404);

    let first = app.list_purchases("limit=2").await.body;
    let page: Vec<_> = first["data"].as_array().unwrap().iter().map(|p| p["id"].clone()).collect();
    assert_eq!(page, [ids[2].clone(), ids[1].clone()], "newest first");
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app.list_purchases(&format!("limit=2&cursor={cursor}")).await.body;
    assert_eq!(second["data"][0]["id"], ids[0]);
    assert_eq!(second["next_cursor"], Value::Null);
    let customer = first["data"][0]["customer_id"].as_str().unwrap();
    let mine = app.list_purchases(&format!("customer_id={customer}&status=processing&limit=500")).await;
    assert_eq!(mine.status, 200);
    assert_eq!(app.list_purchases("status=bogus").await.error(), ("invalid_request", Some("status")));
    assert_eq!(app.list_purchases("limit=501").await.error(), ("invalid_request", Some("limit")));
    let not_a_number = app.list_purchases("limit=abc").await;
    assert_eq!((not_a_number.status, not_a_number.error()), (400, ("invalid_request", Some("limit"))));
    let path = "/v1/sandbox/charges";
    let unnamed = app.send(reqwest::Method::GET, path, Some(&app.api_key), None).await;
    assert_eq!((unnamed.status, unnamed.error()), (400, ("invalid_request", Some("purchase_id"))));
}

#[tokio::test]
async fn a_customer_is_made_once_per_email_and_linked_to_the_lms_user_when_known() {
    let app = app_with_offering(json!(null)).await;
    let mut first = purchase("pm_sandbox_ok");
    first["customer"] = json!({"email": "Ana@Example.org", "name": "Ana"});
    let a = app.post_purchase(Some("a"), &first).await.body;
    let b = app.post_purchase(Some("b"), &purchase("pm_sandbox_ok")).await.body;
    assert_eq!(a["customer_id"], b["customer_id"], "the same email (in any case) is the same customer");
    let b_again = app.post_purchase(Some("b"), &purchase("pm_sandbox_ok")).await;
    assert_eq!((b_again.status, b_again.body), (201, b), "the stored answer names the existing customer too");
    let lms_user: Option<String> =
        sqlx::query_scalar("SELECT lms_user_id FROM customers").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(lms_user.as_deref(), Some("1007"), "linked once a purchase named the LMS user");
    let other = app.other_tenant_key().await;
    let theirs = app
        .client
        .post(format!("{}/v1/purchases", app.address))
        .bearer_auth(other)
        .header("Idempotency-Key", "a")
        .json(&purchase("pm_sandbox_ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404, "another tenant has no such offering");
}

#[tokio::test]
async fn seats_of_an_unlimited_offering_are_counted_and_a_capacity_set_later_holds() {
    let app = app_with_offering(json!(null)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = purchase("pm_sandbox_ok");
        ids.push(app.post_purchase(Some(&format!("u{i}")), &body).await.body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_for_status(id, "completed").await;
    }
    assert_eq!(app.get_offering("rust-101").await.body["seats_taken"], 3);

    let mut limited = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}, "capacity": 2});
    let refused = app.put_offering("rust-101", &limited).await;
    assert_eq!((refused.status, refused.error().0), (409, "conflict"), "3 seats are taken");
    limited["capacity"] = json!(4);
    assert_eq!(app.put_offering("rust-101", &limited).await.body["seats_taken"], 3);

    // One seat is left. Two purchases in flight at once may take it in
    // either order, so the fifth is made once the fourth has it.
    let fourth =
        app.post_purchase(Some("u3"), &purchase("pm_sandbox_ok")).await.body["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&fourth, "completed").await;
    let fifth = app.post_purchase(Some("u4"), &purchase("pm_sandbox_ok")).await.body["id"].as_str().unwrap().to_owned();
    let sold_out = app.wait_for_status(&fifth, "failed").await;
    assert_eq!(sold_out["failure"]["code"], "sold_out");
    assert_eq!(app.get_offering("rust-101").await.body["seats_taken"], 4);
}

/// The reservation of an unlimited offering's seat is staged and commits
/// with the step; if a capacity was set in between, the staged statement
/// refuses (and with it the completion), so the step runs again down the
/// guarded path instead of taking a seat the new capacity did not count.
#[tokio::test]
async fn an_unlimited_reservation_is_refused_once_the_offering_has_a_capacity() {
    let app = app_with_offering(json!(null)).await;
    let id = app.post_purchase(Some("r1"), &purchase("pm_sandbox_ok")).await.body["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "completed").await;
    let purchase_id: uuid::Uuid = sqlx::query_scalar("UPDATE purchases SET seats_reserved = false RETURNING id")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let stage = |pool: sqlx::PgPool| async move {
        sqlx::query(bursar::db::purchases::RESERVE_UNLIMITED).bind(json!([{"id": purchase_id}])).execute(&pool).await
    };
    let reserved = || async {
        sqlx::query_scalar::<_, bool>("SELECT seats_reserved FROM purchases").fetch_one(&app.db.pool).await.unwrap()
    };

    sqlx::query("UPDATE offerings SET capacity = 5").execute(&app.db.pool).await.unwrap();
    let refused = stage(app.db.pool.clone()).await.expect_err("a capacity was set");
    assert!(refused.to_string().contains("given a capacity"), "{refused}");
    assert!(!reserved().await, "nothing was reserved");

    sqlx::query("UPDATE offerings SET capacity = NULL").execute(&app.db.pool).await.unwrap();
    stage(app.db.pool.clone()).await.unwrap();
    assert!(reserved().await);
    stage(app.db.pool.clone()).await.expect("reserving again is a no-op, not a refusal");
    assert!(reserved().await);
}

/// A capacity given to an offering after a purchase was made but before its
/// seats were reserved counts them.
#[tokio::test]
async fn a_capacity_set_between_the_purchase_and_its_reservation_counts_its_seat() {
    let mut app = TestApp::spawn_idle().await;
    let unlimited = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}, "capacity": null});
    assert_eq!(app.put_offering("rust-101", &unlimited).await.status, 201);
    let id = app.post_purchase(Some("r1"), &purchase("pm_sandbox_ok")).await.body["id"].as_str().unwrap().to_owned();
    let mut limited = unlimited.clone();
    limited["capacity"] = json!(5);
    assert_eq!(app.put_offering("rust-101", &limited).await.status, 200);

    app.start_worker(crate::support::fast_worker());
    app.wait_for_status(&id, "completed").await;
    let offering = app.get_offering("rust-101").await.body;
    assert_eq!((offering["capacity"].clone(), offering["seats_taken"].clone()), (json!(5), json!(1)), "{offering}");
}

/// The answer to a create is built from what was written, not read back:
/// it must say what a read says.
#[tokio::test]
async fn a_bulk_purchase_answers_what_was_stored_and_enrolls_the_assigned_seats() {
    let app = app_with_offering(json!(null)).await;
    let mut body = purchase("pm_sandbox_ok");
    body["quantity"] = json!(3);
    body["enrollment"] = json!({"assign_to": [{"email": "bo@example.org"}, {"lms_user_id": "2001"}]});
    let created = app.post_purchase(Some("bulk"), &body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["total"], json!({"amount": "147.00", "currency": "USD"}));
    assert_eq!(created.body["payment"]["status"], "pending");
    assert_eq!(created.body["run"]["step"], "reserve");

    let done = app.wait_for_status(&id, "completed").await;
    for field in ["id", "offering_id", "quantity", "total", "customer_id", "created_at"] {
        assert_eq!(created.body[field], done[field], "{field}");
    }
    assert_eq!(created.body["run"]["id"], done["run"]["id"]);
    let seats = |p: &Value| -> Vec<(Value, Value)> {
        p["seats"].as_array().unwrap().iter().map(|s| (s["id"].clone(), s["assignee"].clone())).collect()
    };
    assert_eq!(seats(&created.body), seats(&done));
    assert_eq!(done["seats"][0]["assignee"], json!({"email": "bo@example.org", "lms_user_id": null}));
    let statuses: Vec<&str> = done["seats"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["active", "active", "unassigned"], "seats past the list wait for an assignment");
    assert!(created.body["seats"].as_array().unwrap().iter().all(|s| s["status"] == "unassigned"));

    // A list shows each purchase as a read of it does, seats in order.
    let single = app.post_purchase(Some("single"), &purchase("pm_sandbox_ok")).await.body["id"].clone();
    let single = app.wait_for_status(single.as_str().unwrap(), "completed").await;
    let listed = app.list_purchases("").await.body;
    assert_eq!(listed["data"], json!([single, done]));
}

/// A sold-out purchase fails and its seats are cancelled; replayed once
/// there is room, it takes its seats back, is charged once and enrolled.
#[tokio::test]
async fn a_sold_out_purchase_replayed_once_there_is_room_gets_its_seat() {
    let app = app_with_offering(json!(1)).await;
    let first = app.post_purchase(Some("first"), &purchase("pm_sandbox_ok")).await.body["id"].clone();
    app.wait_for_status(first.as_str().unwrap(), "completed").await;
    let id =
        app.post_purchase(Some("second"), &purchase("pm_sandbox_ok")).await.body["id"].as_str().unwrap().to_owned();
    let failed = app.wait_for_status(&id, "failed").await;
    assert_eq!(failed["seats"][0]["status"], "cancelled");

    let bigger = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}, "capacity": 2});
    assert_eq!(app.put_offering("rust-101", &bigger).await.status, 200);
    let run = failed["run"]["id"].as_str().unwrap();
    let replay = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/ops/runs/{run}/replay"),
            Some(&app.api_key),
            Some(json!({"reason": "a seat was added"}).to_string()),
        )
        .await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["seats"][0]["status"], "active");
    assert_eq!(captured(&app.sandbox_charges(&id).await.body), ["49.00"]);
    assert_eq!(app.get_offering("rust-101").await.body["seats_taken"], 2);
}
