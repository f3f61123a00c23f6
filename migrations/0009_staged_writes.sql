-- Steps stage their writes as statements over a JSON array of rows, one
-- execution per completion batch (see StepCtx::stage). A statement refuses a
-- row, and with it the batch, by calling this: plain SQL has no RAISE.
CREATE FUNCTION bursar_refuse(message text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', message USING ERRCODE = 'check_violation';
END
$$;
