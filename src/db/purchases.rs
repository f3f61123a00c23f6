//! Customers, purchases, seats and the idempotency keys of their requests.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::db::RUNS_CHANNEL;
use crate::db::runs::NewRun;
use crate::domain::purchase::NewPurchase;

/// A purchase to create, with the run that carries it out and the answer to
/// store under its request's Idempotency-Key. Owned: it waits in the API's
/// create writer (`api::creates`) until written.
pub struct Create {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub currency: String,
    pub total_minor: i64,
    pub purchase: NewPurchase,
    /// One per unit, in position order.
    pub seat_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    /// The `purchase.created` webhook, queued in the outbox with the purchase.
    pub created_event: Value,
    pub run: NewRun,
    pub endpoint: &'static str,
    pub key: String,
    pub request_hash: Vec<u8>,
    /// The 201 response, all but its `customer_id`, which only the statement
    /// knows when the customer already exists: it is set there as `cus_<hex>`,
    /// the API's format (`api::ids`), and by the caller from what is returned.
    pub response: Value,
}

/// Creates purchases in one statement and one commit, each unless its
/// Idempotency-Key is taken: the run that carries it out (with one NOTIFY
/// that wakes a worker), its customer, found or created for (tenant, email)
/// and linked to the LMS user id when one becomes known, the purchase, a seat
/// per unit (assigned in order, the rest unassigned), the `purchase.created`
/// webhook, and the key with its response. Returns the customer's id by
/// purchase id; a purchase missing from it was not created because an
/// earlier request had taken its key. A key may appear once per call. A key
/// taken by a concurrent statement that commits first fails the whole call
/// with a unique violation on `idempotency_keys_pkey` (see `key_taken`).
pub async fn create_many(pool: &PgPool, creates: &[&Create]) -> Result<HashMap<Uuid, Uuid>, sqlx::Error> {
    let mut seats = SeatColumns::default();
    for c in creates {
        for (position, &id) in c.seat_ids.iter().enumerate() {
            let assignee = c.purchase.assignees.get(position);
            seats.purchase_ids.push(c.id);
            seats.ids.push(id);
            seats.positions.push(position as i32);
            seats.emails.push(assignee.and_then(|a| a.email.as_deref()));
            seats.lms_users.push(assignee.and_then(|a| a.lms_user_id.as_deref()));
        }
    }
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "WITH i AS (
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::uuid[], $6::text[], $7::text[],
                                 $8::text[], $9::uuid[], $10::text[], $11::int4[], $12::text[], $13::text[],
                                 $14::jsonb[], $15::uuid[], $16::text[], $17::int4[], $18::text[], $19::int8[],
                                 $20::text[], $21::text[], $22::text[], $23::timestamptz[], $24::jsonb[], $25::jsonb[])
              AS i(tenant_id, endpoint, key, request_hash, customer_id, email, name, lms_user_id, run_id, workflow,
                   version, run_key, step, context, id, offering_id, quantity, currency, total_minor, provider,
                   payment_method, enrollment_mode, created_at, created_event, response)
         ),
         fresh AS (
            SELECT i.* FROM i WHERE NOT EXISTS (
                SELECT FROM idempotency_keys k WHERE k.tenant_id = i.tenant_id AND k.endpoint = i.endpoint AND k.key = i.key)
         ),
         -- One row per customer: a statement may not change a row twice. Its requests came at
         -- once, so which one's name is kept is as undefined as between any concurrent two.
         customer AS (
            INSERT INTO customers (id, tenant_id, email, name, lms_user_id)
            SELECT (array_agg(customer_id))[1], tenant_id, email,
                   (array_agg(name) FILTER (WHERE name IS NOT NULL))[1],
                   (array_agg(lms_user_id) FILTER (WHERE lms_user_id IS NOT NULL))[1]
            FROM fresh GROUP BY tenant_id, email ORDER BY tenant_id, email
            ON CONFLICT (tenant_id, email) DO UPDATE SET
               name = COALESCE(excluded.name, customers.name),
               lms_user_id = COALESCE(excluded.lms_user_id, customers.lms_user_id)
            RETURNING id, tenant_id, email
         ),
         run AS (
            INSERT INTO runs (id, tenant_id, workflow, version, idempotency_key, status, step, wake_at, context)
            SELECT run_id, tenant_id, workflow, version, run_key, 'ready', step, clock_timestamp(), context FROM fresh
            RETURNING id
         ),
         purchase AS (
            INSERT INTO purchases (id, tenant_id, offering_id, quantity, customer_id, currency, total_minor,
                                   provider, payment_method, enrollment_mode, run_id, created_at, updated_at)
            SELECT f.id, f.tenant_id, f.offering_id, f.quantity, c.id, f.currency, f.total_minor, f.provider,
                   f.payment_method, f.enrollment_mode, run.id, f.created_at, f.created_at
            FROM fresh f JOIN run ON run.id = f.run_id JOIN customer c ON c.tenant_id = f.tenant_id AND c.email = f.email
            RETURNING id, customer_id
         ),
         seat AS (
            INSERT INTO seats (id, tenant_id, purchase_id, position, assignee_email, assignee_lms_user_id)
            SELECT s.id, f.tenant_id, s.purchase_id, s.position, s.email, s.lms_user_id
            FROM unnest($26::uuid[], $27::uuid[], $28::int4[], $29::text[], $30::text[])
                   AS s(purchase_id, id, position, email, lms_user_id)
            JOIN purchase p ON p.id = s.purchase_id JOIN fresh f ON f.id = s.purchase_id
         ),
         announced AS (
            INSERT INTO outbox (tenant_id, dedup_key, channel, payload)
            SELECT f.tenant_id, 'purchase:' || f.id || ':created', 'webhook', f.created_event
            FROM fresh f JOIN purchase p ON p.id = f.id
            ON CONFLICT (dedup_key) DO NOTHING
         ),
         answered AS (
            INSERT INTO idempotency_keys (tenant_id, endpoint, key, request_hash, status_code, response)
            SELECT f.tenant_id, f.endpoint, f.key, f.request_hash, 201,
                   jsonb_set(f.response, '{customer_id}', to_jsonb('cus_' || replace(p.customer_id::text, '-', '')))
            FROM fresh f JOIN purchase p ON p.id = f.id ORDER BY f.tenant_id, f.key
         )
         SELECT p.id, p.customer_id FROM purchase p CROSS JOIN (SELECT pg_notify($31, '')) AS told",
    )
    .bind(creates.iter().map(|c| c.tenant_id).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.endpoint).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.key.as_str()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.request_hash.as_slice()).collect::<Vec<_>>())
    .bind(creates.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.purchase.email.as_str()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.purchase.name.as_deref()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.purchase.lms_user_id.as_deref()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.run.id).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.run.workflow.as_str()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.run.version).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.run.idempotency_key.as_str()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.run.step.as_str()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| &c.run.context).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.id).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.purchase.offering_id.as_str()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.purchase.quantity as i32).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.currency.as_str()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.total_minor).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.purchase.provider.as_str()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.purchase.payment_method.as_str()).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.purchase.enrollment_mode).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| c.created_at).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| &c.created_event).collect::<Vec<_>>())
    .bind(creates.iter().map(|c| &c.response).collect::<Vec<_>>())
    .bind(&seats.purchase_ids)
    .bind(&seats.ids)
    .bind(&seats.positions)
    .bind(&seats.emails)
    .bind(&seats.lms_users)
    .bind(RUNS_CHANNEL)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

