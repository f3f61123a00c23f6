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

pub async fn upsert(pool: &PgPool, tenant_id: Uuid, o: &Upsert<'_>) -> Result<Upserted, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let taken: Option<i32> =
        sqlx::query_scalar("SELECT seats_taken FROM offerings WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(tenant_id)
            .bind(o.id)
            .fetch_optional(&mut *tx)
            .await?;
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
            lms_url = excluded.lms_url, updated_at = clock_timestamp()
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
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(if taken.is_some() { Upserted::Updated(row) } else { Upserted::Created(row) })
}

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
