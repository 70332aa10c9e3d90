-- Sessions, for refresh tokens (RFC 9700) and logout. A session outlives each of its refresh
-- tokens: every refresh spends one and issues the next, so a token presented a second time is
-- known to be replayed (stolen, or a client gone wrong) and its whole session is revoked.
CREATE TABLE sessions (
    id         TEXT    NOT NULL PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)),
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Refresh tokens by the SHA-256 of the token: the token itself is never stored. A spent token
-- stays (spent_at set) so that presenting it again is recognised as reuse.
CREATE TABLE refresh_tokens (
    hash       BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    session_id TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)),
    spent_at   INTEGER
);
-- For the cascade from sessions.
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

-- The shape the store reads, identical in every dialect; `active` is judged by the database's
-- own clock.
CREATE VIEW session_records AS
SELECT id, user_id, created_at, expires_at, revoked_at,
       (revoked_at IS NULL AND expires_at > CAST(strftime('%s', 'now') AS INTEGER)) AS active
FROM sessions;
