-- Schema version 7: the message archive (XEP-0313), its preferences, and offline messages
-- that point at an archived copy instead of keeping a second one.

-- One row per (owner account, message): what the owner sent or received. `id` is the
-- message's XEP-0359 stanza-id and XEP-0313 archive id (a number, in arrival order);
-- `with_jid` the other party's bare JID; `at` when the server archived it (Unix seconds);
-- `stanza` the message serialized standalone (it declares xmlns='jabber:client'), without
-- the server's own <stanza-id/>. Its UTF-8 length counts in the account's stored bytes
-- (`accounts.stored_bytes`, by the triggers below), so the archive shares
-- `limits.max_stored_bytes_per_account` with everything else.
CREATE TABLE archive (
    id        INTEGER PRIMARY KEY,
    localpart TEXT NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    with_jid  TEXT NOT NULL,
    at        INTEGER NOT NULL,
    stanza    TEXT NOT NULL
) STRICT;
-- A page from the newest or from an id in the middle: a range of this index.
CREATE INDEX archive_by_user ON archive (localpart, id);
-- The same with a `with` filter.
CREATE INDEX archive_by_with ON archive (localpart, with_jid, id);

CREATE TRIGGER archive_usage_insert AFTER INSERT ON archive BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes + length(CAST(NEW.stanza AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER archive_usage_delete AFTER DELETE ON archive BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes - length(CAST(OLD.stanza AS BLOB))
     WHERE localpart = OLD.localpart;
END;

-- XEP-0313 §6 preferences: the default policy ('always', 'never', 'roster') and the JIDs
-- always or never archived, newline-separated. No row: the server's default.
CREATE TABLE archive_prefs (
    localpart      TEXT PRIMARY KEY NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    default_policy TEXT NOT NULL CHECK (default_policy IN ('always', 'never', 'roster')),
    always         TEXT NOT NULL DEFAULT '',
    never          TEXT NOT NULL DEFAULT ''
) STRICT, WITHOUT ROWID;

-- An offline message whose recipient archived it keeps only a reference (`archive_id`) and,
-- in `stanza`, what delivery adds to the archived copy (its <stanza-id/> and <delay/>): the
-- message is on the disk once. Rows with no archive id keep the whole message as before.
-- An archived row an offline row points at is never expired nor evicted.
ALTER TABLE offline_messages ADD COLUMN archive_id INTEGER;
CREATE INDEX offline_messages_by_archive ON offline_messages (archive_id)
    WHERE archive_id IS NOT NULL;
