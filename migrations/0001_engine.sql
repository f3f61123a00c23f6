-- The durable workflow engine. The run table is the source of truth: a worker's
-- memory holds nothing that is not also here, so any process may die at any line.

CREATE TABLE runs (
    id                  uuid        PRIMARY KEY,
    -- The nil UUID marks runs that belong to no tenant (benchmarks, system work).
    tenant_id           uuid        NOT NULL,
    workflow            text        NOT NULL,
    version             integer     NOT NULL,
    idempotency_key     text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    status              text        NOT NULL CHECK (status IN
                          ('ready', 'running', 'waiting', 'succeeded', 'failed', 'cancelled', 'parked')),
    step                text        NOT NULL,
    -- Attempts of the current step, counted at claim time so a crash counts too.
    attempt             integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- When a ready run becomes due, or when a waiting run's deadline fires.
    wake_at             timestamptz,
    context             jsonb       NOT NULL DEFAULT '{}',
    waiting_for         text[],
    -- The lease. lease_token only ever grows: a result commits only with the token
    -- it was claimed under, which fences out a worker that lost its lease.
    lease_owner         text,
    lease_token         bigint      NOT NULL DEFAULT 0,
    lease_expires_at    timestamptz,
    attempt_started_at  timestamptz,
    cancel_requested_at timestamptz,
    cancel_reason       text,
    failure_code        text,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at         timestamptz,
    UNIQUE (tenant_id, idempotency_key),
    CHECK ((status = 'running') = (lease_owner IS NOT NULL))
);

-- The claim query's only index: small, because it holds only due-able runs.
CREATE INDEX runs_due ON runs (wake_at) WHERE status IN ('ready', 'waiting');
CREATE INDEX runs_leased ON runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_status_workflow ON runs (status, workflow, created_at);

-- One row per finished attempt of a step: the timeline an operator reads. An
-- attempt in flight is described by the run row itself (step, attempt,
-- attempt_started_at, lease_owner) until it ends.
CREATE TABLE run_history (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step        text        NOT NULL,
    attempt     integer     NOT NULL,
    lease_token bigint      NOT NULL,
    worker      text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- next:<label>, retry, wait, failed, parked, lease_expired, released, ...
    outcome     text        NOT NULL,
    error       text
);
CREATE INDEX run_history_run ON run_history (run_id, id);
CREATE INDEX run_history_finished ON run_history (finished_at);

-- The effects ledger: an external call is recorded (with its idempotency key)
-- before it is made, so a crash after the call leaves a 'pending' row that the
-- next attempt resolves by asking the other side.
CREATE TABLE effects (
    key         text        PRIMARY KEY,
    run_id      uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step        text        NOT NULL,
    name        text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts    integer     NOT NULL DEFAULT 1,
    response    jsonb,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX effects_run ON effects (run_id);

-- A run's mailbox. De-duplicated by (run, key) in the transaction that stores
-- the signal; kept until the run consumes it, even if it arrives early.
CREATE TABLE signals (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    dedup_key   text        NOT NULL,
    payload     jsonb       NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    consumed_at timestamptz,
    consumed_by_step text,
    UNIQUE (run_id, dedup_key)
);
CREATE INDEX signals_unconsumed ON signals (run_id, id) WHERE consumed_at IS NULL;

-- Messages a step emits (mail, webhooks). Written in the step's commit, so a
-- message exists if and only if the step's result does.
CREATE TABLE outbox (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      uuid        REFERENCES runs (id) ON DELETE SET NULL,
    dedup_key   text        NOT NULL UNIQUE,
    channel     text        NOT NULL,
    payload     jsonb       NOT NULL,
    status      text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts    integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at     timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';

-- Operator actions on runs (replay, cancel): who, when and why.
CREATE TABLE run_actions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    action      text        NOT NULL,
    reason      text        NOT NULL CHECK (length(reason) > 0),
    actor       text        NOT NULL,
    from_status text        NOT NULL,
    from_step   text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX run_actions_run ON run_actions (run_id, id);

-- Periodic maintenance remembers its last run so a new leader does not repeat it.
CREATE TABLE maintenance_runs (
    job         text        PRIMARY KEY,
    last_run_at timestamptz NOT NULL
);

CREATE TABLE tenants (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- API keys are random 256-bit secrets, so a SHA-256 of the key is enough to
-- store: there is nothing to brute-force that a slow hash would protect.
CREATE TABLE api_keys (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    name        text        NOT NULL,
    key_hash    bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at  timestamptz
);

-- Webhook signing secrets must be readable to verify HMACs; they are never
-- returned by the API after creation.
CREATE TABLE webhook_secrets (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    provider    text        NOT NULL,
    secret      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, provider)
);
