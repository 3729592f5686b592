-- The audit log (OpenAI's /v1/organization/audit_logs): who changed what, written in the
-- same transaction as the change (functions/services/audit). Append-only: a trigger
-- refuses UPDATE, TRUNCATE and any DELETE but the retention path below.
--
-- No foreign keys: the log outlives the users, keys and projects it names. The actor's
-- e-mail is copied in when the event is written (what it was then). IDs are time-ordered
-- (functions/common/ids.py), so `ORDER BY id` is the order events were written.

CREATE TABLE audit_logs (
    id                       text PRIMARY KEY,
    organization_id          text NOT NULL,
    effective_at             timestamptz NOT NULL DEFAULT now(),
    type                     text NOT NULL,
    project_id               text,
    -- 'session' (a signed-in user: user, address, user agent) or 'api_key' (an admin key,
    -- owned by a user or by nobody: an operator's key; or a service account's key).
    actor_type               text CHECK (actor_type IN ('session', 'api_key')),
    actor_user_id            text,
    actor_email              text,
    actor_api_key_id         text,
    actor_service_account_id text,
    ip_address               text,
    user_agent               text,
    resource_id              text,
    -- The type's payload as the API shows it: the object's ID and what changed (never a
    -- secret: keys, codes and provider credentials are named, not copied).
    details                  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_logs_organization ON audit_logs (organization_id, id);
CREATE INDEX audit_logs_effective_at ON audit_logs (organization_id, effective_at);
CREATE INDEX audit_logs_resource ON audit_logs (organization_id, resource_id)
    WHERE resource_id IS NOT NULL;

-- Append-only. The one way to delete is audit_logs_expire(), which the retention sweep
-- calls: it raises a flag for its own transaction that the trigger checks, and deletes
-- only rows of one organization older than the cut-off it is given. This guards the log
-- against the application's own code paths (nothing else can UPDATE or DELETE through
-- it); a database superuser can still disable triggers, so the log's rows are also
-- exported (`jan-server export audit`) for an outside store.
CREATE FUNCTION audit_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('jan.audit_expiry', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_logs is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_logs_no_update_delete BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();

-- Delete up to p_limit events of one organization that took effect before p_before;
-- returns how many. The flag is local to the caller's transaction and lowered again
-- before returning.
CREATE FUNCTION audit_logs_expire(p_organization_id text, p_before timestamptz, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM set_config('jan.audit_expiry', 'on', true);
    DELETE FROM audit_logs WHERE id IN (
        SELECT id FROM audit_logs
        WHERE organization_id = p_organization_id AND effective_at < p_before
        ORDER BY organization_id, effective_at
        LIMIT p_limit
    );
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM set_config('jan.audit_expiry', 'off', true);
    RETURN n;
END
$$;
