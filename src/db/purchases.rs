//! Customers, purchases, seats and the idempotency keys of their requests.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::db::RUNS_CHANNEL;
use crate::db::runs::NewRun;
use crate::domain::purchase::NewPurchase;

pub struct Insert<'a> {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub currency: &'a str,
    pub total_minor: i64,
    pub purchase: &'a NewPurchase,
    /// One per unit, in position order.
    pub seat_ids: &'a [Uuid],
    pub created_at: DateTime<Utc>,
    /// The `purchase.created` webhook, queued in the outbox with the purchase.
    pub created_event: &'a Value,
}

/// The request an Idempotency-Key names, and the answer to store for it.
pub struct Answer<'a> {
    pub endpoint: &'a str,
    pub key: &'a str,
    pub request_hash: &'a [u8],
    /// The 201 response, all but its `customer_id`, which only this statement
    /// knows when the customer already exists: it is set here as `cus_<hex>`,
    /// the API's format (`api::ids`), and by the caller from what is returned.
    pub response: &'a Value,
}

/// Creates a purchase in one statement and one commit, unless its
/// Idempotency-Key is taken: the run that carries it out (with the NOTIFY
/// that wakes a worker), its customer, found or created for (tenant, email)
/// and linked to the LMS user id when one becomes known, the purchase, a seat
/// per unit (assigned in order, the rest unassigned), the `purchase.created`
/// webhook, and the key with its response. Returns the customer's id, or
/// `None` when the key was taken, by an earlier request or by a concurrent
/// one that committed first (its unique violation undoes all of this one).
pub async fn create(
    pool: &PgPool,
    run: &NewRun<'_>,
    p: &Insert<'_>,
    answer: &Answer<'_>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let new = p.purchase;
    let positions: Vec<i32> = (0..new.quantity as i32).collect();
    let emails: Vec<Option<&str>> =
        positions.iter().map(|&i| new.assignees.get(i as usize).and_then(|a| a.email.as_deref())).collect();
    let lms_users: Vec<Option<&str>> =
        positions.iter().map(|&i| new.assignees.get(i as usize).and_then(|a| a.lms_user_id.as_deref())).collect();
    let created = sqlx::query_scalar(
        "WITH fresh AS (
            SELECT WHERE NOT EXISTS (SELECT FROM idempotency_keys WHERE tenant_id = $1 AND endpoint = $2 AND key = $3)
         ),
         customer AS (
            INSERT INTO customers (id, tenant_id, email, name, lms_user_id) SELECT $5, $1, $6, $7, $8 FROM fresh
            ON CONFLICT (tenant_id, email) DO UPDATE SET
               name = COALESCE(excluded.name, customers.name),
               lms_user_id = COALESCE(excluded.lms_user_id, customers.lms_user_id)
            RETURNING id
         ),
         run AS (
            INSERT INTO runs (id, tenant_id, workflow, version, idempotency_key, status, step, wake_at, context)
            SELECT $9, $1, $10, $11, $12, 'ready', $13, clock_timestamp(), $14 FROM fresh
            RETURNING id
         ),
         purchase AS (
            INSERT INTO purchases (id, tenant_id, offering_id, quantity, customer_id, currency, total_minor,
                                   provider, payment_method, enrollment_mode, run_id, created_at, updated_at)
            SELECT $15, $1, $16, $17, customer.id, $18, $19, $20, $21, $22, run.id, $23, $23 FROM customer, run
            RETURNING customer_id
         ),
         seat AS (
            INSERT INTO seats (id, tenant_id, purchase_id, position, assignee_email, assignee_lms_user_id)
            SELECT s.id, $1, $15, s.position, s.email, s.lms_user_id
            FROM purchase, unnest($24::uuid[], $25::int4[], $26::text[], $27::text[]) AS s(id, position, email, lms_user_id)
         ),
         announced AS (
            INSERT INTO outbox (tenant_id, dedup_key, channel, payload) SELECT $1, $28, 'webhook', $29 FROM purchase
            ON CONFLICT (dedup_key) DO NOTHING
         ),
         answered AS (
            INSERT INTO idempotency_keys (tenant_id, endpoint, key, request_hash, status_code, response)
            SELECT $1, $2, $3, $4, 201, jsonb_set($30, '{customer_id}', to_jsonb('cus_' || replace(customer_id::text, '-', '')))
            FROM purchase
         )
         SELECT customer_id FROM purchase CROSS JOIN LATERAL (SELECT pg_notify($31, '')) AS told",
    )
    .bind(p.tenant_id)
    .bind(answer.endpoint)
    .bind(answer.key)
    .bind(answer.request_hash)
    .bind(Uuid::now_v7())
    .bind(&new.email)
    .bind(&new.name)
    .bind(&new.lms_user_id)
    .bind(run.id)
    .bind(run.workflow)
    .bind(run.version)
    .bind(run.idempotency_key)
    .bind(run.step)
    .bind(run.context)
    .bind(p.id)
    .bind(&new.offering_id)
    .bind(new.quantity as i32)
    .bind(p.currency)
    .bind(p.total_minor)
    .bind(&new.provider)
    .bind(&new.payment_method)
    .bind(new.enrollment_mode)
    .bind(p.created_at)
    .bind(p.seat_ids)
    .bind(&positions)
    .bind(&emails)
    .bind(&lms_users)
    .bind(format!("purchase:{}:created", p.id))
    .bind(p.created_event)
    .bind(answer.response)
    .bind(RUNS_CHANNEL)
    .fetch_optional(pool)
    .await;
    match created {
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("idempotency_keys_pkey") => Ok(None),
        other => other,
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct PurchaseRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub offering_id: String,
    pub quantity: i32,
    pub customer_id: Uuid,
    pub currency: String,
    pub total_minor: i64,
    pub provider: String,
    pub payment_method: String,
    pub payment_status: String,
    pub payment_reference: Option<String>,
    pub authorized_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub next_action: Option<Value>,
    pub seats_reserved: bool,
    pub enrollment_mode: String,
    pub run_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// Derived from the run and the money (see STATUS).
    pub status: String,
    pub customer_email: String,
    // From the run, which says where the purchase is.
    pub run_status: String,
    pub run_step: String,
    pub failure_code: Option<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct SeatRow {
    pub id: Uuid,
    pub status: String,
    pub assignee_email: Option<String>,
    pub assignee_lms_user_id: Option<String>,
    pub enrolled_at: Option<DateTime<Utc>>,
}

/// A purchase's status as the API shows it: where its run is, and how much
/// of what was captured has been refunded. One definition, used for reading
/// and for filtering.
const STATUS: &str = "CASE
        WHEN r.status = 'succeeded' AND p.refunded_minor = 0 THEN 'completed'
        WHEN r.status = 'succeeded' AND p.refunded_minor < p.captured_minor THEN 'partially_refunded'
        WHEN r.status = 'succeeded' THEN 'refunded'
        WHEN r.status IN ('failed', 'cancelled') THEN r.status
        WHEN p.payment_status = 'requires_action' THEN 'requires_action'
        ELSE 'processing' END";

const PURCHASE_COLUMNS: &str = "p.id, p.tenant_id, p.offering_id, p.quantity, p.customer_id, p.currency, \
    p.total_minor, p.provider, p.payment_method, p.payment_status, p.payment_reference, p.authorized_minor, \
    p.captured_minor, p.refunded_minor, p.next_action, p.seats_reserved, p.enrollment_mode, p.run_id, \
    p.created_at, r.status AS run_status, r.step AS run_step, r.failure_code";

fn select() -> String {
    format!(
        "SELECT {PURCHASE_COLUMNS}, {STATUS} AS status, c.email AS customer_email
         FROM purchases p JOIN runs r ON r.id = p.run_id JOIN customers c ON c.id = p.customer_id"
    )
}

pub async fn get(conn: &mut PgConnection, tenant_id: Uuid, id: Uuid) -> Result<Option<PurchaseRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{} WHERE p.tenant_id = $1 AND p.id = $2", select())))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// For a step: the purchase by id alone (the run already belongs to its tenant).
pub async fn by_id(pool: &PgPool, id: Uuid) -> Result<Option<PurchaseRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{} WHERE p.id = $1", select()))).bind(id).fetch_optional(pool).await
}

