-- Rotating a webhook secret keeps the previous one valid for a grace period,
-- so events signed before the sender switched are not refused.
ALTER TABLE webhook_secrets ADD COLUMN previous_secret text;
ALTER TABLE webhook_secrets ADD COLUMN previous_valid_until timestamptz;
