-- Data retention: OpenAI's organization and project controls (zero_data_retention: no
-- prompt or output is stored), and Jan's retention periods per kind of data, which the
-- housekeeping sweeps enforce (functions/services/retention).

-- One row per organization that set anything. A NULL period follows the server's default
-- (JAN_RETENTION_*_DAYS); 0 keeps that data for ever.
CREATE TABLE organization_data_retention (
    organization_id         text PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    retention_type          text NOT NULL DEFAULT 'none' CHECK (retention_type IN (
        'none', 'zero_data_retention', 'enhanced_zero_data_retention',
        'modified_abuse_monitoring', 'enhanced_modified_abuse_monitoring')),
    responses_days          integer CHECK (responses_days >= 0),
    conversation_items_days integer CHECK (conversation_items_days >= 0),
    usage_detail_days       integer CHECK (usage_detail_days >= 0),
    audit_log_days          integer CHECK (audit_log_days >= 0),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- A project's own control; no row: the organization's (`organization_default`).
CREATE TABLE project_data_retention (
    organization_id text NOT NULL,
    project_id      text PRIMARY KEY,
    retention_type  text NOT NULL CHECK (retention_type IN (
        'none', 'zero_data_retention', 'enhanced_zero_data_retention',
        'modified_abuse_monitoring', 'enhanced_modified_abuse_monitoring')),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);

-- What the retention sweeps look for: one organization's oldest rows, an index range.
CREATE INDEX responses_retention ON responses (organization_id, created_at);
CREATE INDEX conversation_items_retention ON conversation_items (organization_id, created_at);
CREATE INDEX conversations_retention ON conversations (organization_id, created_at);
-- Deleting a response or a conversation sets the references to it to NULL: without these,
-- each deleted row would scan every response for its referrers.
CREATE INDEX responses_previous ON responses (previous_response_id)
    WHERE previous_response_id IS NOT NULL;
CREATE INDEX responses_conversation ON responses (conversation_id)
    WHERE conversation_id IS NOT NULL;

-- Per organization that does not keep p_kind for ever: what took effect before `cutoff`
-- is past retention. p_default: the server's default days for organizations without
-- their own (0: kept).
CREATE FUNCTION retention_cutoffs(p_kind text, p_now timestamptz, p_default integer)
RETURNS TABLE (organization_id text, cutoff timestamptz) LANGUAGE sql STABLE AS $$
    SELECT o.id, p_now - make_interval(days => d.days)
    FROM organizations o
    LEFT JOIN organization_data_retention r ON r.organization_id = o.id
    CROSS JOIN LATERAL (SELECT coalesce(CASE p_kind
        WHEN 'responses' THEN r.responses_days
        WHEN 'conversation_items' THEN r.conversation_items_days
        WHEN 'usage_detail' THEN r.usage_detail_days
        WHEN 'audit_log' THEN r.audit_log_days
    END, p_default) AS days) d
    WHERE d.days > 0
$$;
