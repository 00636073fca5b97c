-- XEP-0045 persistent rooms (temporary rooms live in memory only). `config` is the room's
-- configuration as `key=value` lines (features::muc::room::Config::to_text); `subject_by`
-- the nick that set the subject; `vcard` the room's XEP-0054 vCard as XML ('' for none).
CREATE TABLE muc_rooms (
    name       TEXT PRIMARY KEY,
    config     TEXT NOT NULL,
    subject    TEXT,
    subject_by TEXT NOT NULL DEFAULT '',
    vcard      TEXT NOT NULL DEFAULT ''
) STRICT, WITHOUT ROWID;

-- §5.2 affiliations other than none, by bare JID.
CREATE TABLE muc_affiliations (
    room        TEXT NOT NULL REFERENCES muc_rooms (name) ON DELETE CASCADE,
    jid         TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    PRIMARY KEY (room, jid)
) STRICT, WITHOUT ROWID;

-- §7.2.15 history: the last messages of each room (bounded by its history length), as
-- broadcast (without `to`), with the XEP-0359 stanza-id the room gave them.
CREATE TABLE muc_history (
    room TEXT NOT NULL REFERENCES muc_rooms (name) ON DELETE CASCADE,
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    id   TEXT NOT NULL,
    at   INTEGER NOT NULL,
    xml  TEXT NOT NULL
) STRICT;
CREATE INDEX muc_history_room ON muc_history (room, seq);

-- The service's secret that XEP-0421 occupant ids are derived from: one row, made at the
-- first start, so an occupant's id stays the same across restarts.
CREATE TABLE muc_secret (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    secret BLOB NOT NULL
) STRICT;
