//! Every SQL statement Bursar runs lives below this module, one file per table
//! group. Functions take an executor or a connection so callers decide the
//! transaction: the business row and the run it starts commit together.

pub mod audit;
pub mod effects;
pub mod maintenance;
pub mod offerings;
pub mod outbox;
pub mod purchases;
pub mod runs;
pub mod sandbox;
pub mod settings;
pub mod signals;
pub mod tenants;
pub mod webhooks;

use std::borrow::Cow;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};

/// The channel a committed start, signal or replay notifies, so idle workers
/// claim at once instead of at their next poll.
pub const RUNS_CHANNEL: &str = "bursar_runs";

/// The migrations, compiled into the binary so a deploy cannot run against a
/// schema it does not know. Forward only: add a file, never edit one.
#[rustfmt::skip]
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "engine", include_str!("../../migrations/0001_engine.sql")),
    (2, "offerings", include_str!("../../migrations/0002_offerings.sql")),
    (3, "purchases", include_str!("../../migrations/0003_purchases.sql")),
    (4, "webhooks", include_str!("../../migrations/0004_webhooks.sql")),
    (5, "settings", include_str!("../../migrations/0005_settings.sql")),
    (6, "outbox_delivery", include_str!("../../migrations/0006_outbox_delivery.sql")),
    (7, "reserved_seats", include_str!("../../migrations/0007_reserved_seats.sql")),
    (8, "secret_rotation", include_str!("../../migrations/0008_secret_rotation.sql")),
    (9, "staged_writes", include_str!("../../migrations/0009_staged_writes.sql")),
];

pub fn migrator() -> Migrator {
    let migrations: Vec<Migration> = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                AssertSqlSafe(*sql).into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator { migrations: Cow::Owned(migrations), ..Migrator::DEFAULT }
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    migrator().run(pool).await
}

/// The database answers (readiness).
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.application_name("bursar"))
        .await
}

#[cfg(test)]
mod tests {
    /// A migration file that is not listed above would silently never run.
    #[test]
    fn every_migration_file_is_compiled_in_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = super::MIGRATIONS.iter().map(|(v, d, _)| format!("{v:04}_{d}.sql")).collect();
        assert_eq!(files, listed);
    }
}
