-- Schema version 9: private XML storage (XEP-0049) and vcard-temp (XEP-0054). Version 8 is
-- PEP's (XEP-0163), built beside this one.
--
-- Both count in the account's stored bytes (`accounts.stored_bytes`, by the triggers below)
-- as the UTF-8 length of the XML kept, so they share `limits.max_stored_bytes_per_account`
-- with the roster, offline messages and the archive. A deleted account takes its rows with
-- it (cascading deletes).

-- One row per (account, element name, namespace): the element a client stored with
-- `jabber:iq:private`, serialized standalone (it declares its own namespace).
CREATE TABLE private_xml (
    localpart TEXT NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    ns        TEXT NOT NULL,
    name      TEXT NOT NULL,
    xml       TEXT NOT NULL,
    PRIMARY KEY (localpart, ns, name)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER private_xml_usage_insert AFTER INSERT ON private_xml BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes + length(CAST(NEW.xml AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER private_xml_usage_update AFTER UPDATE OF xml ON private_xml BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes
        + length(CAST(NEW.xml AS BLOB)) - length(CAST(OLD.xml AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER private_xml_usage_delete AFTER DELETE ON private_xml BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes - length(CAST(OLD.xml AS BLOB))
     WHERE localpart = OLD.localpart;
END;

-- One vCard per account: the `<vCard xmlns='vcard-temp'/>` element as stored, and the
-- lowercase hex SHA-1 of its PHOTO's binary value (XEP-0153 §4), NULL without a photo,
-- computed when it is stored so presence can carry it without reading the vCard.
CREATE TABLE vcards (
    localpart  TEXT PRIMARY KEY NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    xml        TEXT NOT NULL,
    photo_sha1 TEXT
) STRICT, WITHOUT ROWID;

CREATE TRIGGER vcards_usage_insert AFTER INSERT ON vcards BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes + length(CAST(NEW.xml AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER vcards_usage_update AFTER UPDATE OF xml ON vcards BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes
        + length(CAST(NEW.xml AS BLOB)) - length(CAST(OLD.xml AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER vcards_usage_delete AFTER DELETE ON vcards BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes - length(CAST(OLD.xml AS BLOB))
     WHERE localpart = OLD.localpart;
END;
