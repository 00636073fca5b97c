-- Schema version 2: instant messaging (RFC 6121) — rosters, subscription requests, offline
-- messages (XEP-0160), blocking (XEP-0191) and last activity (XEP-0012). Everything here is
-- per account and goes with it (ON DELETE CASCADE).

-- A roster item (RFC 6121 §2.1.2): one contact in one user's contact list. `jid` is the
-- contact's normalized bare JID. Pending-in is not here: it is a row in
-- `subscription_requests` (with the stanza to deliver again), so an unanswered request
-- never shows up as a roster item the user did not add.
CREATE TABLE roster_items (
    localpart    TEXT NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    jid          TEXT NOT NULL,
    -- The user's name for the contact (§2.1.2.4); NULL when none was given.
    name         TEXT,
    -- §2.1.2.5: whose presence flows which way.
    subscription TEXT NOT NULL DEFAULT 'none'
                 CHECK (subscription IN ('none', 'to', 'from', 'both')),
    -- Pending-out (§2.1.2.2 ask='subscribe'): the user asked for the contact's presence.
    pending_out  INTEGER NOT NULL DEFAULT 0 CHECK (pending_out IN (0, 1)),
    -- Pre-approval (§3.4, §2.1.2.1 approved='true'): the user already accepts the contact.
    approved     INTEGER NOT NULL DEFAULT 0 CHECK (approved IN (0, 1)),
    PRIMARY KEY (localpart, jid)
) STRICT, WITHOUT ROWID;

-- The groups of a roster item (§2.1.2.3), unordered, no duplicates.
CREATE TABLE roster_groups (
    localpart TEXT NOT NULL,
    jid       TEXT NOT NULL,
    grp       TEXT NOT NULL,
    PRIMARY KEY (localpart, jid, grp),
    FOREIGN KEY (localpart, jid) REFERENCES roster_items (localpart, jid) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Roster versioning (§2.6): bumped on every change a roster push announces.
CREATE TABLE roster_versions (
    localpart TEXT PRIMARY KEY NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    version   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Inbound subscription requests not yet answered (Pending-In, §3.1.3): the stanza as it
-- was delivered, to deliver again at each login until the user approves or denies.
CREATE TABLE subscription_requests (
    localpart   TEXT NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    jid         TEXT NOT NULL,
    stanza      TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (localpart, jid)
) STRICT, WITHOUT ROWID;

-- Messages kept for a user with no available resource (XEP-0160), in arrival order (`id`),
-- serialized with their <delay/> already added.
CREATE TABLE offline_messages (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    localpart TEXT NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    stanza    TEXT NOT NULL,
    stored_at INTEGER NOT NULL
) STRICT;
CREATE INDEX offline_messages_by_user ON offline_messages (localpart, id);

-- Blocked JIDs (XEP-0191), as the user wrote them (normalized): bare, full or domain.
CREATE TABLE blocklist (
    localpart TEXT NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    jid       TEXT NOT NULL,
    PRIMARY KEY (localpart, jid)
) STRICT, WITHOUT ROWID;

-- When the user's last resource went offline, and its status text (XEP-0012 §4).
CREATE TABLE last_activity (
    localpart TEXT PRIMARY KEY NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    logout_at INTEGER NOT NULL,
    status    TEXT NOT NULL DEFAULT ''
) STRICT, WITHOUT ROWID;
