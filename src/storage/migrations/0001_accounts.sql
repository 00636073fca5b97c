-- Schema version 1: accounts and their credentials (DESIGN.md "Credentials").

-- One row per local user. The localpart is already normalized (RFC 7622 §3.3, PRECIS
-- UsernameCaseMapped), so equal strings here are equal addresses.
CREATE TABLE accounts (
    localpart     TEXT PRIMARY KEY NOT NULL,
    -- argon2id PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash): checks SASL PLAIN.
    password_hash TEXT NOT NULL,
    -- Unix seconds, for the owner's information.
    created_at    INTEGER NOT NULL
) STRICT;

-- What a SCRAM login needs (RFC 5802 §3), per hash: salt, iteration count, StoredKey and
-- ServerKey. Never the password, never SaltedPassword. No rows when the owner turned SCRAM
-- keys off; deleted with the account.
CREATE TABLE scram_keys (
    localpart  TEXT NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    -- The SASL mechanism name without -PLUS: 'SCRAM-SHA-1' or 'SCRAM-SHA-256'.
    mechanism  TEXT NOT NULL,
    salt       BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (localpart, mechanism)
) STRICT, WITHOUT ROWID;