#[derive(Default)]
struct SeatColumns<'a> {
    purchase_ids: Vec<Uuid>,
    ids: Vec<Uuid>,
    positions: Vec<i32>,
    emails: Vec<Option<&'a str>>,
    lms_users: Vec<Option<&'a str>>,
}

/// Whether `create_many` failed because a concurrent request took one of its
/// keys first (nothing of that call was written).
pub fn key_taken(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(e) if e.constraint() == Some("idempotency_keys_pkey"))
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

/// The seats of purchases, in order, by purchase: one query for a whole page.
pub async fn seats_of(
    executor: impl sqlx::PgExecutor<'_>,
    purchase_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<SeatRow>>, sqlx::Error> {
    #[derive(FromRow)]
    struct Owned {
        purchase_id: Uuid,
        #[sqlx(flatten)]
        seat: SeatRow,
    }
    let rows: Vec<Owned> = sqlx::query_as(
        "SELECT purchase_id, id, status, assignee_email, assignee_lms_user_id, enrolled_at FROM seats
         WHERE purchase_id = ANY($1) ORDER BY purchase_id, position",
    )
    .bind(purchase_ids)
    .fetch_all(executor)
    .await?;
    let mut by_purchase: std::collections::HashMap<Uuid, Vec<SeatRow>> = std::collections::HashMap::new();
    for row in rows {
        by_purchase.entry(row.purchase_id).or_default().push(row.seat);
    }
    Ok(by_purchase)
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
        // A sold-out purchase's seats were cancelled; replayed, and finding
        // room now, it gets them back.
        sqlx::query(
            "WITH reserved AS (
                UPDATE purchases SET seats_reserved = true, updated_at = clock_timestamp() WHERE id = $1
             )
             UPDATE seats SET status = 'unassigned'
             WHERE purchase_id = $1 AND status = 'cancelled' AND enrolled_at IS NULL",
        )
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
        WHERE o.capacity IS NULL AND p.id = ANY (ARRAY(SELECT (r->>'id')::uuid FROM jsonb_array_elements($1) AS r))
        FOR KEY SHARE OF o
     ),
     reserved AS (
        UPDATE purchases SET seats_reserved = true, updated_at = clock_timestamp()
        WHERE id IN (SELECT id FROM unlimited) AND NOT seats_reserved
        RETURNING id
     ),
     -- A sold-out purchase's seats were cancelled; replayed, it gets them back.
     restored AS (
        UPDATE seats SET status = 'unassigned'
        WHERE purchase_id = ANY (ARRAY(SELECT id FROM reserved)) AND status = 'cancelled' AND enrolled_at IS NULL
     )
     SELECT bursar_refuse('the offering was given a capacity while its seat was being reserved')
     FROM x JOIN purchases p ON p.id = x.id
     WHERE x.id NOT IN (SELECT id FROM unlimited) AND NOT p.seats_reserved AND p.id = ANY (ARRAY(SELECT (r->>'id')::uuid FROM jsonb_array_elements($1) AS r))";

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
     WHERE p.id = x.id AND p.id = ANY (ARRAY(SELECT (r->>'id')::uuid FROM jsonb_array_elements($1) AS r))";

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

