-- Budgets and costs (issue 12, point 3): prices per model, the cost of each call in the
-- usage ledger, hourly rollups of the ledger (what costs, budgets and alerts are computed
-- from), hard spend limits and token budgets, and spend alerts with their crossings.

-- Prices per model, USD per 1M tokens: the organization's (project_id NULL) and a
-- project's override (the whole row replaces the organization's for that project).
-- cached_input NULL: cached input tokens cost what input tokens cost.
CREATE TABLE model_prices (
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id      text,
    model           text NOT NULL CHECK (model <> ''),
    input           numeric(18, 6) NOT NULL CHECK (input >= 0),
    cached_input    numeric(18, 6) CHECK (cached_input >= 0),
    output          numeric(18, 6) NOT NULL CHECK (output >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX model_prices_scope
    ON model_prices (organization_id, (coalesce(project_id, '')), model);

-- The ledger records what each call cost when it was made (a later price change does not
-- rewrite history), in picodollars (1e-12 USD: a price of numeric(18,6) USD per 1M tokens
-- is a whole number of picodollars per token), and the tokens reserved at admission.
ALTER TABLE usage_completions
    ADD COLUMN cost_picodollars numeric NOT NULL DEFAULT 0,
    ADD COLUMN reserved_tokens  integer NOT NULL DEFAULT 0;

-- Hourly rollups of the ledger, maintained in the same transaction as each batch of
-- ledger rows is written (functions/services/ledger.py). '' stands for "none" in the
-- key columns (a primary key cannot hold NULL).
CREATE TABLE usage_hourly (
    organization_id     text NOT NULL,
    hour                timestamptz NOT NULL,
    project_id          text NOT NULL DEFAULT '',
    api_key_id          text NOT NULL DEFAULT '',
    user_id             text NOT NULL DEFAULT '',
    model               text NOT NULL,
    operation           text NOT NULL,
    requests            bigint NOT NULL DEFAULT 0,
    input_tokens        bigint NOT NULL DEFAULT 0,
    input_cached_tokens bigint NOT NULL DEFAULT 0,
    output_tokens       bigint NOT NULL DEFAULT 0,
    reserved_tokens     bigint NOT NULL DEFAULT 0,
    cost_picodollars    numeric NOT NULL DEFAULT 0,  -- the total of the three below
    input_cost_picodollars        numeric NOT NULL DEFAULT 0,  -- uncached input tokens'
    cached_input_cost_picodollars numeric NOT NULL DEFAULT 0,
    output_cost_picodollars       numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, hour, project_id, api_key_id, user_id, model, operation)
);
-- Budgets are reconciled per scope over the current day or month.
CREATE INDEX usage_hourly_project ON usage_hourly (organization_id, project_id, hour);
CREATE INDEX usage_hourly_api_key ON usage_hourly (organization_id, api_key_id, hour)
    WHERE api_key_id <> '';
CREATE INDEX usage_hourly_user ON usage_hourly (organization_id, user_id, hour)
    WHERE user_id <> '';

-- What the ledger already holds, rolled up once (rows written before this migration).
INSERT INTO usage_hourly (organization_id, hour, project_id, api_key_id, user_id, model,
                          operation, requests, input_tokens, input_cached_tokens,
                          output_tokens)
SELECT organization_id, date_trunc('hour', created_at, 'UTC'), coalesce(project_id, ''),
       coalesce(api_key_id, ''), coalesce(user_id, ''), model, operation, count(*),
       sum(input_tokens), sum(input_cached_tokens), sum(output_tokens)
FROM usage_completions
GROUP BY 1, 2, 3, 4, 5, 6, 7;

-- Budgets: OpenAI's hard spend limits (kind 'spend': cents per month, of the organization
-- when no subject is set, or of a project) and Jan's token budgets (kind 'tokens': tokens
-- per day or month, of the organization, a project, an API key or a user). At most one
-- per scope, kind and interval.
CREATE TABLE budgets (
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id      text,
    api_key_id      text REFERENCES api_keys (id) ON DELETE CASCADE,
    user_id         text REFERENCES users (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('spend', 'tokens')),
    period          text NOT NULL CHECK (period IN ('day', 'month')),
    amount          bigint NOT NULL CHECK (amount > 0),  -- cents (spend) or tokens
    currency        text CHECK (currency = 'USD'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    CHECK (num_nonnulls(project_id, api_key_id, user_id) <= 1),
    CHECK ((kind = 'spend') = (currency IS NOT NULL)),
    CHECK (kind = 'tokens' OR (api_key_id IS NULL AND user_id IS NULL AND period = 'month'))
);
CREATE UNIQUE INDEX budgets_scope
    ON budgets (organization_id, (coalesce(project_id, api_key_id, user_id, '')), kind, period);

-- Spend alerts (OpenAI's organization and project spend alerts): a threshold in cents per
-- month, and where to tell. notification_channel is the object the API shows: OpenAI's
-- {type: email, recipients, subject_prefix}, or Jan's {type: webhook, url}; a webhook's
-- signing secret is kept encrypted (functions/common/crypto.py) and never shown again.
CREATE TABLE spend_alerts (
    id                   text PRIMARY KEY,
    organization_id      text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id           text,
    threshold_amount     bigint NOT NULL CHECK (threshold_amount >= 0),
    currency             text NOT NULL DEFAULT 'USD' CHECK (currency = 'USD'),
    period               text NOT NULL DEFAULT 'month' CHECK (period = 'month'),
    notification_channel jsonb NOT NULL,
    secret_ciphertext    bytea,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX spend_alerts_scope ON spend_alerts (organization_id, project_id, id);

-- A crossing: an alert's threshold reached in one period, recorded once (the unique key:
-- whichever instance sees it first), with its webhook delivery.
CREATE TABLE spend_alert_events (
    id              text PRIMARY KEY,
    alert_id        text NOT NULL REFERENCES spend_alerts (id) ON DELETE CASCADE,
    organization_id text NOT NULL,
    period_start    timestamptz NOT NULL,
    threshold_amount bigint NOT NULL,  -- the alert's, in cents, when it was crossed
    spend_cents     numeric NOT NULL,
    crossed_at      timestamptz NOT NULL DEFAULT now(),
    delivery        text NOT NULL DEFAULT 'none'
        CHECK (delivery IN ('none', 'pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    delivered_at    timestamptz,
    last_error      text,
    UNIQUE (alert_id, period_start)
);
CREATE INDEX spend_alert_events_due ON spend_alert_events (next_attempt_at)
    WHERE delivery = 'pending';

-- Shared budget counters without Redis: like rate_limit_lease (0012), for a counter that
-- does not refill and lives until the end of its period (p_expires, seconds from now). Its
-- row's level holds what was taken (not what is left), so a changed budget (p_capacity)
-- applies at once; what was taken is never less than what the ledger says was used
-- (p_used: a lost or fresh counter starts from the ledger). Returns what is left.
CREATE FUNCTION budget_lease(
    p_key text, p_capacity double precision, p_want double precision,
    p_minimum double precision, p_adjust double precision, p_used double precision,
    p_expires double precision
) RETURNS TABLE (granted double precision, level double precision)
LANGUAGE plpgsql AS $$
DECLARE
    t       timestamptz;
    v_taken double precision;
    v_grant double precision := 0;
BEGIN
    INSERT INTO rate_limit_buckets AS b (key, level, updated_at, full_at)
    VALUES (p_key, 0, clock_timestamp(), clock_timestamp() + make_interval(secs => p_expires))
    ON CONFLICT (key) DO NOTHING;
    SELECT b.level INTO v_taken FROM rate_limit_buckets b WHERE b.key = p_key FOR UPDATE;
    t := clock_timestamp();
    v_taken := greatest(0, v_taken + p_adjust, p_used);
    IF p_want > 0 AND floor(p_capacity - v_taken) >= p_minimum THEN
        v_grant := least(p_want, floor(p_capacity - v_taken));
        v_taken := v_taken + v_grant;
    END IF;
    UPDATE rate_limit_buckets b
    SET level = v_taken, updated_at = t, full_at = t + make_interval(secs => p_expires)
    WHERE b.key = p_key;
    RETURN QUERY SELECT v_grant, p_capacity - v_taken;
END
$$;
