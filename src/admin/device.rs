//! `hearth device add|password|list|remove`: device accounts (`features::device`),
//! sensors that log in and report through presence, with a restricted role.
//!
//! A device's password is generated, never typed: 18 random bytes from the OS as 24
//! base64url characters, printed once, or written to a file (mode 0600) for a script
//! that flashes the device.

use super::{AdminError, localpart_of};
use crate::features::device::Devices as _;
use crate::features::household::Household as _;
use crate::storage::{Accounts as _, Storage, StorageError};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Help text for `hearth device`.
pub const DEVICE_USAGE: &str = "\
usage: hearth device add NAME [--household] [--password-file FILE]
       hearth device password NAME [--password-file FILE]
       hearth device list
       hearth device remove NAME

A device is an account for a sensor: it logs in (XMPP, or MQTT where enabled)
and reports through its presence. It may not talk to other servers, may message
and subscribe only inside the household, and may send one presence every
[devices] presence_interval_secs after a small burst. --household puts it in the
household, whose members then see its presence without subscribing.

The password is generated and printed once; with --password-file it is written
to FILE (created with mode 0600) instead. `password` makes a new one.";

/// A parsed `hearth device` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCommand {
    Add {
        name: String,
        household: bool,
        /// Where to write the generated password; `None`: printed.
        password_file: Option<PathBuf>,
    },
    Password {
        name: String,
        password_file: Option<PathBuf>,
    },
    List,
    Remove {
        name: String,
    },
    Help,
}

fn usage(msg: impl Into<String>) -> AdminError {
    AdminError::DeviceUsage(msg.into())
}

/// Parses the arguments after `hearth device`.
pub fn parse_device_args(args: &[String]) -> Result<DeviceCommand, AdminError> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(usage("missing subcommand: add, password, list or remove"));
    };
    if matches!(sub.as_str(), "help" | "-h" | "--help") {
        return Ok(DeviceCommand::Help);
    }
    let mut name = None;
    let mut household = false;
    let mut password_file: Option<PathBuf> = None;
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        if let Some(option) = arg.strip_prefix("--") {
            let (option, inline) = match option.split_once('=') {
                Some((o, v)) => (o, Some(v.to_owned())),
                None => (option, None),
            };
            match option {
                "household" if inline.is_none() => household = true,
                "password-file" => {
                    let value = match inline {
                        Some(v) => v,
                        None => rest
                            .next()
                            .cloned()
                            .ok_or_else(|| usage("--password-file needs a FILE"))?,
                    };
                    if value.is_empty() || value == "-" {
                        return Err(usage(
                            "--password-file needs a FILE to write (without it the password is printed)",
                        ));
                    }
                    if password_file.replace(PathBuf::from(value)).is_some() {
                        return Err(usage("--password-file given twice"));
                    }
                }
                _ => return Err(usage(format!("unknown option {arg:?}"))),
            }
        } else if arg.starts_with('-') {
            return Err(usage(format!("unknown option {arg:?}")));
        } else if name.replace(arg.clone()).is_some() {
            return Err(usage(format!("unexpected argument {arg:?}")));
        }
    }
    let need_name = |name: Option<String>| name.ok_or_else(|| usage(format!("{sub} needs NAME")));
    if household && sub != "add" {
        return Err(usage("only add takes --household"));
    }
    if password_file.is_some() && !matches!(sub.as_str(), "add" | "password") {
        return Err(usage(format!("{sub} takes no --password-file")));
    }
    match sub.as_str() {
        "add" => Ok(DeviceCommand::Add {
            name: need_name(name)?,
            household,
            password_file,
        }),
        "password" | "passwd" => Ok(DeviceCommand::Password {
            name: need_name(name)?,
            password_file,
        }),
        "list" => match name {
            Some(extra) => Err(usage(format!("unexpected argument {extra:?}"))),
            None => Ok(DeviceCommand::List),
        },
        "remove" | "del" => Ok(DeviceCommand::Remove {
            name: need_name(name)?,
        }),
        other => Err(usage(format!(
            "unknown subcommand {other:?}: expected add, password, list or remove"
        ))),
    }
}

/// Runs `hearth device …` (arguments after `device`) on the database in `data_dir`, for
/// the server whose domain is `domain`. Returns the message to print.
pub fn device_command(
    args: &[String],
    data_dir: &Path,
    domain: &str,
) -> Result<String, AdminError> {
    let command = parse_device_args(args)?;
    if command == DeviceCommand::Help {
        return Ok(DEVICE_USAGE.to_owned());
    }
    let storage = Storage::open(data_dir).map_err(AdminError::Storage)?;
    execute(command, &storage, domain)
}

