-- Accounts. Emails are stored normalised (trimmed, lower-cased) by the store, so the unique
-- constraint is what makes concurrent duplicate registrations impossible.
CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         TEXT        NOT NULL CONSTRAINT users_email_key UNIQUE,
    full_name     TEXT        NOT NULL,
    password_hash TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The shape the store reads, identical in every dialect, so its queries are too.
CREATE VIEW user_records AS
SELECT id, email, full_name, password_hash,
       CAST(EXTRACT(EPOCH FROM created_at) AS BIGINT) AS created_at
FROM users;
