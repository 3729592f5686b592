-- Daily rollups of the usage ledger, beside the hourly ones (0013) and written with them in
-- the transaction of each batch of ledger rows (functions/services/ledger.py): a report in
-- day buckets reads a row per day and key, not 24 (at 10 million requests over 90 days, a
-- 30-day report by project reads 6 000 rows instead of 144 000: bench/bench_usage.py).
CREATE TABLE usage_daily (
    organization_id     text NOT NULL,
    day                 timestamptz NOT NULL,  -- midnight UTC
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
    PRIMARY KEY (organization_id, day, project_id, api_key_id, user_id, model, operation)
);

INSERT INTO usage_daily (organization_id, day, project_id, api_key_id, user_id, model,
                         operation, requests, input_tokens, input_cached_tokens,
                         output_tokens, reserved_tokens, cost_picodollars,
                         input_cost_picodollars, cached_input_cost_picodollars,
                         output_cost_picodollars)
SELECT organization_id, date_trunc('day', hour, 'UTC'), project_id, api_key_id, user_id,
       model, operation, sum(requests), sum(input_tokens), sum(input_cached_tokens),
       sum(output_tokens), sum(reserved_tokens), sum(cost_picodollars),
       sum(input_cost_picodollars), sum(cached_input_cost_picodollars),
       sum(output_cost_picodollars)
FROM usage_hourly
GROUP BY 1, 2, 3, 4, 5, 6, 7;
