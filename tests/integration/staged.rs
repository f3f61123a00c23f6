//! Staged writes (effect outcomes, payment updates, reservations, seat
//! activations, the refund's record) run once per completion batch: they
//! must find their rows by index, not by reading the whole table, on a table
//! of a few thousand rows as on one of millions.

use bursar::db::{effects, purchases};
use serde_json::{Value, json};

use crate::app::TestApp;

/// Plan nodes that read the whole of `effects`, `purchases` or `seats`.
fn whole_table_reads(plan: &Value, found: &mut Vec<String>) {
    match plan {
        Value::Object(node) => {
            let relation = node.get("Relation Name").and_then(Value::as_str).unwrap_or_default();
            if node.get("Node Type") == Some(&json!("Seq Scan"))
                && ["effects", "purchases", "seats"].contains(&relation)
            {
                found.push(relation.to_owned());
            }
            node.values().for_each(|v| whole_table_reads(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| whole_table_reads(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn staged_writes_find_their_rows_by_index_in_a_table_of_thousands() {
    let app = TestApp::spawn().await;
    let offering = json!({"title": "Rust 101", "price": {"amount": "49.00", "currency": "USD"}, "capacity": null});
    assert_eq!(app.put_offering("rust-101", &offering).await.status, 201);
    let body = json!({"offering_id": "rust-101", "customer": {"email": "ana@example.org"},
                      "payment": {"provider": "sandbox", "payment_method": "pm_sandbox_ok"}});
    let id = app.post_purchase(Some("p"), &body).await.body["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "completed").await;
    // Five thousand more like it, each with a run, an effect and a seat, as a
    // new install has after a few days.
    sqlx::raw_sql(
        "INSERT INTO runs (id, tenant_id, workflow, version, idempotency_key, status, step, context)
         SELECT gen_random_uuid(), tenant_id, workflow, version, 'clone-' || g, 'succeeded', step, context
         FROM (SELECT * FROM runs LIMIT 1) r, generate_series(1, 5000) g;
         INSERT INTO effects (key, run_id, step, name, status)
         SELECT 'clone:' || id, id, 'authorize', 'authorize', 'succeeded' FROM runs WHERE idempotency_key LIKE 'clone-%';
         INSERT INTO purchases (id, tenant_id, offering_id, quantity, customer_id, currency, total_minor, provider,
                                payment_method, enrollment_mode, run_id)
         SELECT gen_random_uuid(), p.tenant_id, p.offering_id, 1, p.customer_id, p.currency, p.total_minor, p.provider,
                p.payment_method, p.enrollment_mode, r.id
         FROM (SELECT * FROM purchases LIMIT 1) p, runs r WHERE r.idempotency_key LIKE 'clone-%';
         INSERT INTO seats (id, tenant_id, purchase_id, position) SELECT gen_random_uuid(), tenant_id, id, 0 FROM purchases
         WHERE NOT EXISTS (SELECT FROM seats s WHERE s.purchase_id = purchases.id);
         ANALYZE;",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();

    let purchase: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM purchases LIMIT 1").fetch_one(&app.db.pool).await.unwrap();
    let seat: uuid::Uuid = sqlx::query_scalar("SELECT id FROM seats LIMIT 1").fetch_one(&app.db.pool).await.unwrap();
    let effect: String = sqlx::query_scalar("SELECT key FROM effects LIMIT 1").fetch_one(&app.db.pool).await.unwrap();
    let statements: [(&str, &str, Value); 7] = [
        ("SUCCEED", effects::SUCCEED, json!([{"key": effect, "response": {}}])),
        ("FAIL", effects::FAIL, json!([{"key": effect, "error": "no"}])),
        ("SET_PAYMENT", purchases::SET_PAYMENT, json!([{"id": purchase, "status": "authorized"}])),
        ("RESERVE_UNLIMITED", purchases::RESERVE_UNLIMITED, json!([{"id": purchase}])),
        ("ACTIVATE_SEAT", purchases::ACTIVATE_SEAT, json!([{"id": seat}])),
        ("RECORD_FULL_REFUND", purchases::RECORD_FULL_REFUND, json!([{"id": purchase}])),
        ("CANCEL_UNRESERVED_SEATS", purchases::CANCEL_UNRESERVED_SEATS, json!([{"id": purchase}])),
    ];
    let mut scanning = Vec::new();
    for (name, sql, rows) in statements {
        // EXPLAIN plans without running: nothing is changed.
        let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {sql}")))
            .bind(&rows)
            .fetch_one(&app.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut found = Vec::new();
        whole_table_reads(&plan, &mut found);
        if !found.is_empty() {
            scanning.push(format!("{name} reads the whole of {found:?}"));
        }
    }
    assert!(scanning.is_empty(), "{scanning:#?}");
}
