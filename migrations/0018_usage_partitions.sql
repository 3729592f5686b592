-- The usage ledger partitioned by month (created_at, UTC): retention drops a month whole
-- instead of deleting row by row (no DELETE bloat, no vacuum debt), and a month's queries
-- touch its partition only. Housekeeping creates the months ahead
-- (usage_partitions_maintain) and drops the ones past every organization's retention
-- (usage_partitions_drop); rows of a month without a partition wait in the default
-- partition until maintenance gives the month its own.
--
-- This migration rewrites the ledger once (every row is copied into its month).
--
-- No primary key: nothing refers to a ledger row, and each index is paid on every write;
-- `id` still comes from a sequence (unique, in write order). Its one index serves every
-- reader: an organization's rows in time order (the usage API's minute buckets, the
-- export, retention).

ALTER TABLE usage_completions RENAME TO usage_completions_unpartitioned;
ALTER INDEX usage_completions_org_time RENAME TO usage_completions_unpartitioned_org_time;
ALTER TABLE usage_completions_unpartitioned
    RENAME CONSTRAINT usage_completions_pkey TO usage_completions_unpartitioned_pkey;

CREATE SEQUENCE usage_ledger_id_seq AS bigint;
CREATE TABLE usage_completions (
    id                  bigint NOT NULL DEFAULT nextval('usage_ledger_id_seq'),
    created_at          timestamptz NOT NULL,
    organization_id     text NOT NULL,
    project_id          text,
    api_key_id          text,
    user_id             text,
    model               text NOT NULL,
    provider_id         text,
    endpoint            text,
    operation           text NOT NULL,
    streamed            boolean NOT NULL,
    input_tokens        integer NOT NULL DEFAULT 0,
    output_tokens       integer NOT NULL DEFAULT 0,
    input_cached_tokens integer NOT NULL DEFAULT 0,
    latency_ms          integer NOT NULL,
    ttft_ms             integer,
    status              integer NOT NULL,
    cost_picodollars    numeric NOT NULL DEFAULT 0,
    reserved_tokens     integer NOT NULL DEFAULT 0
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE usage_ledger_id_seq OWNED BY usage_completions.id;
CREATE INDEX usage_completions_org_time ON usage_completions (organization_id, created_at);
CREATE TABLE usage_completions_default PARTITION OF usage_completions DEFAULT;

-- Give p_month (any instant in it) a partition of its own, named usage_completions_YYYYMM,
-- unless it has one: created empty, its rows moved out of the default partition, then
-- attached (which locks the ledger less than creating it in place). True when created.
CREATE FUNCTION usage_partition_ensure(p_month timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    first timestamptz := date_trunc('month', p_month, 'UTC');
    after timestamptz := first + interval '1 month';
    name  text := 'usage_completions_' || to_char(first AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE usage_completions INCLUDING DEFAULTS)', name);
    EXECUTE format(
        'WITH moved AS (DELETE FROM usage_completions_default'
        ' WHERE created_at >= %L AND created_at < %L RETURNING *)'
        ' INSERT INTO %I SELECT * FROM moved', first, after, name);
    EXECUTE format(
        'ALTER TABLE usage_completions ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        name, first, after);
    RETURN true;
END
$$;

-- The months from p_now's to p_ahead months later, and every month that has rows waiting
-- in the default partition: how many partitions were created.
CREATE FUNCTION usage_partitions_maintain(p_now timestamptz, p_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month   timestamptz;
    created integer := 0;
BEGIN
    FOR month IN
        SELECT date_trunc('month', p_now, 'UTC') + make_interval(months => m)
        FROM generate_series(0, p_ahead) m
        UNION
        SELECT DISTINCT date_trunc('month', created_at, 'UTC') FROM usage_completions_default
    LOOP
        IF usage_partition_ensure(month) THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- Drop the monthly partitions that end on or before p_before: how many. A drop briefly
-- locks the ledger; rather than queue writers behind a long wait, it gives up after a few
-- seconds (the next sweep tries again).
CREATE FUNCTION usage_partitions_drop(p_before timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part    text;
    dropped integer := 0;
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'usage_completions'::regclass
          AND c.relname ~ '^usage_completions_[0-9]{6}$'
          AND (to_date(substr(c.relname, 19), 'YYYYMM') + interval '1 month')
              AT TIME ZONE 'UTC' <= p_before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

-- The months the ledger holds and the next two, then every row copied into its month.
SELECT usage_partition_ensure(month)
FROM (
    SELECT DISTINCT date_trunc('month', created_at, 'UTC') AS month
    FROM usage_completions_unpartitioned
    UNION
    SELECT date_trunc('month', now(), 'UTC') + make_interval(months => m)
    FROM generate_series(0, 2) m
) months;

INSERT INTO usage_completions (id, created_at, organization_id, project_id, api_key_id,
                               user_id, model, provider_id, endpoint, operation, streamed,
                               input_tokens, output_tokens, input_cached_tokens, latency_ms,
                               ttft_ms, status, cost_picodollars, reserved_tokens)
SELECT id, created_at, organization_id, project_id, api_key_id, user_id, model,
       provider_id, endpoint, operation, streamed, input_tokens, output_tokens,
       input_cached_tokens, latency_ms, ttft_ms, status, cost_picodollars, reserved_tokens
FROM usage_completions_unpartitioned;
SELECT setval('usage_ledger_id_seq',
              (SELECT coalesce(max(id), 0) + 1 FROM usage_completions_unpartitioned), false);
DROP TABLE usage_completions_unpartitioned;
