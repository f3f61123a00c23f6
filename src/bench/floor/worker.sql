-- A batch of purchases through the workflow, as little as it can be while
-- every guarantee holds: a lease before any work, the effect of each
-- external call recorded (pending) in a commit before the call and its result
-- in one after, the books of the provider, a history row per step, the state
-- of the run after each commit. Every statement covers the whole batch and
-- commits on its own, as the batched completions of Bursar do, and the result
-- of a step shares a commit with the effect of the next call. Left out, so
-- this is a floor: finding the due runs, every read, the LMS call, the HTTP
-- around it all and the application.
-- (pgbench takes a colon followed by a name for a variable, even inside a
-- string literal: hence the concat_ws below.)
SELECT nextval('floor_batches') AS k \gset
\set lo :k * :batch + 1
\set hi (:k + 1) * :batch

-- Claim: the lease.
UPDATE runs SET status = 'running', attempt = 1, wake_at = NULL, lease_owner = 'floor', lease_token = lease_token + 1,
       lease_expires_at = clock_timestamp() + interval '30 seconds', attempt_started_at = clock_timestamp(),
       updated_at = clock_timestamp()
WHERE id IN (SELECT floor_id(2, n) FROM generate_series(:lo::bigint, :hi::bigint) AS n);

-- reserve done, the effect of authorize begins.
WITH ids AS (SELECT n, floor_id(1, n) AS purchase, floor_id(2, n) AS run FROM generate_series(:lo::bigint, :hi::bigint) AS n),
reserved AS (UPDATE purchases p SET seats_reserved = true, updated_at = clock_timestamp() FROM ids WHERE p.id = ids.purchase),
history AS (INSERT INTO run_history (run_id, step, attempt, lease_token, worker, started_at, outcome)
            SELECT run, 'reserve', 1, 1, 'floor', clock_timestamp(), concat_ws(':', 'next', 'ok') FROM ids),
effect AS (INSERT INTO effects (key, run_id, step, name, status)
           SELECT concat_ws(':', run, 'authorize', 'authorize'), run, 'authorize', 'authorize', 'pending' FROM ids)
UPDATE runs r SET step = 'authorize', lease_expires_at = clock_timestamp() + interval '30 seconds',
       attempt_started_at = clock_timestamp(), updated_at = clock_timestamp()
FROM ids WHERE r.id = ids.run;

-- The provider authorizes (the books of the sandbox).
WITH ids AS (SELECT n, floor_id(1, n) AS purchase, floor_id(2, n) AS run FROM generate_series(:lo::bigint, :hi::bigint) AS n),
request AS (INSERT INTO sandbox_requests (idempotency_key, operation, reference, result)
            SELECT concat_ws(':', run, 'authorize', 'authorize'), 'authorize', 'sbx_' || n,
                   jsonb_build_object('result', 'authorized', 'reference', 'sbx_' || n) FROM ids)
INSERT INTO sandbox_charges (reference, tenant_id, purchase_id, payment_method, currency, amount_minor, status)
SELECT 'sbx_' || n, '00000000-0000-7000-8000-000000000001', purchase, 'pm_sandbox_ok', 'USD', 4900, 'authorized' FROM ids;

-- authorize done, the effect of capture begins.
WITH ids AS (SELECT n, floor_id(1, n) AS purchase, floor_id(2, n) AS run FROM generate_series(:lo::bigint, :hi::bigint) AS n),
done AS (UPDATE effects e SET status = 'succeeded', updated_at = clock_timestamp(),
                response = jsonb_build_object('result', 'authorized', 'reference', 'sbx_' || n)
         FROM ids WHERE e.key = concat_ws(':', run, 'authorize', 'authorize')),
paid AS (UPDATE purchases p SET payment_status = 'authorized', payment_reference = 'sbx_' || n, authorized_minor = 4900,
                updated_at = clock_timestamp() FROM ids WHERE p.id = ids.purchase),
history AS (INSERT INTO run_history (run_id, step, attempt, lease_token, worker, started_at, outcome)
            SELECT run, 'authorize', 1, 1, 'floor', clock_timestamp(), concat_ws(':', 'next', 'ok') FROM ids),
effect AS (INSERT INTO effects (key, run_id, step, name, status)
           SELECT concat_ws(':', run, 'capture', 'capture'), run, 'capture', 'capture', 'pending' FROM ids)
UPDATE runs r SET step = 'capture', context = r.context || jsonb_build_object('payment_reference', 'sbx_' || n),
       lease_expires_at = clock_timestamp() + interval '30 seconds', attempt_started_at = clock_timestamp(),
       updated_at = clock_timestamp()
