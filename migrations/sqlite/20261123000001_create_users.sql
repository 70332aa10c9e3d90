-- Accounts. Emails are stored normalised (trimmed, lower-cased) by the store, so the unique
-- constraint is what makes concurrent duplicate registrations impossible.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE,
    full_name     TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)),
    updated_at    INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER))
);

-- The shape the store reads, identical in every dialect, so its queries are too.
CREATE VIEW user_records AS
SELECT id, email, full_name, password_hash, created_at
FROM users;
