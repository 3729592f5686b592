-- An OIDC sign-in in flight is bound to the browser that started it: the SHA-256 of a random
-- __Host- cookie set at the start, required and compared at the callback. The guest to
-- upgrade is decided at the start too (the guest proves itself then), never from a cookie
-- read at the callback. Nullable so the previous release keeps inserting during a rollout;
-- this release refuses a state without a browser hash.
ALTER TABLE oidc_login_states
    ADD COLUMN browser_hash  bytea,
    ADD COLUMN guest_user_id text REFERENCES users (id) ON DELETE SET NULL;
