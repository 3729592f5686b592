-- A project's model permissions (OpenAI's `project.model_permissions`): an allow list (only
-- these models) or a deny list (every model but these). No row: every model the project's
-- providers serve. Read with the caller's principal when it is resolved (see
-- functions/services/identity.py), so the request path never queries this table.

CREATE TABLE project_model_permissions (
    organization_id text NOT NULL,
    project_id      text PRIMARY KEY,
    mode            text NOT NULL CHECK (mode IN ('allow_list', 'deny_list')),
    model_ids       text[] NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);
