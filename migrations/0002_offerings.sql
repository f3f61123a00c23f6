-- Offerings mirrored from the platform, keyed by the platform's own id.
-- seats_taken is the reservation counter: a reservation is one UPDATE that
-- only succeeds while it stays within capacity, so concurrent purchases
-- cannot oversell, and the CHECK holds even against a bug.
CREATE TABLE offerings (
    tenant_id     uuid        NOT NULL REFERENCES tenants (id),
    id            text        NOT NULL CHECK (length(id) BETWEEN 1 AND 255),
    title         text        NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    price_amount  numeric     NOT NULL CHECK (price_amount >= 0),
    currency      text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    capacity      integer     CHECK (capacity IS NULL OR capacity >= 0),
    kind          text        NOT NULL CHECK (kind IN ('course', 'subscription')),
    lms_course_id text,
    lms_url       text,
    seats_taken   integer     NOT NULL DEFAULT 0 CHECK (seats_taken >= 0),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT offerings_within_capacity CHECK (capacity IS NULL OR seats_taken <= capacity)
);
