-- The floor benchmark's fixtures, on top of Bursar's migrations: one tenant,
-- one offering without a capacity, counters handing out purchase numbers and
-- batches, and the ids a purchase number stands for.
INSERT INTO tenants (id, name) VALUES ('00000000-0000-7000-8000-000000000001', 'floor');
INSERT INTO offerings (tenant_id, id, title, price_amount, currency, kind, lms_course_id)
VALUES ('00000000-0000-7000-8000-000000000001', 'floor-101', 'Floor 101', 49.00, 'USD', 'course', '1');
CREATE SEQUENCE floor_purchases;
CREATE SEQUENCE floor_batches START 0 MINVALUE 0;
-- Increasing ids, like Bursar's UUIDv7s: every insert lands at the right edge
-- of its indexes. kind: 1 purchase, 2 run, 3 customer, 4 seat.
CREATE FUNCTION floor_id(kind int, n bigint) RETURNS uuid IMMUTABLE LANGUAGE sql
AS $$ SELECT (lpad(to_hex(kind), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid $$;
