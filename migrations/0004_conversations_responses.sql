-- Conversations, their items, and Responses (OpenAI's stateful APIs).
--
-- Ownership: a row belongs to a project (organization_id, project_id) and, when a user
-- made it, to that user; project keys see every row of their project, users only their
-- own. Items and input items are ordered by a database sequence (`seq`) so long lists
-- page in SQL with keyset conditions (`seq > $after_seq`), never in memory.

CREATE TABLE conversations (
    id              text PRIMARY KEY,
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    organization_id text NOT NULL,
    project_id      text NOT NULL,
    user_id         text REFERENCES users (id) ON DELETE CASCADE,
    title           text,
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);
-- The Jan listing: a caller's conversations, newest first.
CREATE INDEX conversations_owner ON conversations (organization_id, project_id, user_id, seq);

CREATE TABLE conversation_items (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              text NOT NULL,
    conversation_id text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    organization_id text NOT NULL,
    project_id      text NOT NULL,
    -- The item exactly as the API returns it (type, id, role, content, call_id, …).
    item            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, id)
);
CREATE INDEX conversation_items_order ON conversation_items (conversation_id, seq);

CREATE TABLE responses (
    id                   text PRIMARY KEY,
    organization_id      text NOT NULL,
    project_id           text NOT NULL,
    user_id              text REFERENCES users (id) ON DELETE CASCADE,
    api_key_id           text,
    conversation_id      text REFERENCES conversations (id) ON DELETE SET NULL,
    previous_response_id text REFERENCES responses (id) ON DELETE SET NULL,
    status               text NOT NULL
                         CHECK (status IN ('queued', 'in_progress', 'completed', 'failed',
                                           'cancelled', 'incomplete')),
    background           boolean NOT NULL DEFAULT false,
    -- The request's settings as echoed on the response object (model, instructions,
    -- tools, temperature, …), and what the run produced.
    params               jsonb NOT NULL,
    output               jsonb NOT NULL DEFAULT '[]',
    usage                jsonb,
    error                jsonb,
    incomplete_details   jsonb,
    metadata             jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    completed_at         timestamptz,
    -- Background work is claimed from here (FOR UPDATE SKIP LOCKED): the instance holding
    -- the lease renews it while it runs; an expired lease is taken over by another.
    lease_owner          text,
    lease_expires_at     timestamptz,
    attempts             integer NOT NULL DEFAULT 0,
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX responses_owner ON responses (organization_id, project_id, user_id, created_at);
CREATE INDEX responses_claimable ON responses (created_at)
    WHERE background AND status IN ('queued', 'in_progress');

CREATE TABLE response_input_items (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              text NOT NULL,
    response_id     text NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    organization_id text NOT NULL,
    project_id      text NOT NULL,
    item            jsonb NOT NULL
);
CREATE INDEX response_input_items_order ON response_input_items (response_id, seq);
