-- Schema version 5: invitations to register an account (XEP-0077 in-band registration
-- with `[registration] policy = "invite"`, XEP-0401's pre-authenticated tokens).
--
-- The token itself is never stored: only its SHA-256, so a copy of the database (a
-- backup) cannot be used to register. Tokens are random and long, so an unsalted hash is
-- enough to make them unguessable from the file.
CREATE TABLE invites (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- SHA-256 of the token, hex.
    token_hash  TEXT NOT NULL UNIQUE,
    -- Unix seconds; the invite is refused from then on.
    expires_at  INTEGER NOT NULL,
    -- Registrations it still allows; 0 is used up (kept for `invite list`).
    uses_left   INTEGER NOT NULL CHECK (uses_left >= 0),
    created_at  INTEGER NOT NULL,
    -- Who or what made it, for the owner's information ('admin', or an account).
    created_by  TEXT NOT NULL DEFAULT '',
    -- A note for the owner ("for grandma's tablet").
    note        TEXT NOT NULL DEFAULT ''
) STRICT;