pub async fn seats(conn: &mut PgConnection, purchase_id: Uuid) -> Result<Vec<SeatRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, status, assignee_email, assignee_lms_user_id, enrolled_at FROM seats
         WHERE purchase_id = $1 ORDER BY position",
    )
    .bind(purchase_id)
    .fetch_all(conn)
    .await
}

pub struct ListFilter {
    pub customer_id: Option<Uuid>,
    pub status: Option<String>,
    /// Purchases older than this one (keyset pagination on the time-ordered id).
    pub before: Option<Uuid>,
    pub limit: i64,
}

pub async fn list(pool: &PgPool, tenant_id: Uuid, f: &ListFilter) -> Result<Vec<PurchaseRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} WHERE p.tenant_id = $1 AND ($2::uuid IS NULL OR p.customer_id = $2) AND ($3::uuid IS NULL OR p.id < $3)
           AND ($5::text IS NULL OR {STATUS} = $5)
         ORDER BY p.id DESC LIMIT $4",
        select()
    )))
    .bind(tenant_id)
    .bind(f.customer_id)
    .bind(f.before)
    .bind(f.limit)
    .bind(&f.status)
    .fetch_all(pool)
    .await
}

/// Takes the purchase's seats from its offering, once: a retried step finds
/// them reserved. False when the offering has too few seats left.
pub async fn reserve_seats(pool: &PgPool, purchase_id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (reserved, tenant_id, offering_id, quantity): (bool, Uuid, String, i32) = sqlx::query_as(
        "SELECT seats_reserved, tenant_id, offering_id, quantity FROM purchases WHERE id = $1 FOR UPDATE",
    )
    .bind(purchase_id)
    .fetch_one(&mut *tx)
    .await?;
    if reserved {
        return Ok(true);
    }
    let taken = sqlx::query(
        "UPDATE offerings SET seats_taken = seats_taken + $3, updated_at = clock_timestamp()
         WHERE tenant_id = $1 AND id = $2 AND (capacity IS NULL OR seats_taken + $3 <= capacity)",
    )
    .bind(tenant_id)
    .bind(&offering_id)
    .bind(quantity)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if taken {
        sqlx::query("UPDATE purchases SET seats_reserved = true, updated_at = clock_timestamp() WHERE id = $1")
            .bind(purchase_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(taken)
}

/// Staged (see `StepCtx::stage`) with rows `{id}`: reserves the purchase's
/// seats on an offering without a capacity, in the step's completion
/// transaction: a flag on the purchase, no counter, so purchases of one
/// offering do not queue on its row. KEY SHARE on the offering lets them run
/// side by side but waits for a capacity being set, whose recount then
/// includes this purchase. If a capacity was set first, the row is refused
/// and the step runs again down the guarded path.
pub const RESERVE_UNLIMITED: &str = "WITH x AS (SELECT id FROM jsonb_to_recordset($1) AS x(id uuid)),
     unlimited AS (
        SELECT p.id FROM x JOIN purchases p ON p.id = x.id
        JOIN offerings o ON o.tenant_id = p.tenant_id AND o.id = p.offering_id
        WHERE o.capacity IS NULL
        FOR KEY SHARE OF o
     ),
     reserved AS (
        UPDATE purchases SET seats_reserved = true, updated_at = clock_timestamp()
        WHERE id IN (SELECT id FROM unlimited) AND NOT seats_reserved
        RETURNING id
     )
     SELECT bursar_refuse('the offering was given a capacity while its seat was being reserved')
     FROM x JOIN purchases p ON p.id = x.id
     WHERE x.id NOT IN (SELECT id FROM unlimited) AND NOT p.seats_reserved";

/// Gives the purchase's seats back to its offering, once, and cancels them.
pub async fn release_seats(pool: &PgPool, purchase_id: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    give_back_seats(&mut tx, purchase_id).await?;
    tx.commit().await
}

/// `release_seats` in the caller's transaction.
async fn give_back_seats(conn: &mut PgConnection, purchase_id: Uuid) -> Result<(), sqlx::Error> {
    let released: Option<(Uuid, String, i32)> = sqlx::query_as(
        "UPDATE purchases SET seats_reserved = false, updated_at = clock_timestamp()
         WHERE id = $1 AND seats_reserved RETURNING tenant_id, offering_id, quantity",
    )
    .bind(purchase_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((tenant_id, offering_id, quantity)) = released {
        // Only limited offerings keep a counter (see reserve_unlimited).
        sqlx::query(
            "UPDATE offerings SET seats_taken = seats_taken - $3 WHERE tenant_id = $1 AND id = $2 AND capacity IS NOT NULL",
        )
            .bind(tenant_id)
            .bind(&offering_id)
            .bind(quantity)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("UPDATE seats SET status = 'cancelled' WHERE purchase_id = $1 AND status = 'unassigned'")
        .bind(purchase_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What a payment step learned from the provider: staged with rows
/// `{id, status, reference?, authorized_minor?, captured_minor?, next_action?}`
/// (see `PaymentUpdate`). Absent fields keep what is there; `next_action` is
/// cleared unless given.
pub const SET_PAYMENT: &str = "UPDATE purchases p SET payment_status = x.status,
            payment_reference = COALESCE(x.reference, p.payment_reference),
            authorized_minor = COALESCE(x.authorized_minor, p.authorized_minor),
            captured_minor = COALESCE(x.captured_minor, p.captured_minor),
            next_action = x.next_action, updated_at = clock_timestamp()
     FROM jsonb_to_recordset($1)
          AS x(id uuid, status text, reference text, authorized_minor int8, captured_minor int8, next_action jsonb)
     WHERE p.id = x.id";

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PaymentUpdate {
    pub id: Uuid,
    pub status: &'static str,
    pub reference: Option<String>,
    pub authorized_minor: Option<i64>,
    pub captured_minor: Option<i64>,
    pub next_action: Option<Value>,
}

/// The purchase whose payment has this provider reference, for webhooks.
pub async fn by_reference(
    pool: &PgPool,
    tenant_id: Uuid,
    provider: &str,
    reference: &str,
) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as("SELECT id, run_id FROM purchases WHERE tenant_id = $1 AND provider = $2 AND payment_reference = $3")
        .bind(tenant_id)
        .bind(provider)
        .bind(reference)
        .fetch_optional(pool)
        .await
}

/// What the first request with this Idempotency-Key stored: its body's
/// hash, status and response.
pub async fn stored_answer(
    pool: &PgPool,
    tenant_id: Uuid,
    endpoint: &str,
    key: &str,
) -> Result<Option<(Vec<u8>, i32, Value)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT request_hash, status_code, response FROM idempotency_keys
         WHERE tenant_id = $1 AND endpoint = $2 AND key = $3",
    )
    .bind(tenant_id)
    .bind(endpoint)
    .bind(key)
    .fetch_optional(pool)
    .await
}

/// What enrolling and telling need, read together: the tenant's LMS target,
/// the offering as it is now (an operator may have fixed its course before
/// replaying), and the purchase's seats.
pub struct Fulfilment {
    pub lms: Value,
    pub title: String,
    pub lms_course_id: Option<String>,
    pub lms_url: Option<String>,
    pub seats: Vec<SeatRow>,
}

/// `None` when the offering is gone.
pub async fn fulfilment(
    pool: &PgPool,
    tenant_id: Uuid,
    purchase_id: Uuid,
    offering_id: &str,
) -> Result<Option<Fulfilment>, sqlx::Error> {
    #[derive(FromRow)]
    struct Row {
        lms: Option<Value>,
        title: String,
        lms_course_id: Option<String>,
        lms_url: Option<String>,
        #[sqlx(flatten)]
        seat: SeatRow,
    }
    // A purchase has at least one seat, so no row means no offering.
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT ts.lms, o.title, o.lms_course_id, o.lms_url,
                s.id, s.status, s.assignee_email, s.assignee_lms_user_id, s.enrolled_at
         FROM seats s
         JOIN offerings o ON o.tenant_id = $1 AND o.id = $3
         LEFT JOIN tenant_settings ts ON ts.tenant_id = $1
         WHERE s.purchase_id = $2
         ORDER BY s.position",
    )
    .bind(tenant_id)
    .bind(purchase_id)
    .bind(offering_id)
    .fetch_all(pool)
    .await?;
    let Some(first) = rows.first() else { return Ok(None) };
    Ok(Some(Fulfilment {
        lms: first.lms.clone().unwrap_or_else(super::settings::default_lms),
        title: first.title.clone(),
        lms_course_id: first.lms_course_id.clone(),
        lms_url: first.lms_url.clone(),
        seats: rows.into_iter().map(|r| r.seat).collect(),
    }))
}

/// Staged with rows `{id}`: the seat is enrolled at the LMS.
pub const ACTIVATE_SEAT: &str = "UPDATE seats s SET status = 'active', enrolled_at = clock_timestamp()
     FROM jsonb_to_recordset($1) AS x(id uuid)
     WHERE s.id = x.id AND s.status = 'unassigned'";

/// Staged with rows `{id}`: the whole capture was refunded (the refund
/// compensation). The seats are refunded and given back; a limited
/// offering's counter drops by the seats its refunded purchases held.
/// Absolute, not incremental: recording it twice records it once.
pub const RECORD_FULL_REFUND: &str = "WITH x AS (SELECT id FROM jsonb_to_recordset($1) AS x(id uuid)),
     before AS (
        SELECT p.id, p.tenant_id, p.offering_id, p.quantity, p.seats_reserved
        FROM purchases p WHERE p.id IN (SELECT id FROM x) FOR UPDATE
     ),
     refunded AS (
        UPDATE purchases SET refunded_minor = captured_minor, payment_status = 'refunded', seats_reserved = false,
               updated_at = clock_timestamp()
        WHERE id IN (SELECT id FROM before)
     ),
     seats AS (
        UPDATE seats SET status = 'refunded'
        WHERE purchase_id IN (SELECT id FROM before) AND status IN ('unassigned', 'active')
     ),
     given_back AS (
        SELECT tenant_id, offering_id, sum(quantity) AS quantity FROM before WHERE seats_reserved
        GROUP BY tenant_id, offering_id
     )
     UPDATE offerings o SET seats_taken = o.seats_taken - g.quantity
     FROM given_back g
     WHERE o.tenant_id = g.tenant_id AND o.id = g.offering_id AND o.capacity IS NOT NULL";
