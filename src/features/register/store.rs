//! XEP-0077 storage: invitations (tokens stored as SHA-256 only), and what account removal
//! reads across accounts (the local rosters that list the removed account).

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::jid::BareJid;
use crate::storage::{Storage, StorageError};

/// One invitation, as stored (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// Its row id, for [`InviteStore::revoke_invite`] and [`InviteStore::restore_invite`].
    pub id: i64,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
    /// Registrations it still allows (after this one, for [`InviteStore::consume_invite`]).
    pub uses_left: u32,
    pub created_at: i64,
    pub created_by: String,
    pub note: String,
    /// What registering with it does besides creating the account.
    pub effects: InviteEffects,
}

/// What an invitation does for the account made with it (schema version 6), besides
/// allowing the registration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InviteEffects {
    /// The new account joins the household (`hearth invite --household`).
    pub household: bool,
    /// The local account (normalized localpart) the new user becomes a mutual contact of
    /// (XEP-0401 §4 "User Invitation"), and whose XEP-0379 subscription requests the token
    /// approves; `None` for an account-only invitation.
    pub inviter: Option<String>,
}

/// Invitations to register (`[registration] policy = "invite"`).
///
/// The token a person is given is random text ([`new_token`]); storage keeps its SHA-256
/// ([`token_hash`]), so neither the database nor a backup can be used to register.
pub trait InviteStore {
    /// Stores an invitation for `token`, valid until `expires_at` (Unix seconds) for
    /// `uses` registrations. Returns its id.
    fn create_invite(
        &self,
        token: &str,
        expires_at: i64,
        uses: u32,
        created_by: &str,
        note: &str,
    ) -> Result<i64, StorageError> {
        self.create_invite_with(
            token,
            expires_at,
            uses,
            created_by,
            note,
            &InviteEffects::default(),
        )
    }
    /// [`InviteStore::create_invite`] with what registering with it does besides.
    fn create_invite_with(
        &self,
        token: &str,
        expires_at: i64,
        uses: u32,
        created_by: &str,
        note: &str,
        effects: &InviteEffects,
    ) -> Result<i64, StorageError>;
    /// The invitation for `token` if it is still usable at `now` (not expired, uses left),
    /// without taking a use: for XEP-0379, where a token issued by a user approves a
    /// subscription request to that user.
    fn find_invite(&self, token: &str, now: i64) -> Result<Option<Invite>, StorageError>;
    /// Takes one use of the invitation for `token` if it exists, has not expired at `now`
    /// and has uses left: the invite afterwards, or `None` (nothing changed). One atomic
    /// statement, so two registrations racing for the last use cannot both get it.
    fn consume_invite(&self, token: &str, now: i64) -> Result<Option<Invite>, StorageError>;
    /// Gives back a use taken by [`InviteStore::consume_invite`] for a registration that
    /// then failed (the name was taken meanwhile).
    fn restore_invite(&self, id: i64) -> Result<(), StorageError>;
    /// Every stored invitation, newest first, used up and expired ones included.
    fn list_invites(&self) -> Result<Vec<Invite>, StorageError>;
    /// Deletes an invitation; false if there was none with that id.
    fn revoke_invite(&self, id: i64) -> Result<bool, StorageError>;
}

/// SHA-256 of a token, in lowercase hex: what is stored and looked up.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random token: 24 bytes from the OS, base64url without padding (32 characters),
/// fit for a URI (XEP-0401 `xmpp:` links).
pub fn new_token() -> Result<String, StorageError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)
        .map_err(|e| StorageError::Crypto(format!("no randomness from the OS: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn invite_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Invite> {
    Ok(Invite {
        id: r.get(0)?,
        expires_at: r.get(1)?,
        uses_left: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        created_at: r.get(3)?,
        created_by: r.get(4)?,
        note: r.get(5)?,
        effects: InviteEffects {
            household: r.get(6)?,
            inviter: r.get(7)?,
        },
    })
}

const INVITE_COLUMNS: &str =
    "id, expires_at, uses_left, created_at, created_by, note, household, inviter";

impl InviteStore for Storage {
    fn create_invite_with(
        &self,
        token: &str,
        expires_at: i64,
        uses: u32,
        created_by: &str,
        note: &str,
        effects: &InviteEffects,
    ) -> Result<i64, StorageError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO invites (token_hash, expires_at, uses_left, created_at, created_by,
                                  note, household, inviter)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                token_hash(token),
                expires_at,
                i64::from(uses),
                crate::storage::unix_now(),
                created_by,
                note,
                effects.household,
                effects.inviter,
            ],
        )
        .map_err(self.sqlite_err("store an invitation"))?;
        Ok(conn.last_insert_rowid())
    }

    fn find_invite(&self, token: &str, now: i64) -> Result<Option<Invite>, StorageError> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {INVITE_COLUMNS} FROM invites
                      WHERE token_hash = ?1 AND uses_left > 0 AND expires_at > ?2"
                ),
                params![token_hash(token), now],
                invite_from_row,
            )
            .optional()
            .map_err(self.sqlite_err("read an invitation"))
    }

    fn consume_invite(&self, token: &str, now: i64) -> Result<Option<Invite>, StorageError> {
        self.conn()
            .query_row(
                &format!(
                    "UPDATE invites SET uses_left = uses_left - 1
                      WHERE token_hash = ?1 AND uses_left > 0 AND expires_at > ?2
                      RETURNING {INVITE_COLUMNS}"
                ),
                params![token_hash(token), now],
                invite_from_row,
            )
            .optional()
            .map_err(self.sqlite_err("use an invitation"))
    }

    fn restore_invite(&self, id: i64) -> Result<(), StorageError> {
        self.conn()
            .execute(
                "UPDATE invites SET uses_left = uses_left + 1 WHERE id = ?1",
                [id],
            )
            .map(|_| ())
            .map_err(self.sqlite_err("give back an invitation's use"))
    }

    fn list_invites(&self) -> Result<Vec<Invite>, StorageError> {
        let conn = self.conn();
        let mut st = conn
            .prepare(&format!(
                "SELECT {INVITE_COLUMNS} FROM invites ORDER BY id DESC"
            ))
            .map_err(self.sqlite_err("list invitations"))?;
        let rows = st
            .query_map([], invite_from_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.sqlite_err("list invitations"))?;
        Ok(rows)
    }

    fn revoke_invite(&self, id: i64) -> Result<bool, StorageError> {
        self.conn()
            .execute("DELETE FROM invites WHERE id = ?1", [id])
            .map(|n| n > 0)
            .map_err(self.sqlite_err("revoke an invitation"))
    }
}

