-- Model routing, continued (a Jan extension): a project's scheduling priority, forwarded
-- to engines that take one (vLLM's `priority`: lower runs first), and what a model
-- provider declares about its engines (`options`: whether they take `priority` and
-- `prompt_cache_key` in the body, their context window).

-- NULL: the project has no priority of its own (engines get their default, 0).
ALTER TABLE projects ADD COLUMN priority integer
    CHECK (priority BETWEEN -1000000 AND 1000000);

-- {"priority": bool, "prompt_cache_key": bool, "context_window": int,
--  "context_windows": {model: int}}; validated by the admin API.
ALTER TABLE model_providers ADD COLUMN options jsonb NOT NULL DEFAULT '{}'::jsonb;
