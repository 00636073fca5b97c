-- Schema version 8: personal eventing (XEP-0163), the XEP-0060 subset each account's PEP
-- service needs: its nodes with their configuration, their items, the affiliations that
-- open a whitelist node to others (or shut someone out), and explicit subscriptions.
-- Everything counts in the account's stored bytes (`accounts.stored_bytes`, by the
-- triggers below), so PEP shares `limits.max_stored_bytes_per_account` with the roster,
-- offline messages and the archive.

-- One row per node. `config` is the node configuration as `var=value` lines of the
-- XEP-0060 §16.4 `pubsub#node_config` form (only what differs from the defaults).
CREATE TABLE pep_nodes (
    localpart  TEXT NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    node       TEXT NOT NULL,
    config     TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (localpart, node)
) STRICT, WITHOUT ROWID;

-- Published items: `seq` orders them (publishing again under the same id moves an item to
-- the end, as XEP-0060 §7.1.2 says), `payload` is the item's one child serialized
-- standalone (it declares its own namespace).
CREATE TABLE pep_items (
    seq       INTEGER PRIMARY KEY,
    localpart TEXT NOT NULL,
    node      TEXT NOT NULL,
    item_id   TEXT NOT NULL,
    at        INTEGER NOT NULL,
    payload   TEXT NOT NULL,
    FOREIGN KEY (localpart, node) REFERENCES pep_nodes (localpart, node) ON DELETE CASCADE
) STRICT;
CREATE UNIQUE INDEX pep_items_by_id ON pep_items (localpart, node, item_id);
CREATE INDEX pep_items_by_node ON pep_items (localpart, node, seq);

-- XEP-0060 §4.1 affiliations the owner gave others: 'member' or 'publisher' (may read a
-- whitelist node) or 'outcast' (may read nothing). The owner's own is implied.
CREATE TABLE pep_affiliations (
    localpart   TEXT NOT NULL,
    node        TEXT NOT NULL,
    jid         TEXT NOT NULL,
    affiliation TEXT NOT NULL CHECK (affiliation IN ('member', 'publisher', 'outcast')),
    PRIMARY KEY (localpart, node, jid),
    FOREIGN KEY (localpart, node) REFERENCES pep_nodes (localpart, node) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- XEP-0060 §6.1 explicit subscriptions, by bare or full JID.
CREATE TABLE pep_subscriptions (
    localpart TEXT NOT NULL,
    node      TEXT NOT NULL,
    jid       TEXT NOT NULL,
    subid     TEXT NOT NULL,
    PRIMARY KEY (localpart, node, jid),
    FOREIGN KEY (localpart, node) REFERENCES pep_nodes (localpart, node) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE TRIGGER pep_nodes_usage_insert AFTER INSERT ON pep_nodes BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes
        + length(CAST(NEW.node AS BLOB)) + length(CAST(NEW.config AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER pep_nodes_usage_update AFTER UPDATE OF config ON pep_nodes BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes
        + length(CAST(NEW.config AS BLOB)) - length(CAST(OLD.config AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER pep_nodes_usage_delete AFTER DELETE ON pep_nodes BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes
        - length(CAST(OLD.node AS BLOB)) - length(CAST(OLD.config AS BLOB))
     WHERE localpart = OLD.localpart;
END;
CREATE TRIGGER pep_items_usage_insert AFTER INSERT ON pep_items BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes
        + length(CAST(NEW.item_id AS BLOB)) + length(CAST(NEW.payload AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER pep_items_usage_delete AFTER DELETE ON pep_items BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes
        - length(CAST(OLD.item_id AS BLOB)) - length(CAST(OLD.payload AS BLOB))
     WHERE localpart = OLD.localpart;
END;
CREATE TRIGGER pep_affiliations_usage_insert AFTER INSERT ON pep_affiliations BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes + length(CAST(NEW.jid AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER pep_affiliations_usage_delete AFTER DELETE ON pep_affiliations BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes - length(CAST(OLD.jid AS BLOB))
     WHERE localpart = OLD.localpart;
END;
CREATE TRIGGER pep_subscriptions_usage_insert AFTER INSERT ON pep_subscriptions BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes + length(CAST(NEW.jid AS BLOB))
     WHERE localpart = NEW.localpart;
END;
CREATE TRIGGER pep_subscriptions_usage_delete AFTER DELETE ON pep_subscriptions BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes - length(CAST(OLD.jid AS BLOB))
     WHERE localpart = OLD.localpart;
END;
