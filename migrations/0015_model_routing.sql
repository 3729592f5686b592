-- Model aliases (a Jan extension): a name a caller may use for a model, per organization
-- (`project_id` NULL) or per project; the project's shadows the organization's, and both
-- shadow a model of that name. Read whole into each instance's model catalog, which
-- compares `count(*)` and `max(updated_at)` at every reload to see whether they changed.

CREATE TABLE model_aliases (
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id      text,
    alias           text NOT NULL,
    model           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);

CREATE UNIQUE INDEX model_aliases_scope_alias
    ON model_aliases (organization_id, coalesce(project_id, ''), alias);

-- Model fallbacks (a Jan extension): for a model or alias name, the models to try in turn
-- when every endpoint of it fails before the first byte. Scoped and loaded as aliases are.
CREATE TABLE model_fallbacks (
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id      text,
    model           text NOT NULL,
    fallbacks       text[] NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);

CREATE UNIQUE INDEX model_fallbacks_scope_model
    ON model_fallbacks (organization_id, coalesce(project_id, ''), model);
