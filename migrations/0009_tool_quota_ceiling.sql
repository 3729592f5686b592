-- The daily tool-call quota an organization owner set for a project is also the ceiling
-- below which the project's owners may move it; they cannot raise it (nor make it
-- unlimited). NULL: no organization owner set one (the operator's ceiling applies).
ALTER TABLE project_tool_settings
    ADD COLUMN daily_call_quota_ceiling integer CHECK (daily_call_quota_ceiling >= 0);
