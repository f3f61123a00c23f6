-- Offerings without a capacity do not keep a counter (every purchase would
-- update one hot row); their seats taken are counted from reserved purchases.
CREATE INDEX purchases_reserved ON purchases (tenant_id, offering_id) WHERE seats_reserved;
