-- Sessions, for refresh tokens (RFC 9700) and logout. A session outlives each of its refresh
-- tokens: every refresh spends one and issues the next, so a token presented a second time is
-- known to be replayed (stolen, or a client gone wrong) and its whole session is revoked.
CREATE TABLE sessions (
    id         TEXT        PRIMARY KEY,
    user_id    BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Refresh tokens by the SHA-256 of the token: the token itself is never stored. A spent token
-- stays (spent_at set) so that presenting it again is recognised as reuse.
CREATE TABLE refresh_tokens (
    hash       BYTEA       PRIMARY KEY CHECK (octet_length(hash) = 32),
    session_id TEXT        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    spent_at   TIMESTAMPTZ
);
-- For the cascade from sessions.
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

-- The shape the store reads, identical in every dialect. Times are floored to the second, so a
-- reported expires_at is never later than the real one; `active` is judged by the database's
-- own clock at full precision.
CREATE VIEW session_records AS
SELECT id, user_id,
       CAST(FLOOR(EXTRACT(EPOCH FROM created_at)) AS BIGINT) AS created_at,
       CAST(FLOOR(EXTRACT(EPOCH FROM expires_at)) AS BIGINT) AS expires_at,
       CAST(FLOOR(EXTRACT(EPOCH FROM revoked_at)) AS BIGINT) AS revoked_at,
       (revoked_at IS NULL AND expires_at > now()) AS active
FROM sessions;
