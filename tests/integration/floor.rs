//! The floor benchmark's SQL (src/bench/floor/) runs against the schema as it
//! is: a migration that breaks it fails here, not in a later benchmark run.

use crate::support::TestDb;

#[tokio::test]
async fn the_floor_benchmark_carries_every_purchase_through_and_pays_once() {
    let db = TestDb::new().await;
    // Needs pgbench on PATH (Debian: it comes with the postgresql package).
    let figures = bursar::bench::floor::measure(&db.pool, &db.url, 64, 8, 2).await.unwrap();
    assert_eq!(figures.purchases, 256, "rounded up to whole batches: 8 per batch, 2 clients, 16 creating");
    assert!(figures.creates_per_sec > 0.0 && figures.workflow_per_sec > 0.0, "{figures:?}");
}
