-- Tools (web search, page fetching): which tools a project may use and how many calls a day.

-- One row per project that departs from the defaults; no row means every tool is enabled
-- and the server-wide daily quota (JAN_TOOL_CALLS_PER_DAY) applies.
CREATE TABLE project_tool_settings (
    organization_id text NOT NULL,
    project_id      text NOT NULL,
    -- Tool families by their Responses names ('web_search', 'fetch'); NULL: all of them.
    enabled_tools   text[],
    -- NULL: the server default; 0: unlimited.
    daily_call_quota integer CHECK (daily_call_quota >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, project_id),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);

-- Calls per project per UTC day, counted as they are made (quota check and increment are
-- one statement, so concurrent instances cannot overshoot).
CREATE TABLE tool_call_counters (
    organization_id text NOT NULL,
    project_id      text NOT NULL,
    day             date NOT NULL,
    calls           integer NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, project_id, day),
    FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE
);
