-- Inference: model providers (per organization or project), the models discovered on
-- their endpoints, endpoint health shared between instances, and the usage ledger.

CREATE TABLE model_providers (
    id                 text PRIMARY KEY,
    organization_id    text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- NULL: the provider serves every project of the organization.
    project_id         text,
    name               text NOT NULL,
    kind               text NOT NULL
        CHECK (kind IN ('kserve', 'vllm', 'llamacpp', 'ollama', 'sglang', 'openai')),
    -- Each an OpenAI-compatible base (…/v1, or …/openai/v1 for KServe); several = replicas.
    base_urls          text[] NOT NULL CHECK (cardinality(base_urls) BETWEEN 1 AND 16),
    -- AES-GCM under MODEL_PROVIDER_SECRET (functions/common/crypto.py); never returned.
    api_key_ciphertext bytea,
    -- Models served even when an endpoint's /models does not list them.
    static_models      text[] NOT NULL DEFAULT '{}',
    active             boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX model_providers_scope ON model_providers (organization_id, project_id, id);
CREATE UNIQUE INDEX model_providers_name
    ON model_providers (organization_id, coalesce(project_id, ''), lower(name));

-- What each endpoint's /models answered last; a fresh instance routes from this at once.
CREATE TABLE model_provider_models (
    provider_id     text NOT NULL REFERENCES model_providers (id) ON DELETE CASCADE,
    organization_id text NOT NULL,
    base_url        text NOT NULL,
    model           text NOT NULL,
    owned_by        text,
    discovered_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, base_url, model)
);

-- Passive health per upstream base URL, written on state changes only (ejection, return).
CREATE TABLE inference_endpoint_health (
    base_url             text PRIMARY KEY,
    consecutive_failures integer NOT NULL DEFAULT 0,
    ejected_until        timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The usage ledger: one row per model request, written in batches off the request path.
-- No foreign keys: the ledger outlives deleted keys, projects and providers.
CREATE TABLE usage_completions (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at        timestamptz NOT NULL,
    organization_id   text NOT NULL,
    project_id        text,
    api_key_id        text,
    user_id           text,
    model             text NOT NULL,
    provider_id       text,
    endpoint          text,
    operation         text NOT NULL,
    streamed          boolean NOT NULL,
    input_tokens      integer NOT NULL DEFAULT 0,
    output_tokens     integer NOT NULL DEFAULT 0,
    input_cached_tokens integer NOT NULL DEFAULT 0,
    latency_ms        integer NOT NULL,
    ttft_ms           integer,
    status            integer NOT NULL
);
CREATE INDEX usage_completions_org_time ON usage_completions (organization_id, created_at);
