//! XEP-0045 storage: persistent rooms, their affiliations and history (migration 0011).
//! Temporary rooms are never written.

use rusqlite::{Connection, OptionalExtension, params};

use crate::storage::{Storage, StorageError};

/// A persistent room as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredRoom {
    /// The room's localpart.
    pub name: String,
    /// `key=value` lines ([`super::room::Config::to_text`]).
    pub config: String,
    /// (set by, text).
    pub subject: Option<(String, String)>,
    /// (bare JID, affiliation name).
    pub affiliations: Vec<(String, String)>,
    /// The room's vCard XML.
    pub vcard: Option<String>,
    /// (stanza-id, Unix seconds, message XML), oldest first. Only filled when read.
    pub history: Vec<(String, i64, String)>,
}

/// The rooms' table.
pub trait MucStore {
    /// The service's secret (XEP-0421 occupant ids), made the first time.
    fn muc_secret(&self) -> Result<Vec<u8>, StorageError>;
    /// Every persistent room with its history.
    fn muc_rooms(&self) -> Result<Vec<StoredRoom>, StorageError>;
    /// Writes the room's configuration, subject, vCard and affiliations as given.
    fn muc_save_room(&self, room: &StoredRoom) -> Result<(), StorageError>;
    /// Adds a message to a room's history, keeping the last `keep`.
    fn muc_add_history(
        &self,
        room: &str,
        id: &str,
        at: i64,
        xml: &str,
        keep: usize,
    ) -> Result<(), StorageError>;
    /// Replaces the stored message with stanza-id `id` (a XEP-0425 tombstone).
    fn muc_replace_history(&self, room: &str, id: &str, xml: &str) -> Result<(), StorageError>;
    /// Removes the room and everything of it.
    fn muc_delete_room(&self, room: &str) -> Result<(), StorageError>;
}

impl MucStore for Storage {
    fn muc_secret(&self) -> Result<Vec<u8>, StorageError> {
        let mut fresh = vec![0u8; 32];
        getrandom::fill(&mut fresh).map_err(|_| StorageError::Unavailable)?;
        self.write(move |s, c| {
            let e = || s.sqlite_err("read the group chat secret");
            c.execute(
                "INSERT INTO muc_secret (id, secret) VALUES (1, ?1) ON CONFLICT (id) DO NOTHING",
                [&fresh],
            )
            .map_err(e())?;
            c.query_row("SELECT secret FROM muc_secret WHERE id = 1", [], |r| {
                r.get(0)
            })
            .map_err(e())
        })
    }

