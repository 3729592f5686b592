-- Stored chat completions (OpenAI's `store: true` and /v1/chat/completions/{id}).
--
-- Ownership as for conversations and responses: a row belongs to a project and, when a
-- user made it, to that user; project keys see every row of their project, users only
-- their own. Lists page by `seq` (keyset), oldest first unless asked otherwise.

CREATE TABLE chat_completions (
    id              text PRIMARY KEY,
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    organization_id text NOT NULL,
    project_id      text NOT NULL,
    user_id         text REFERENCES users (id) ON DELETE CASCADE,
    api_key_id      text,
    model           text NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    -- The chat.completion object as the caller got it (a stream: as its chunks add up).
    completion      jsonb NOT NULL,
    -- The request's messages, as sent.
    messages        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX chat_completions_owner
    ON chat_completions (organization_id, project_id, user_id, seq);
-- `metadata[key]=value` filters (containment).
CREATE INDEX chat_completions_metadata ON chat_completions USING gin (metadata jsonb_path_ops);
