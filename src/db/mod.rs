//! Every SQL statement Bursar runs lives below this module, one file per table
//! group. Functions take an executor or a connection so callers decide the
//! transaction: the business row and the run it starts commit together.

pub mod effects;
pub mod maintenance;
pub mod runs;
pub mod signals;
pub mod tenants;

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
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "engine",
    include_str!("../../migrations/0001_engine.sql"),
)];

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
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    migrator().run(pool).await
}

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.application_name("bursar"))
        .await
}