    fn muc_rooms(&self) -> Result<Vec<StoredRoom>, StorageError> {
        let conn = self.conn();
        let e = || self.sqlite_err("read rooms");
        let mut rooms = Vec::new();
        {
            let mut stmt = conn
                .prepare("SELECT name, config, subject, subject_by, vcard FROM muc_rooms")
                .map_err(e())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .map_err(e())?;
            for row in rows {
                let (name, config, subject, by, vcard) = row.map_err(e())?;
                rooms.push(StoredRoom {
                    name,
                    config,
                    subject: subject.map(|s| (by, s)),
                    affiliations: Vec::new(),
                    vcard: (!vcard.is_empty()).then_some(vcard),
                    history: Vec::new(),
                });
            }
        }
        for room in &mut rooms {
            let mut stmt = conn
                .prepare_cached("SELECT jid, affiliation FROM muc_affiliations WHERE room = ?1")
                .map_err(e())?;
            room.affiliations = stmt
                .query_map([&room.name], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(e())?
                .collect::<Result<_, _>>()
                .map_err(e())?;
            let mut stmt = conn
                .prepare_cached("SELECT id, at, xml FROM muc_history WHERE room = ?1 ORDER BY seq")
                .map_err(e())?;
            room.history = stmt
                .query_map([&room.name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(e())?
                .collect::<Result<_, _>>()
                .map_err(e())?;
        }
        Ok(rooms)
    }

    fn muc_save_room(&self, room: &StoredRoom) -> Result<(), StorageError> {
        let room = room.clone();
        self.write(move |s, c| save_room(s, c, &room))
    }

    fn muc_add_history(
        &self,
        room: &str,
        id: &str,
        at: i64,
        xml: &str,
        keep: usize,
    ) -> Result<(), StorageError> {
        let (room, id, xml) = (room.to_owned(), id.to_owned(), xml.to_owned());
        self.write(move |s, c| add_history(s, c, &room, &id, at, &xml, keep))
    }

    fn muc_replace_history(&self, room: &str, id: &str, xml: &str) -> Result<(), StorageError> {
        let (room, id, xml) = (room.to_owned(), id.to_owned(), xml.to_owned());
        self.write(move |s, c| replace_history(s, c, &room, &id, &xml))
    }

    fn muc_delete_room(&self, room: &str) -> Result<(), StorageError> {
        let room = room.to_owned();
        self.write(move |s, c| delete_room(s, c, &room))
    }
}

// The writes, on a connection inside a group commit's transaction (`Storage::write`,
// `Storage::write_deferred`): the rooms' changes are queued without waiting for the disk
// and committed with the other deferred writes, in order, and before the server exits.

/// Writes the room's configuration, subject, vCard and affiliations as given.
pub(crate) fn save_room(
    s: &Storage,
    c: &Connection,
    room: &StoredRoom,
) -> Result<(), StorageError> {
    let e = || s.sqlite_err("save a room");
    let (by, subject) = match &room.subject {
        Some((by, t)) => (by.as_str(), Some(t.as_str())),
        None => ("", None),
    };
    c.execute(
        "INSERT INTO muc_rooms (name, config, subject, subject_by, vcard) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET \
         config = excluded.config, subject = excluded.subject, \
         subject_by = excluded.subject_by, vcard = excluded.vcard",
        params![
            room.name,
            room.config,
            subject,
            by,
            room.vcard.as_deref().unwrap_or("")
        ],
    )
    .map_err(e())?;
    c.execute("DELETE FROM muc_affiliations WHERE room = ?1", [&room.name])
        .map_err(e())?;
    for (jid, aff) in &room.affiliations {
        c.execute(
            "INSERT INTO muc_affiliations (room, jid, affiliation) VALUES (?1, ?2, ?3)",
            params![room.name, jid, aff],
        )
        .map_err(e())?;
    }
    Ok(())
}

/// Adds a message to a stored room's history, keeping the last `keep`.
pub(crate) fn add_history(
    s: &Storage,
    c: &Connection,
    room: &str,
    id: &str,
    at: i64,
    xml: &str,
    keep: usize,
) -> Result<(), StorageError> {
    let e = || s.sqlite_err("add to a room's history");
    let exists: Option<i64> = c
        .query_row("SELECT 1 FROM muc_rooms WHERE name = ?1", [room], |r| {
            r.get(0)
        })
        .optional()
        .map_err(e())?;
    if exists.is_none() {
        return Ok(());
    }
    c.execute(
        "INSERT INTO muc_history (room, id, at, xml) VALUES (?1, ?2, ?3, ?4)",
        params![room, id, at, xml],
    )
    .map_err(e())?;
    c.execute(
        "DELETE FROM muc_history WHERE room = ?1 AND seq NOT IN \
         (SELECT seq FROM muc_history WHERE room = ?1 ORDER BY seq DESC LIMIT ?2)",
        params![room, i64::try_from(keep).unwrap_or(i64::MAX)],
    )
    .map_err(e())?;
    Ok(())
}

/// Replaces the stored message with stanza-id `id` (a XEP-0425 tombstone).
pub(crate) fn replace_history(
    s: &Storage,
    c: &Connection,
    room: &str,
    id: &str,
    xml: &str,
) -> Result<(), StorageError> {
    c.execute(
        "UPDATE muc_history SET xml = ?3 WHERE room = ?1 AND id = ?2",
        params![room, id, xml],
    )
    .map_err(s.sqlite_err("replace a message in a room's history"))?;
    Ok(())
}

/// Removes the room and everything of it.
pub(crate) fn delete_room(s: &Storage, c: &Connection, room: &str) -> Result<(), StorageError> {
    c.execute("DELETE FROM muc_rooms WHERE name = ?1", [room])
        .map_err(s.sqlite_err("delete a room"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_round_trip_and_history_is_bounded() {
        let (_dir, s) = crate::storage::test_store(&[]);
        let room = StoredRoom {
            name: "family".into(),
            config: "persistent=1\n".into(),
            subject: Some(("ann".into(), "tea".into())),
            affiliations: vec![("ann@home".into(), "owner".into())],
            vcard: None,
            history: Vec::new(),
        };
        s.muc_save_room(&room).unwrap();
        for i in 0..5 {
            s.muc_add_history("family", &format!("id{i}"), i, "<message/>", 3)
                .unwrap();
        }
        let got = s.muc_rooms().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].affiliations, room.affiliations);
        assert_eq!(got[0].subject, room.subject);
        let ids: Vec<&str> = got[0].history.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(ids, ["id2", "id3", "id4"]);
        s.muc_delete_room("family").unwrap();
        let secret = s.muc_secret().unwrap();
        assert_eq!(secret.len(), 32);
        assert_eq!(s.muc_secret().unwrap(), secret);
        assert!(s.muc_rooms().unwrap().is_empty());
    }
}
