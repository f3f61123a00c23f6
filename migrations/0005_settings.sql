-- Where a tenant's enrollments and notifications go, and provider
-- credentials. Secrets are kept to sign and authenticate outgoing calls;
-- the API never returns them.
CREATE TABLE tenant_settings (
    tenant_id     uuid        PRIMARY KEY REFERENCES tenants (id),
    lms           jsonb       NOT NULL DEFAULT '{"type": "none"}',
    notifications jsonb       NOT NULL DEFAULT '{}',
    providers     jsonb       NOT NULL DEFAULT '{}',
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
