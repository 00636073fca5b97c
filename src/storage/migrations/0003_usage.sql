-- Schema version 3: how many bytes each account keeps, so `limits.max_stored_bytes_per_account`
-- is checked without reading every row the account owns. What counts is the UTF-8 length of
-- what can grow: roster items (contact JID and name) and their groups, unanswered
-- subscription requests, offline messages and the blocklist.
--
-- Offline messages carry their own size, summed through the per-user index: storing one
-- then writes nothing more than before (each extra page written per message wears an SD
-- card). Everything else changes rarely and is summed into `accounts.stored_bytes` by
-- triggers, exact inside the same transaction as the write, whichever code path writes
-- (cascading deletes included). Rows of a deleted account update nothing: the UPDATE finds
-- no account.

ALTER TABLE offline_messages ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE offline_messages SET bytes = length(CAST(stanza AS BLOB));
DROP INDEX offline_messages_by_user;
CREATE INDEX offline_messages_by_user ON offline_messages (localpart, id, bytes);

ALTER TABLE accounts ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;

UPDATE accounts SET stored_bytes =
      (SELECT COALESCE(SUM(length(CAST(jid AS BLOB)) + COALESCE(length(CAST(name AS BLOB)), 0)), 0)
         FROM roster_items r WHERE r.localpart = accounts.localpart)
    + (SELECT COALESCE(SUM(length(CAST(grp AS BLOB))), 0)
         FROM roster_groups g WHERE g.localpart = accounts.localpart)
    + (SELECT COALESCE(SUM(length(CAST(stanza AS BLOB))), 0)
         FROM subscription_requests q WHERE q.localpart = accounts.localpart)
    + (SELECT COALESCE(SUM(length(CAST(jid AS BLOB))), 0)
         FROM blocklist b WHERE b.localpart = accounts.localpart);

CREATE TRIGGER roster_items_usage_insert AFTER INSERT ON roster_items BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes + length(CAST(NEW.jid AS BLOB))
        + COALESCE(length(CAST(NEW.name AS BLOB)), 0)
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER roster_items_usage_update AFTER UPDATE OF name ON roster_items BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes
        + COALESCE(length(CAST(NEW.name AS BLOB)), 0) - COALESCE(length(CAST(OLD.name AS BLOB)), 0)
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER roster_items_usage_delete AFTER DELETE ON roster_items BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes - length(CAST(OLD.jid AS BLOB))
        - COALESCE(length(CAST(OLD.name AS BLOB)), 0)
     WHERE localpart = OLD.localpart;
END;

CREATE TRIGGER roster_groups_usage_insert AFTER INSERT ON roster_groups BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes + length(CAST(NEW.grp AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER roster_groups_usage_delete AFTER DELETE ON roster_groups BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes - length(CAST(OLD.grp AS BLOB))
     WHERE localpart = OLD.localpart;
END;

CREATE TRIGGER subscription_requests_usage_insert AFTER INSERT ON subscription_requests BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes + length(CAST(NEW.stanza AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER subscription_requests_usage_update AFTER UPDATE OF stanza ON subscription_requests
BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes
        + length(CAST(NEW.stanza AS BLOB)) - length(CAST(OLD.stanza AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER subscription_requests_usage_delete AFTER DELETE ON subscription_requests BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes - length(CAST(OLD.stanza AS BLOB))
     WHERE localpart = OLD.localpart;
END;

CREATE TRIGGER blocklist_usage_insert AFTER INSERT ON blocklist BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes + length(CAST(NEW.jid AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER blocklist_usage_delete AFTER DELETE ON blocklist BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes - length(CAST(OLD.jid AS BLOB))
     WHERE localpart = OLD.localpart;
END;
