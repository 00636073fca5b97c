-- Schema version 12 (issue 20): XEP-0363 HTTP File Upload. One row per slot a local user
-- was given: what the client declared (name, size, type), and once the PUT finished, when.
-- The file itself lives beside the database, in `uploads/<token>`; the row is what makes
-- it servable. A slot never used is deleted by the sweep after a few minutes, and its
-- reserved size leaves the user's quota with it. Rows go with their account (cascade);
-- the sweep then removes the files that no row names.
CREATE TABLE uploads (
    -- 128 random bits, hex: the capability in the PUT and GET URLs.
    token TEXT PRIMARY KEY,
    localpart TEXT NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    -- Unix seconds the slot was given.
    created INTEGER NOT NULL,
    -- Unix seconds the upload completed; NULL while the slot waits for its PUT.
    stored INTEGER,
    -- Unix seconds after which the file is deleted; NULL: kept until the account goes.
    expires INTEGER
) WITHOUT ROWID;
CREATE INDEX uploads_by_user ON uploads (localpart, size);
CREATE INDEX uploads_by_age ON uploads (stored, created);
