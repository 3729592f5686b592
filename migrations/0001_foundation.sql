-- Foundation: nothing tenant-owned yet; later migrations add identity, inference, etc.
-- A tiny key/value table for process-wide facts (e.g. the bootstrap marker).
CREATE TABLE system_settings (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
