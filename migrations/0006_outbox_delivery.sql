-- A delivery claims an outbox message for a while, so two deliverers do not
-- send it at once and a crashed one's message is picked up again.
ALTER TABLE outbox ADD COLUMN tenant_id uuid;
ALTER TABLE outbox ADD COLUMN locked_until timestamptz;
UPDATE outbox o SET tenant_id = r.tenant_id FROM runs r WHERE r.id = o.run_id;
