//! Device accounts and their last presence (migrations/0013_device.sql).

use crate::storage::{Storage, StorageError, unix_now};
use rusqlite::{OptionalExtension, params};

/// A device's last broadcast presence as stored: when it was sent (Unix seconds), its
/// status text and its `<telemetry/>` element serialized standalone ('' for none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPresence {
    pub sent_at: i64,
    pub status: String,
    pub telemetry: String,
}

/// One device, as `hearth device list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRow {
    pub localpart: String,
    /// When it was made a device (Unix seconds).
    pub added_at: i64,
    /// When its last stored presence was sent, if it ever reported.
    pub last_sent_at: Option<i64>,
    /// That presence's status text.
    pub last_status: String,
}

/// Which accounts are devices, and what each last reported.
///
/// [`Devices::is_device`] is the one question other ways in (the MQTT listener) need:
/// a device account logs in there with its name and password, and its presence then
/// takes the same way through `router::im` as a client's, under the same rules.
pub trait Devices {
    /// Whether the account `user` (a normalized localpart) is a device; false for no
    /// such account.
    fn is_device(&self, user: &str) -> Result<bool, StorageError>;
    /// Makes the existing account `user` a device: `Ok(false)` if it already was;
    /// [`StorageError::NotFound`] if there is no such account.
    fn mark_device(&self, user: &str) -> Result<bool, StorageError>;
    /// Every device, sorted by name, with its last report.
    fn devices(&self) -> Result<Vec<DeviceRow>, StorageError>;
    /// Records the device's last presence (replacing the one before); nothing for an
    /// account that is not (or no longer) a device.
    fn set_device_presence(&self, user: &str, last: &StoredPresence) -> Result<(), StorageError>;
    /// The device's last presence, if it ever reported.
    fn device_presence(&self, user: &str) -> Result<Option<StoredPresence>, StorageError>;
}

impl Devices for Storage {
    fn is_device(&self, user: &str) -> Result<bool, StorageError> {
        self.conn()
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM devices WHERE localpart = ?1)")
            .and_then(|mut st| st.query_row([user], |r| r.get(0)))
            .map_err(self.sqlite_err("read the devices"))
    }

    fn mark_device(&self, user: &str) -> Result<bool, StorageError> {
        let conn = self.conn();
        let inserted = conn
            .execute(
                "INSERT INTO devices (localpart, added_at)
                 SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM accounts WHERE localpart = ?1)
                 ON CONFLICT (localpart) DO NOTHING",
                params![user, unix_now()],
            )
            .map_err(self.sqlite_err("add a device"))?;
        if inserted == 1 {
            return Ok(true);
        }
        let exists: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM accounts WHERE localpart = ?1)",
                [user],
                |r| r.get(0),
            )
            .map_err(self.sqlite_err("read an account"))?;
        if exists {
            Ok(false)
        } else {
            Err(StorageError::NotFound {
                user: user.to_owned(),
            })
        }
    }

    fn devices(&self) -> Result<Vec<DeviceRow>, StorageError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT d.localpart, d.added_at, p.sent_at, COALESCE(p.status, '')
                   FROM devices d LEFT JOIN device_presence p ON p.localpart = d.localpart
                  ORDER BY d.localpart",
            )
            .map_err(self.sqlite_err("list the devices"))?;
        let rows = st
            .query_map([], |r| {
                Ok(DeviceRow {
                    localpart: r.get(0)?,
                    added_at: r.get(1)?,
                    last_sent_at: r.get(2)?,
                    last_status: r.get(3)?,
                })
            })
            .map_err(self.sqlite_err("list the devices"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.sqlite_err("list the devices"))
    }

    fn set_device_presence(&self, user: &str, last: &StoredPresence) -> Result<(), StorageError> {
        let conn = self.conn();
        // As for "last seen" (features::last): a sensor's latest reading is a hint, not
        // something a user handed us to keep. Losing the newest in a power cut is
        // harmless; a disk sync per reading would wear an SD card. WAL with `NORMAL` keeps
        // the file consistent, and the next `FULL` commit makes this one durable.
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(self.sqlite_err("relax syncing for a device's presence"))?;
        let written = conn
            .prepare_cached(
                "INSERT INTO device_presence (localpart, sent_at, status, telemetry)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM devices WHERE localpart = ?1)
                 ON CONFLICT (localpart) DO UPDATE SET sent_at = ?2, status = ?3, telemetry = ?4",
            )
            .and_then(|mut st| {
                st.execute(params![user, last.sent_at, last.status, last.telemetry])
            });
        let restored = conn.execute_batch("PRAGMA synchronous = FULL");
        written.map_err(self.sqlite_err("record a device's presence"))?;
        restored.map_err(self.sqlite_err("restore full syncing"))?;
        Ok(())
    }

    fn device_presence(&self, user: &str) -> Result<Option<StoredPresence>, StorageError> {
        self.conn()
            .prepare_cached(
                "SELECT sent_at, status, telemetry FROM device_presence WHERE localpart = ?1",
            )
            .and_then(|mut st| {
                st.query_row([user], |r| {
                    Ok(StoredPresence {
                        sent_at: r.get(0)?,
                        status: r.get(1)?,
                        telemetry: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(self.sqlite_err("read a device's presence"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Accounts as _;

    #[test]
    fn devices_and_their_last_presence() {
        let (_d, s) = crate::storage::test_store(&["alice", "thermo"]);
        assert!(!s.is_device("thermo").unwrap());
        assert!(!s.is_device("nobody").unwrap());
        assert!(s.mark_device("thermo").unwrap());
        assert!(!s.mark_device("thermo").unwrap());
        assert!(matches!(
            s.mark_device("nobody"),
            Err(StorageError::NotFound { .. })
        ));
        assert!(s.is_device("thermo").unwrap());
        assert!(!s.is_device("alice").unwrap());
        assert_eq!(s.device_presence("thermo").unwrap(), None);
        let last = StoredPresence {
            sent_at: 100,
            status: "21.5 °C".into(),
            telemetry: "<telemetry xmlns='urn:hearth:telemetry:0'/>".into(),
        };
        s.set_device_presence("thermo", &last).unwrap();
        let newer = StoredPresence {
            sent_at: 200,
            ..last.clone()
        };
        s.set_device_presence("thermo", &newer).unwrap();
        assert_eq!(s.device_presence("thermo").unwrap(), Some(newer));
        // Not a device: nothing is recorded.
        s.set_device_presence("alice", &last).unwrap();
        assert_eq!(s.device_presence("alice").unwrap(), None);
        let list = s.devices().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].localpart, "thermo");
        assert_eq!(list[0].last_sent_at, Some(200));
        assert_eq!(list[0].last_status, "21.5 °C");
        // Everything else is still written with full syncing (2 = FULL).
        let sync: i64 = s
            .conn()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2);
        // Goes with the account.
        s.delete_account("thermo").unwrap();
        assert!(!s.is_device("thermo").unwrap());
        assert!(s.devices().unwrap().is_empty());
    }
}
