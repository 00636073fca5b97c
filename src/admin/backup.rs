//! `hearth backup FILE`: a consistent copy of the database, taken while the server runs.
//!
//! The copy ([`Storage::backup_to`]) holds every account, roster and offline message
//! committed before it started; it is checked and synced before the command says so. The
//! certificate hearth generated (`tls/` in the data directory) is not in the database:
//! the README says to keep it too, or let hearth make a new one (clients then see a new
//! fingerprint).

use super::AdminError;
use crate::storage::{DB_FILE_NAME, Storage};
use std::path::Path;

/// Copies the database in `data_dir` to `dest`; returns the line to print.
pub fn backup_command(data_dir: &Path, dest: &Path) -> Result<String, AdminError> {
    let db = data_dir.join(DB_FILE_NAME);
    // Opening would create an empty database: say instead that there is nothing to copy.
    if !db.exists() {
        return Err(AdminError::NoDatabase(db));
    }
    let storage = Storage::open(data_dir).map_err(AdminError::Storage)?;
    let size = storage.backup_to(dest).map_err(AdminError::Storage)?;
    Ok(format!(
        "copied {} to {} ({size} bytes, integrity checked)",
        db.display(),
        dest.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Accounts;

    #[test]
    fn copies_an_existing_database_only() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("b.db");
        let err = backup_command(&dir.path().join("data"), &dest).unwrap_err();
        assert!(err.to_string().contains("no database"), "{err}");
        assert!(!dir.path().join("data").exists() && !dest.exists());

        Storage::open(&dir.path().join("data"))
            .unwrap()
            .create_account("alice", "pw")
            .unwrap();
        let msg = backup_command(&dir.path().join("data"), &dest).unwrap();
        assert!(msg.contains("integrity checked"), "{msg}");
        assert!(dest.exists());
    }
}
