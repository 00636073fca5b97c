-- XEP-0357 push notifications: the app servers an account enabled (§5), one row per
-- (account, app server JID, node). `options` is the publish-options data form the client
-- gave (serialized standalone, it declares xmlns='jabber:x:data'), sent back with every
-- notification (§7), or '' when none was given; `at` when it was enabled (Unix seconds).
-- Its UTF-8 bytes count in the account's stored bytes (`accounts.stored_bytes`), so
-- registrations share `limits.max_stored_bytes_per_account` with everything else.
CREATE TABLE push_registrations (
    localpart TEXT NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    jid       TEXT NOT NULL,
    node      TEXT NOT NULL,
    options   TEXT NOT NULL DEFAULT '',
    at        INTEGER NOT NULL,
    PRIMARY KEY (localpart, jid, node)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER push_registrations_usage_insert AFTER INSERT ON push_registrations BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes + length(CAST(NEW.jid AS BLOB))
        + length(CAST(NEW.node AS BLOB)) + length(CAST(NEW.options AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER push_registrations_usage_update AFTER UPDATE OF options ON push_registrations
BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes
        + length(CAST(NEW.options AS BLOB)) - length(CAST(OLD.options AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER push_registrations_usage_delete AFTER DELETE ON push_registrations BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes - length(CAST(OLD.jid AS BLOB))
        - length(CAST(OLD.node AS BLOB)) - length(CAST(OLD.options AS BLOB))
     WHERE localpart = OLD.localpart;
END;