/// A new device password: 18 bytes from the OS, base64url (24 characters).
pub fn generate_password() -> Result<String, AdminError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| {
        AdminError::Storage(StorageError::Crypto(format!(
            "no randomness from the OS: {e}"
        )))
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Writes `password` and a newline to `path`, readable by its owner only (0600, also
/// when the file existed).
fn write_password(path: &Path, password: &str) -> Result<(), AdminError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let err = |source| AdminError::PasswordOut {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(format!("{password}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(err)
}

/// Where the password went, for the message.
fn told(jid: &str, password: &str, file: Option<&Path>) -> String {
    match file {
        Some(path) => format!("password written to {}", path.display()),
        None => format!(
            "password for {jid}: {password}\n(shown once; `hearth device password` makes a new one)"
        ),
    }
}

/// Runs a parsed command on `storage`.
pub fn execute(
    command: DeviceCommand,
    storage: &Storage,
    domain: &str,
) -> Result<String, AdminError> {
    match command {
        DeviceCommand::Help => Ok(DEVICE_USAGE.to_owned()),
        DeviceCommand::List => {
            let devices = storage.devices().map_err(AdminError::Storage)?;
            let members = storage.household_members().map_err(AdminError::Storage)?;
            let lines: Vec<String> = devices
                .iter()
                .map(|d| {
                    let mut line = format!("{}@{domain}", d.localpart);
                    if members.contains(&d.localpart) {
                        line.push_str(" (household)");
                    }
                    match d.last_sent_at {
                        Some(at) => line.push_str(&format!(
                            " last report {}: {}",
                            super::utc_iso(at),
                            d.last_status
                        )),
                        None => line.push_str(" never reported"),
                    }
                    line
                })
                .collect();
            Ok(lines.join("\n"))
        }
        DeviceCommand::Add {
            name,
            household,
            password_file,
        } => {
            let user = localpart_of(&name, domain)?;
            let jid = format!("{user}@{domain}");
            if storage.account_exists(&user).map_err(AdminError::Storage)? {
                return Err(AdminError::UserExists(jid));
            }
            let password = generate_password()?;
            // The file first: a path that cannot be written creates no account whose
            // password nobody knows.
            if let Some(path) = &password_file {
                write_password(path, &password)?;
            }
            let made = storage
                .create_account(&user, &password)
                .map_err(|e| account_error(e, &jid))
                .and_then(|()| {
                    let marked = storage.mark_device(&user).map(|_| ());
                    let joined = if household {
                        marked.and_then(|()| storage.add_to_household(&user).map(|_| ()))
                    } else {
                        marked
                    };
                    joined.map_err(|e| {
                        // Not left half made: an account that is not marked a device
                        // would have no restrictions.
                        let _ = storage.delete_account(&user);
                        AdminError::Storage(e)
                    })
                });
            if let Err(e) = made {
                if let Some(path) = &password_file {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
            let what = if household {
                format!("added device {jid} to the household")
            } else {
                format!("added device {jid}")
            };
            Ok(format!(
                "{what}\n{}",
                told(&jid, &password, password_file.as_deref())
            ))
        }
        DeviceCommand::Password {
            name,
            password_file,
        } => {
            let user = localpart_of(&name, domain)?;
            let jid = format!("{user}@{domain}");
            if !storage.is_device(&user).map_err(AdminError::Storage)? {
                return Err(AdminError::NotADevice(jid));
            }
            let password = generate_password()?;
            if let Some(path) = &password_file {
                write_password(path, &password)?;
            }
            storage
                .set_password(&user, &password)
                .map_err(|e| account_error(e, &jid))?;
            Ok(format!(
                "changed the password of {jid}\n{}",
                told(&jid, &password, password_file.as_deref())
            ))
        }
        DeviceCommand::Remove { name } => {
            let user = localpart_of(&name, domain)?;
            let jid = format!("{user}@{domain}");
            if !storage.is_device(&user).map_err(AdminError::Storage)? {
                return Err(AdminError::NotADevice(jid));
            }
            storage
                .delete_account(&user)
                .map_err(|e| account_error(e, &jid))?;
            Ok(format!("removed device {jid}"))
        }
    }
}

fn account_error(e: StorageError, jid: &str) -> AdminError {
    match e {
        StorageError::AlreadyExists { .. } => AdminError::UserExists(jid.to_owned()),
        StorageError::NotFound { .. } => AdminError::UnknownUser(jid.to_owned()),
        StorageError::InvalidPassword(why) => AdminError::BadPassword(why),
        other => AdminError::Storage(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "home.local";

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn usage_error(s: &str) -> String {
        match parse_device_args(&args(s)) {
            Err(AdminError::DeviceUsage(msg)) => msg,
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_commands() {
        let p = |s: &str| parse_device_args(&args(s)).unwrap();
        assert_eq!(
            p("add thermo --household --password-file /tmp/pw"),
            DeviceCommand::Add {
                name: "thermo".into(),
                household: true,
                password_file: Some("/tmp/pw".into()),
            }
        );
        assert_eq!(
            p("add thermo"),
            DeviceCommand::Add {
                name: "thermo".into(),
                household: false,
                password_file: None,
            }
        );
        assert_eq!(
            p("password thermo --password-file=/tmp/pw"),
            DeviceCommand::Password {
                name: "thermo".into(),
                password_file: Some("/tmp/pw".into()),
            }
        );
        assert_eq!(p("list"), DeviceCommand::List);
        assert_eq!(
            p("remove thermo@home.local"),
            DeviceCommand::Remove {
                name: "thermo@home.local".into()
            }
        );
        assert_eq!(p("help"), DeviceCommand::Help);
        assert!(usage_error("").contains("missing subcommand"));
        assert!(usage_error("add").contains("add needs NAME"));
        assert!(usage_error("add a b").contains("unexpected argument"));
        assert!(usage_error("add a --force").contains("unknown option"));
        assert!(usage_error("remove a --household").contains("only add"));
        assert!(usage_error("list --password-file x").contains("takes no --password-file"));
        assert!(usage_error("add a --password-file -").contains("FILE to write"));
        assert!(usage_error("add a --password-file").contains("needs a FILE"));
        assert!(usage_error("flash a").contains("unknown subcommand"));
        let shown = AdminError::DeviceUsage("x".into()).to_string();
        assert!(shown.contains("hearth device help"), "{shown}");
    }

    #[test]
    fn add_list_password_remove() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let run = |line: &str| device_command(&args(line), &data, DOMAIN);
        assert!(run("frobnicate").is_err());
        assert!(!data.exists(), "a typo creates nothing");
        let out = run("add thermo --household").unwrap();
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some("added device thermo@home.local to the household")
        );
        let password = lines
            .next()
            .and_then(|l| l.strip_prefix("password for thermo@home.local: "))
            .unwrap()
            .to_owned();
        assert_eq!(password.len(), 24);
        let pw_file = dir.path().join("door.pw");
        let out = run(&format!("add door --password-file {}", pw_file.display())).unwrap();
        assert!(out.contains("password written to"), "{out}");
        let written = std::fs::read_to_string(&pw_file).unwrap();
        assert_eq!(written.trim_end().len(), 24);
        assert!(!out.contains(written.trim_end()), "printed too: {out}");
        let mode = std::fs::metadata(&pw_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        {
            let s = Storage::open(&data).unwrap();
            assert!(s.is_device("thermo").unwrap());
            assert!(s.is_device("door").unwrap());
            assert!(s.is_household_member("thermo").unwrap());
            assert!(!s.is_household_member("door").unwrap());
            assert!(s.verify_password("thermo", &password).unwrap());
            s.create_account("alice", "pw").unwrap();
        }
        assert_eq!(
            run("list").unwrap(),
            "door@home.local never reported\nthermo@home.local (household) never reported"
        );
        assert!(matches!(run("add thermo"), Err(AdminError::UserExists(_))));
        // People are not devices.
        let e = run("remove alice").unwrap_err();
        assert_eq!(e.to_string(), "alice@home.local is not a device account");
        assert!(run("password alice").is_err());
        let out = run("password thermo").unwrap();
        assert!(
            out.starts_with("changed the password of thermo@home.local"),
            "{out}"
        );
        assert!(!out.contains(&password));
        assert_eq!(
            run("remove thermo").unwrap(),
            "removed device thermo@home.local"
        );
        assert_eq!(run("list").unwrap(), "door@home.local never reported");
        // A password file that cannot be written makes no account.
        let e = run("add lamp --password-file /nonexistent/dir/pw").unwrap_err();
        assert!(matches!(e, AdminError::PasswordOut { .. }), "{e:?}");
        let s = Storage::open(&data).unwrap();
        assert!(!s.account_exists("lamp").unwrap());
    }
}
