-- Background responses queued or running, per project and per user: counted on every
-- background create (the limits) and by the fair claim. Few rows at any time.
CREATE INDEX responses_background_project ON responses (organization_id, project_id)
    WHERE background AND status IN ('queued', 'in_progress');
CREATE INDEX responses_background_user ON responses (user_id)
    WHERE background AND status IN ('queued', 'in_progress');
