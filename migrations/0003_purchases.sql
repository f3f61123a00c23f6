-- Customers: one per (tenant, email), created on their first purchase.
CREATE TABLE customers (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    email       text        NOT NULL,
    name        text,
    lms_user_id text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (tenant_id, email)
);

-- A purchase's money, in the currency's minor units. The run (run_id) is the
-- source of truth for where the purchase is; these columns record what moved.
CREATE TABLE purchases (
    id                uuid        PRIMARY KEY,
    tenant_id         uuid        NOT NULL REFERENCES tenants (id),
    offering_id       text        NOT NULL,
    quantity          integer     NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    customer_id       uuid        NOT NULL REFERENCES customers (id),
    currency          text        NOT NULL,
    total_minor       bigint      NOT NULL CHECK (total_minor >= 0),
    provider          text        NOT NULL,
    payment_method    text        NOT NULL,
    payment_status    text        NOT NULL DEFAULT 'pending' CHECK (payment_status IN
                        ('pending', 'requires_action', 'authorized', 'captured', 'voided', 'declined', 'refunded')),
    payment_reference text,
    authorized_minor  bigint      NOT NULL DEFAULT 0,
    captured_minor    bigint      NOT NULL DEFAULT 0,
    refunded_minor    bigint      NOT NULL DEFAULT 0,
    next_action       jsonb,
    seats_reserved    boolean     NOT NULL DEFAULT false,
    enrollment_mode   text        NOT NULL CHECK (enrollment_mode IN ('immediate', 'confirmation')),
    run_id            uuid        NOT NULL REFERENCES runs (id),
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (tenant_id, offering_id) REFERENCES offerings (tenant_id, id),
    CONSTRAINT captured_within_authorized CHECK (captured_minor <= authorized_minor),
    CONSTRAINT refunded_within_captured CHECK (refunded_minor <= captured_minor),
    CONSTRAINT authorized_within_total CHECK (authorized_minor <= total_minor)
);
CREATE INDEX purchases_tenant ON purchases (tenant_id, id DESC);
CREATE INDEX purchases_customer ON purchases (tenant_id, customer_id);

CREATE TABLE seats (
    id                   uuid        PRIMARY KEY,
    tenant_id            uuid        NOT NULL REFERENCES tenants (id),
    purchase_id          uuid        NOT NULL REFERENCES purchases (id),
    position             integer     NOT NULL,
    status               text        NOT NULL DEFAULT 'unassigned' CHECK (status IN
                           ('unassigned', 'invited', 'active', 'declined', 'revoked', 'cancelled', 'refunded')),
    assignee_email       text,
    assignee_lms_user_id text,
    enrolled_at          timestamptz,
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (purchase_id, position)
);

-- Idempotency-Key: the first response to a (tenant, endpoint, key), written
-- in the same transaction as the work it answers for.
CREATE TABLE idempotency_keys (
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    endpoint     text        NOT NULL,
    key          text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash bytea       NOT NULL,
    status_code  integer     NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, endpoint, key)
);

-- The sandbox provider's own books: what it authorized, captured and
-- refunded, and the result of each request by idempotency key. Tests hold
-- the engine to this ledger.
CREATE TABLE sandbox_charges (
    reference        text        PRIMARY KEY,
    tenant_id        uuid        NOT NULL,
    purchase_id      uuid        NOT NULL,
    payment_method   text        NOT NULL,
    currency         text        NOT NULL,
    amount_minor     bigint      NOT NULL,
    status           text        NOT NULL CHECK (status IN
                       ('requires_action', 'authorized', 'captured', 'voided', 'declined')),
    captured_minor   bigint      NOT NULL DEFAULT 0,
    refunded_minor   bigint      NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX sandbox_charges_purchase ON sandbox_charges (purchase_id);

CREATE TABLE sandbox_requests (
    idempotency_key text        PRIMARY KEY,
    operation       text        NOT NULL,
    reference       text,
    calls           integer     NOT NULL DEFAULT 1,
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