FROM ids WHERE r.id = ids.run;

-- The provider captures.
WITH ids AS (SELECT n, floor_id(2, n) AS run FROM generate_series(:lo::bigint, :hi::bigint) AS n),
request AS (INSERT INTO sandbox_requests (idempotency_key, operation, reference, result)
            SELECT concat_ws(':', run, 'capture', 'capture'), 'capture', 'sbx_' || n, jsonb_build_object('amount_minor', 4900) FROM ids)
UPDATE sandbox_charges c SET status = 'captured', captured_minor = 4900, updated_at = clock_timestamp()
FROM ids WHERE c.reference = 'sbx_' || n;

-- capture done, the effect of the enrollment begins.
WITH ids AS (SELECT n, floor_id(1, n) AS purchase, floor_id(2, n) AS run FROM generate_series(:lo::bigint, :hi::bigint) AS n),
done AS (UPDATE effects e SET status = 'succeeded', response = jsonb_build_object('amount_minor', 4900), updated_at = clock_timestamp()
         FROM ids WHERE e.key = concat_ws(':', run, 'capture', 'capture')),
paid AS (UPDATE purchases p SET payment_status = 'captured', captured_minor = 4900, updated_at = clock_timestamp()
         FROM ids WHERE p.id = ids.purchase),
history AS (INSERT INTO run_history (run_id, step, attempt, lease_token, worker, started_at, outcome)
            SELECT run, 'capture', 1, 1, 'floor', clock_timestamp(), concat_ws(':', 'next', 'ok') FROM ids),
effect AS (INSERT INTO effects (key, run_id, step, name, status)
           SELECT concat_ws(':', run, 'enroll', floor_id(4, n)), run, 'enroll', 'enroll', 'pending' FROM ids)
UPDATE runs r SET step = 'enroll', lease_expires_at = clock_timestamp() + interval '30 seconds',
       attempt_started_at = clock_timestamp(), updated_at = clock_timestamp()
FROM ids WHERE r.id = ids.run;

-- enroll done (the LMS call itself is left out), notify (the purchase.completed
-- webhook, the receipt and the enrollment mail), the run succeeds.
WITH ids AS (SELECT n, floor_id(1, n) AS purchase, floor_id(2, n) AS run, floor_id(4, n) AS seat
             FROM generate_series(:lo::bigint, :hi::bigint) AS n),
told AS (INSERT INTO outbox (run_id, tenant_id, dedup_key, channel, payload)
         SELECT run, '00000000-0000-7000-8000-000000000001', concat_ws(':', 'purchase', purchase, kind), channel,
                jsonb_build_object('type', kind, 'purchase_id', 'pur_' || purchase, 'to', 'learner' || n || '@floor.example',
                                   'course', 'Floor 101', 'url', 'https://lms.example/course/1')
         FROM ids, (VALUES ('completed', 'webhook'), ('receipt', 'email'), ('enrolled', 'email')) AS m(kind, channel)),
done AS (UPDATE effects e SET status = 'succeeded', response = '{}', updated_at = clock_timestamp()
         FROM ids WHERE e.key = concat_ws(':', run, 'enroll', seat)),
enrolled AS (UPDATE seats s SET status = 'active', enrolled_at = clock_timestamp() FROM ids WHERE s.id = ids.seat),
history AS (INSERT INTO run_history (run_id, step, attempt, lease_token, worker, started_at, outcome)
            SELECT run, step, 1, 1, 'floor', clock_timestamp(), concat_ws(':', 'next', 'ok') FROM ids, unnest(ARRAY['enroll', 'notify']) AS step)
UPDATE runs r SET status = 'succeeded', step = 'notify', lease_owner = NULL, lease_expires_at = NULL,
       attempt_started_at = NULL, finished_at = clock_timestamp(), updated_at = clock_timestamp()
FROM ids WHERE r.id = ids.run;

-- The messages delivered (the sending itself is left out) and recorded as
-- sent, the batch at once as the deliverer records them.
UPDATE outbox o SET status = 'sent', sent_at = clock_timestamp(), locked_until = NULL, attempts = attempts + 1
WHERE o.dedup_key IN (SELECT concat_ws(':', 'purchase', floor_id(1, n), kind)
                      FROM generate_series(:lo::bigint, :hi::bigint) AS n,
                           unnest(ARRAY['created', 'completed', 'receipt', 'enrolled']) AS kind);