/// Staged with rows `{id}`: the purchase could not have its seats (sold
/// out), so they are cancelled. No counter changes: they were never
/// reserved (a purchase an earlier attempt did reserve keeps its seats).
pub const CANCEL_UNRESERVED_SEATS: &str = "UPDATE seats SET status = 'cancelled'
     WHERE purchase_id = ANY (ARRAY(
             SELECT p.id FROM purchases p
             WHERE p.id = ANY (ARRAY(SELECT (r->>'id')::uuid FROM jsonb_array_elements($1) AS r))
               AND NOT p.seats_reserved))
       AND status = 'unassigned'";

/// Staged with rows `{id}`: the seat is enrolled at the LMS.
pub const ACTIVATE_SEAT: &str = "UPDATE seats s SET status = 'active', enrolled_at = clock_timestamp()
     FROM jsonb_to_recordset($1) AS x(id uuid)
     WHERE s.id = x.id AND s.status = 'unassigned' AND s.id = ANY (ARRAY(SELECT (r->>'id')::uuid FROM jsonb_array_elements($1) AS r))";

/// Staged with rows `{id}`: the whole capture was refunded (the refund
/// compensation). The seats are refunded and given back; a limited
/// offering's counter drops by the seats its refunded purchases held.
/// Absolute, not incremental: recording it twice records it once.
pub const RECORD_FULL_REFUND: &str = "WITH before AS (
        SELECT p.id, p.tenant_id, p.offering_id, p.quantity, p.seats_reserved
        FROM purchases p WHERE p.id = ANY (ARRAY(SELECT (r->>'id')::uuid FROM jsonb_array_elements($1) AS r)) FOR UPDATE
     ),
     refunded AS (
        UPDATE purchases SET refunded_minor = captured_minor, payment_status = 'refunded', seats_reserved = false,
               updated_at = clock_timestamp()
        WHERE id = ANY (ARRAY(SELECT id FROM before))
     ),
     seats AS (
        UPDATE seats SET status = 'refunded'
        WHERE purchase_id = ANY (ARRAY(SELECT id FROM before)) AND status IN ('unassigned', 'active')
     ),
     given_back AS (
        SELECT tenant_id, offering_id, sum(quantity) AS quantity FROM before WHERE seats_reserved
        GROUP BY tenant_id, offering_id
     )
     UPDATE offerings o SET seats_taken = o.seats_taken - g.quantity
     FROM given_back g
     WHERE o.tenant_id = g.tenant_id AND o.id = g.offering_id AND o.capacity IS NOT NULL";
