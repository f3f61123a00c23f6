//! Offerings, always scoped to their tenant.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{FromRow, PgExecutor, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct OfferingRow {
    pub id: String,
    pub title: String,
    pub price_amount: Decimal,
    pub currency: String,
    pub capacity: Option<i32>,
    pub kind: String,
    pub lms_course_id: Option<String>,
    pub lms_url: Option<String>,
    pub seats_taken: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct Upsert<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub price_amount: Decimal,
    pub currency: &'a str,
    pub capacity: Option<i32>,
    pub kind: &'a str,
    pub lms_course_id: Option<&'a str>,
    pub lms_url: Option<&'a str>,
}

pub enum Upserted {
    Created(OfferingRow),
    Updated(OfferingRow),
    /// The new capacity is below the seats already taken.
    BelowSeatsTaken {
        seats_taken: i32,
    },
}

/// Seats reserved by purchases: the counter for a limited offering, a count
/// of reserved purchases for one without a capacity (see
/// `purchases::reserve_unlimited`).
const SEATS_TAKEN: &str = "CASE WHEN o.capacity IS NOT NULL THEN o.seats_taken ELSE (
        SELECT coalesce(sum(p.quantity), 0)::int4 FROM purchases p
        WHERE p.tenant_id = o.tenant_id AND p.offering_id = o.id AND p.seats_reserved) END";

pub async fn upsert(pool: &PgPool, tenant_id: Uuid, o: &Upsert<'_>) -> Result<Upserted, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The row lock waits out unlimited reservations in flight (KEY SHARE),
    // so the count below includes every one of them.
    let existing: Option<(Option<i32>, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT o.capacity, {SEATS_TAKEN} FROM offerings o WHERE o.tenant_id = $1 AND o.id = $2 FOR UPDATE"
    )))
    .bind(tenant_id)
    .bind(o.id)
    .fetch_optional(&mut *tx)
    .await?;
    let taken = existing.map(|(_, taken)| taken);
    if let (Some(seats_taken), Some(capacity)) = (taken, o.capacity)
        && capacity < seats_taken
    {
        return Ok(Upserted::BelowSeatsTaken { seats_taken });
    }
    let row: OfferingRow = sqlx::query_as(
        "INSERT INTO offerings (tenant_id, id, title, price_amount, currency, capacity, kind, lms_course_id, lms_url)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant_id, id) DO UPDATE SET
            title = excluded.title, price_amount = excluded.price_amount, currency = excluded.currency,
            capacity = excluded.capacity, kind = excluded.kind, lms_course_id = excluded.lms_course_id,
            lms_url = excluded.lms_url, updated_at = clock_timestamp(),
            seats_taken = $10
         RETURNING id, title, price_amount, currency, capacity, kind, lms_course_id, lms_url, seats_taken,
                   created_at, updated_at",
    )
    .bind(tenant_id)
    .bind(o.id)
    .bind(o.title)
    .bind(o.price_amount)
    .bind(o.currency)
    .bind(o.capacity)
    .bind(o.kind)
    .bind(o.lms_course_id)
    .bind(o.lms_url)
    // The counter a limited offering goes on from (unused while unlimited).
    .bind(taken.unwrap_or(0))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(if taken.is_some() { Upserted::Updated(row) } else { Upserted::Created(row) })
}

/// The offering as the API shows it, with its seats taken counted.
pub async fn get_with_seats_taken(
    conn: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: &str,
) -> Result<Option<OfferingRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT o.id, o.title, o.price_amount, o.currency, o.capacity, o.kind, o.lms_course_id, o.lms_url,
                {SEATS_TAKEN} AS seats_taken, o.created_at, o.updated_at
         FROM offerings o WHERE o.tenant_id = $1 AND o.id = $2"
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The offering for a step or a purchase: its `seats_taken` is the raw
/// counter, meaningful only for a limited offering.
pub async fn get(conn: impl PgExecutor<'_>, tenant_id: Uuid, id: &str) -> Result<Option<OfferingRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, title, price_amount, currency, capacity, kind, lms_course_id, lms_url, seats_taken,
                created_at, updated_at
         FROM offerings WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The offering's capacity as it is now (`None` inside: unlimited); `None`
/// when the offering does not exist.
pub async fn capacity(pool: &PgPool, tenant_id: Uuid, id: &str) -> Result<Option<Option<i32>>, sqlx::Error> {
    sqlx::query_scalar("SELECT capacity FROM offerings WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await
}
