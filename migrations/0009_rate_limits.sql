-- Rate limits (functions/services/limits): the limits an organization sets, its policy for
-- when the shared counters cannot be reached, and the shared counters themselves for
-- deployments of several instances without Redis.

-- One row per scope that has limits. With a model: an organization's default for that
-- model (no subject) or a project's limit on it. Without (model ''): an API key's, a
-- user's (within the organization) or a service account's, over every model.
-- A NULL limit is not set: a project inherits the organization's default for the model,
-- other scopes have no limit of that kind. 0 means no limit (a project's 0 overrides the
-- organization's default).
CREATE TABLE rate_limits (
    organization_id           text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id                text,
    api_key_id                text REFERENCES api_keys (id) ON DELETE CASCADE,
    user_id                   text REFERENCES users (id) ON DELETE CASCADE,
    service_account_id        text REFERENCES service_accounts (id) ON DELETE CASCADE,
    model                     text NOT NULL DEFAULT '',
    max_requests_per_1_minute bigint CHECK (max_requests_per_1_minute >= 0),
    max_tokens_per_1_minute   bigint CHECK (max_tokens_per_1_minute >= 0),
    max_requests_per_1_day    bigint CHECK (max_requests_per_1_day >= 0),
    max_tokens_per_1_day      bigint CHECK (max_tokens_per_1_day >= 0),
    max_concurrent_requests   bigint CHECK (max_concurrent_requests >= 0),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    CHECK (num_nonnulls(project_id, api_key_id, user_id, service_account_id) <= 1),
    CHECK ((model <> '') = (api_key_id IS NULL AND user_id IS NULL AND service_account_id IS NULL))
);
-- IDs are prefixed by kind, so one subject column value never collides with another's.
CREATE UNIQUE INDEX rate_limits_scope ON rate_limits
    (organization_id, (coalesce(project_id, api_key_id, user_id, service_account_id, '')), model);

-- An organization's choice for when the shared counters are unreachable (absent: the
-- JAN_RATE_LIMIT_FAILURE_MODE setting).
CREATE TABLE rate_limit_policies (
    organization_id text PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    failure_mode    text NOT NULL CHECK (failure_mode IN ('open', 'closed')),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Shared counters without Redis (JAN_RATE_LIMIT_STORE=postgres). A token bucket per key:
-- its level at updated_at, refilled continuously; a row past full_at is as good as absent
-- (housekeeping removes it). Instances lease units from it in blocks.
CREATE TABLE rate_limit_buckets (
    key        text PRIMARY KEY,
    level      double precision NOT NULL,
    updated_at timestamptz NOT NULL,
    full_at    timestamptz NOT NULL
);
CREATE INDEX rate_limit_buckets_full_at ON rate_limit_buckets (full_at);

-- Concurrent-request slots: what each instance holds, until it renews or it expires.
CREATE TABLE rate_limit_slots (
    key        text NOT NULL,
    instance   text NOT NULL,
    allowance  integer NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key, instance)
);
CREATE INDEX rate_limit_slots_expires_at ON rate_limit_slots (expires_at);

-- Lease from a bucket, atomically: refill it to now, charge `adjust` (debts; negative:
-- units given back), then grant min(want, whole units left) if at least `minimum` are
-- there, else nothing. Returns what was granted and the level left.
CREATE FUNCTION rate_limit_lease(
    p_key text, p_capacity double precision, p_rate double precision,
    p_want double precision, p_minimum double precision, p_adjust double precision
) RETURNS TABLE (granted double precision, level double precision)
LANGUAGE plpgsql AS $$
DECLARE
    t       timestamptz;
    v_level double precision;
    v_at    timestamptz;
    v_grant double precision := 0;
BEGIN
    INSERT INTO rate_limit_buckets AS b (key, level, updated_at, full_at)
    VALUES (p_key, p_capacity, clock_timestamp(), clock_timestamp())
    ON CONFLICT (key) DO NOTHING;
    SELECT b.level, b.updated_at INTO v_level, v_at
    FROM rate_limit_buckets b WHERE b.key = p_key FOR UPDATE;
    t := clock_timestamp();  -- after the lock: the holder before us wrote an earlier time
    v_level := least(p_capacity,
                     v_level + greatest(0, extract(epoch FROM t - v_at)) * p_rate);
    v_level := least(p_capacity, v_level - p_adjust);
    IF p_want > 0 AND floor(v_level) >= p_minimum THEN
        v_grant := least(p_want, floor(v_level));
        v_level := v_level - v_grant;
    END IF;
    UPDATE rate_limit_buckets b
    SET level = v_level, updated_at = t,
        full_at = t + make_interval(secs => greatest(0, (p_capacity - v_level) / p_rate))
    WHERE b.key = p_key;
    RETURN QUERY SELECT v_grant, v_level;
END
$$;

-- Set this instance's slots of a key: min(want, limit - what live others hold), never
-- below `floor` (the requests it has running). Returns its allowance and the total held.
CREATE FUNCTION rate_limit_slots_lease(
    p_key text, p_instance text, p_limit integer, p_want integer, p_floor integer,
    p_ttl double precision
) RETURNS TABLE (allowance integer, held integer)
LANGUAGE plpgsql AS $$
DECLARE
    t        timestamptz;
    v_others integer;
    v_grant  integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('jan:rate_limit_slots:' || p_key, 0));
    t := clock_timestamp();
    DELETE FROM rate_limit_slots s WHERE s.key = p_key AND s.expires_at < t;
    SELECT coalesce(sum(s.allowance), 0) INTO v_others
    FROM rate_limit_slots s WHERE s.key = p_key AND s.instance <> p_instance;
    v_grant := greatest(p_floor, least(p_want, p_limit - v_others));
    IF v_grant > 0 THEN
        INSERT INTO rate_limit_slots AS s (key, instance, allowance, expires_at)
        VALUES (p_key, p_instance, v_grant, t + make_interval(secs => p_ttl))
        ON CONFLICT (key, instance)
        DO UPDATE SET allowance = excluded.allowance, expires_at = excluded.expires_at;
    ELSE
        DELETE FROM rate_limit_slots s WHERE s.key = p_key AND s.instance = p_instance;
    END IF;
    RETURN QUERY SELECT v_grant, v_others + v_grant;
END
$$;
