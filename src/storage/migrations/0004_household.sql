-- Schema version 4: the household, hearth's shared roster group (features/household): its
-- members see each other with mutual presence, with no subscription stored (RFC 6121 §2
-- and §4 as if each had `subscription='both'` with every other member).

-- One row per member; deleted with the account.
CREATE TABLE household_members (
    localpart TEXT PRIMARY KEY NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    -- Unix seconds, for the owner's information.
    added_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The roster group name the household was last shown under (`[household] group`), so a
-- renamed group changes the members' roster versions like any other change.
CREATE TABLE household_group (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL
) STRICT;

-- Every member's roster shows every other member, so a membership change is a change to
-- each member's roster: it takes a new version (RFC 6121 §2.6), whichever code path made
-- it (the admin CLI, an invite, an account's deletion cascading here). A client that
-- cached the roster before the change then gets the whole roster again, never a stale one.
CREATE TRIGGER household_members_version_insert AFTER INSERT ON household_members BEGIN
    INSERT INTO roster_versions (localpart, version)
        SELECT localpart, 1 FROM household_members WHERE true
        ON CONFLICT (localpart) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER household_members_version_delete AFTER DELETE ON household_members BEGIN
    INSERT INTO roster_versions (localpart, version)
        SELECT localpart, 1 FROM household_members WHERE true
        ON CONFLICT (localpart) DO UPDATE SET version = version + 1;
    -- The one removed, unless its account is the one being deleted.
    INSERT INTO roster_versions (localpart, version)
        SELECT localpart, 1 FROM accounts WHERE localpart = OLD.localpart
        ON CONFLICT (localpart) DO UPDATE SET version = version + 1;
END;
