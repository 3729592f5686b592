-- Weighted endpoints (issue 15): a provider's endpoints may carry relative weights, in the
-- order of base_urls, so that a canary takes a set share of the traffic (95/5) rather than
-- least-outstanding balancing's even spread. NULL: no weights (least outstanding).
-- A weight of 0 keeps an endpoint out of the split (it serves only when no weighted one can).
ALTER TABLE model_providers ADD COLUMN endpoint_weights integer[]
    CHECK (
        endpoint_weights IS NULL
        OR (
            cardinality(endpoint_weights) = cardinality(base_urls)
            AND array_position(endpoint_weights, NULL) IS NULL
            AND 0 <= ALL (endpoint_weights)
            AND 10000 >= ALL (endpoint_weights)
            AND endpoint_weights <> array_fill(0, ARRAY[cardinality(endpoint_weights)])
        )
    );
