-- Identity and tenancy: organizations, users, memberships, projects, service accounts,
-- API keys, invites, refresh tokens and OIDC login states.
--
-- IDs are prefixed, time-ordered text (functions/common/ids.py), so `ORDER BY id` is
-- creation order and list cursors are plain ID comparisons. Every row a tenant owns
-- carries organization_id (and project_id where it applies); composite foreign keys on
-- (organization_id, project_id) make a row that points at another tenant's project
-- impossible.

CREATE TABLE organizations (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- At most one default organization, even when two instances bootstrap at once.
CREATE UNIQUE INDEX organizations_one_default ON organizations (is_default) WHERE is_default;

-- Users are global (one person may belong to several organizations).
CREATE TABLE users (
    id                 text PRIMARY KEY,
    email              text,
    name               text NOT NULL DEFAULT '',
    is_guest           boolean NOT NULL DEFAULT false,
    oidc_issuer        text,
    oidc_subject       text,
    default_project_id text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(email)) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX users_oidc_identity ON users (oidc_issuer, oidc_subject)
    WHERE oidc_subject IS NOT NULL;

CREATE TABLE organization_members (
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('owner', 'reader')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX organization_members_user ON organization_members (user_id);

CREATE TABLE projects (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            text NOT NULL,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    archived_at     timestamptz,
    UNIQUE (organization_id, id)
);

ALTER TABLE users ADD CONSTRAINT users_default_project_fk
    FOREIGN KEY (default_project_id) REFERENCES projects (id) ON DELETE SET NULL;

CREATE TABLE project_members (
    organization_id text NOT NULL,
    project_id      text NOT NULL,
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('owner', 'member')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX project_members_user ON project_members (user_id);

CREATE TABLE service_accounts (
    id              text PRIMARY KEY,
    organization_id text NOT NULL,
    project_id      text NOT NULL,
    name            text NOT NULL,
    role            text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX service_accounts_project ON service_accounts (organization_id, project_id, id);

-- Only an HMAC-SHA256 of the key under APIKEY_SECRET is stored, never the key.
CREATE TABLE api_keys (
    id                 text PRIMARY KEY,
    organization_id    text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id         text,
    kind               text NOT NULL CHECK (kind IN ('admin', 'project', 'service_account')),
    secret_hash        bytea NOT NULL UNIQUE,
    redacted_value     text NOT NULL,
    name               text NOT NULL DEFAULT '',
    owner_user_id      text REFERENCES users (id) ON DELETE CASCADE,
    service_account_id text REFERENCES service_accounts (id) ON DELETE CASCADE,
    allowed_models     text[],
    expires_at         timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_used_at       timestamptz,
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    CHECK ((kind = 'admin') = (project_id IS NULL)),
    CHECK ((kind = 'service_account') = (service_account_id IS NOT NULL))
);
CREATE INDEX api_keys_scope ON api_keys (organization_id, project_id, id);

CREATE TABLE invites (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email           text NOT NULL,
    role            text NOT NULL CHECK (role IN ('owner', 'reader')),
    -- [{"id": "proj_…", "role": "member"}]: projects joined on acceptance.
    projects        jsonb NOT NULL DEFAULT '[]',
    code_hash       bytea NOT NULL UNIQUE,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'accepted', 'expired')),
    invited_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    accepted_at     timestamptz
);
CREATE INDEX invites_org ON invites (organization_id, id);
CREATE UNIQUE INDEX invites_one_pending ON invites (organization_id, lower(email))
    WHERE status = 'pending';

-- Opaque refresh tokens, stored hashed. A family is one sign-in; rotation adds a row to it.
CREATE TABLE refresh_tokens (
    id          text PRIMARY KEY,
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   text NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- An OIDC authorization request in flight: state → PKCE verifier and nonce, used once.
CREATE TABLE oidc_login_states (
    state_hash    bytea PRIMARY KEY,
    code_verifier text NOT NULL,
    nonce         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
