-- What the periodic housekeeping sweeps look for, so each batch is an index range scan
-- rather than a walk over the whole table every few minutes.

-- A refresh token is dead from its expiry or its revocation, whichever comes first
-- (LEAST ignores a NULL revoked_at); the sweep queries this exact expression.
CREATE INDEX refresh_tokens_dead_at ON refresh_tokens (LEAST(expires_at, revoked_at));

CREATE INDEX tool_call_counters_day ON tool_call_counters (day);

-- Foreground responses being generated: few rows at any time; abandoned ones are failed.
CREATE INDEX responses_foreground_running ON responses (created_at)
    WHERE NOT background AND status = 'in_progress';