/// What account removal reads about other accounts.
pub trait RemovalStore {
    /// The local accounts whose roster has an item for `jid` (RFC 6121 §2), sorted.
    fn rosters_listing(&self, jid: &BareJid) -> Result<Vec<String>, StorageError>;
    /// Who asked `user` for a subscription still unanswered without being in its roster
    /// (RFC 6121 §3.1.3 Pending-In with no item), sorted.
    fn requests_without_item(&self, user: &str) -> Result<Vec<String>, StorageError>;
}

impl RemovalStore for Storage {
    fn rosters_listing(&self, jid: &BareJid) -> Result<Vec<String>, StorageError> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT localpart FROM roster_items WHERE jid = ?1 ORDER BY localpart")
            .map_err(self.sqlite_err("find rosters listing an account"))?;
        let rows = st
            .query_map([jid.as_str()], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
            .map_err(self.sqlite_err("find rosters listing an account"))?;
        Ok(rows)
    }

    fn requests_without_item(&self, user: &str) -> Result<Vec<String>, StorageError> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT jid FROM subscription_requests q WHERE localpart = ?1
                   AND NOT EXISTS (SELECT 1 FROM roster_items r
                                    WHERE r.localpart = q.localpart AND r.jid = q.jid)
                 ORDER BY jid",
            )
            .map_err(self.sqlite_err("read subscription requests"))?;
        let rows = st
            .query_map([user], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
            .map_err(self.sqlite_err("read subscription requests"))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invites_are_stored_hashed_and_used_up() {
        let (_d, s) = crate::storage::test_store(&[]);
        let id = s
            .create_invite("tok-1", 1000, 2, "admin", "grandma")
            .unwrap();
        // Only the hash is in the file.
        let stored: String = s
            .conn()
            .query_row("SELECT token_hash FROM invites", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, token_hash("tok-1"));
        assert_ne!(stored, "tok-1");
        assert_eq!(stored.len(), 64);

        assert_eq!(s.consume_invite("nope", 10).unwrap(), None);
        let first = s.consume_invite("tok-1", 10).unwrap().unwrap();
        assert_eq!((first.id, first.uses_left), (id, 1));
        assert_eq!(first.note, "grandma");
        s.consume_invite("tok-1", 10).unwrap().unwrap();
        // Used up.
        assert_eq!(s.consume_invite("tok-1", 10).unwrap(), None);
        s.restore_invite(id).unwrap();
        // Expired (at `expires_at` itself too).
        assert_eq!(s.consume_invite("tok-1", 1000).unwrap(), None);
        assert_eq!(
            s.consume_invite("tok-1", 999).unwrap().unwrap().uses_left,
            0
        );

        assert_eq!(s.list_invites().unwrap().len(), 1);
        assert!(s.revoke_invite(id).unwrap());
        assert!(!s.revoke_invite(id).unwrap());
        assert!(s.list_invites().unwrap().is_empty());
    }

    #[test]
    fn invites_keep_household_and_inviter() {
        let (_d, s) = crate::storage::test_store(&[]);
        let effects = InviteEffects {
            household: true,
            inviter: Some("alice".into()),
        };
        let id = s
            .create_invite_with("tok-2", 1000, 1, "alice", "", &effects)
            .unwrap();
        s.create_invite("tok-3", 1000, 1, "admin", "").unwrap();
        let found = s.find_invite("tok-2", 10).unwrap().unwrap();
        assert_eq!((found.id, found.uses_left), (id, 1));
        assert_eq!(found.effects, effects);
        // Finding takes no use; consuming does, and says what the invite does.
        let taken = s.consume_invite("tok-2", 10).unwrap().unwrap();
        assert_eq!(taken.effects, effects);
        assert_eq!(s.find_invite("tok-2", 10).unwrap(), None);
        assert_eq!(s.find_invite("tok-3", 1000).unwrap(), None);
        let plain = s.find_invite("tok-3", 10).unwrap().unwrap();
        assert_eq!(plain.effects, InviteEffects::default());
        let listed = s.list_invites().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].effects, effects);
    }

    #[test]
    fn tokens_are_random_and_uri_safe() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
