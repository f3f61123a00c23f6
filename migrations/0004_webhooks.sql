-- Webhooks received, stored (once per provider event id) in the transaction
-- that verified them and delivered their signal.
CREATE TABLE webhook_events (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    provider    text        NOT NULL,
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    payload     jsonb       NOT NULL,
    run_id      uuid        REFERENCES runs (id),
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, provider, event_id)
);
