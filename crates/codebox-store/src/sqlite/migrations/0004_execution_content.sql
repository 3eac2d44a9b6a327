-- What an execution ran and printed, kept only when `retention.store_code` is
-- on (NULL otherwise): the code, and its output as JSON text
-- ({"stdout", "stderr", "text", "error", "truncated"}, capped by the core).
-- Purged with the row by the retention pass.
ALTER TABLE executions ADD COLUMN code TEXT;
ALTER TABLE executions ADD COLUMN output TEXT;
