-- A purchase's create, as little as it can be: one statement, one commit, no
-- reads. The idempotency key with its response, the customer, the run, the
-- purchase, its seat and its purchase.created webhook; payloads the size of
-- Bursar's. Not the NOTIFY Bursar sends to wake a worker at once: workers
-- can poll, and in PostgreSQL 15 a NOTIFY serializes the commits that send
-- one (a global lock held through the commit), which would make this a
-- measure of that lock: with it, 1,070-1,160 creates/s at 74% CPU on the
-- 2-core machine of docs/benchmarks.md, without it 1,300-1,400 at 90%.
WITH ids AS (
    SELECT n, floor_id(1, n) AS purchase, floor_id(2, n) AS run, floor_id(3, n) AS customer, floor_id(4, n) AS seat,
           '00000000-0000-7000-8000-000000000001'::uuid AS tenant, 'learner' || n || '@floor.example' AS email
    FROM nextval('floor_purchases') AS n
), key AS (
    INSERT INTO idempotency_keys (tenant_id, endpoint, key, request_hash, status_code, response)
    SELECT tenant, 'POST /v1/purchases', 'floor-' || n, sha256(n::text::bytea), 201,
           jsonb_build_object('id', 'pur_' || purchase, 'run', jsonb_build_object('id', 'run_' || run, 'step', 'reserve', 'status', 'ready'),
             'seats', jsonb_build_array(jsonb_build_object('id', 'seat_' || seat, 'status', 'unassigned',
                        'assignee', jsonb_build_object('email', email, 'lms_user_id', null), 'enrolled_at', null)),
             'total', '{"amount": "49.00", "currency": "USD"}'::jsonb, 'status', 'processing', 'failure', null,
             'payment', '{"status": "pending", "captured": {"amount": "0.00", "currency": "USD"}, "provider": "sandbox", "refunded": {"amount": "0.00", "currency": "USD"}, "reference": null, "next_action": null}'::jsonb,
             'quantity', 1, 'created_at', clock_timestamp(), 'customer_id', 'cus_' || customer, 'offering_id', 'floor-101')
    FROM ids
), customer AS (
    INSERT INTO customers (id, tenant_id, email) SELECT customer, tenant, email FROM ids
    ON CONFLICT (tenant_id, email) DO UPDATE SET email = EXCLUDED.email
    RETURNING id
), run AS (
    INSERT INTO runs (id, tenant_id, workflow, version, idempotency_key, status, step, wake_at, context)
    SELECT run, tenant, 'purchase', 1, 'purchase:' || purchase, 'ready', 'reserve', clock_timestamp(),
           jsonb_build_object('purchase_id', purchase, 'purchase', jsonb_build_object('id', purchase, 'currency', 'USD',
             'provider', 'sandbox', 'quantity', 1, 'tenant_id', tenant, 'offering_id', 'floor-101', 'total_minor', 4900,
             'customer_email', email, 'payment_method', 'pm_sandbox_ok'))
    FROM ids
    RETURNING id
), purchase AS (
    INSERT INTO purchases (id, tenant_id, offering_id, quantity, customer_id, currency, total_minor, provider,
                           payment_method, enrollment_mode, run_id)
    SELECT ids.purchase, tenant, 'floor-101', 1, customer.id, 'USD', 4900, 'sandbox', 'pm_sandbox_ok', 'immediate', run.id
    FROM ids, customer, run
    RETURNING id
), seat AS (
    INSERT INTO seats (id, tenant_id, purchase_id, position, assignee_email)
    SELECT seat, tenant, purchase.id, 1, email FROM ids, purchase
)
INSERT INTO outbox (tenant_id, dedup_key, channel, payload)
SELECT tenant, concat_ws(':', 'purchase', purchase, 'created'), 'webhook',
       jsonb_build_object('type', 'purchase.created', 'data', jsonb_build_object('purchase_id', 'pur_' || purchase,
         'offering_id', 'floor-101', 'status', 'processing'))
FROM ids;
