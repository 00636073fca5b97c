//! `hearth user add|passwd|del|list`: account management from the shell.

use super::AdminError;
use crate::jid::{normalize_domain, normalize_localpart};
use crate::storage::{Accounts, Storage, StorageError};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Help text for `hearth user`.
pub const USER_USAGE: &str = "\
usage: hearth user add NAME [--password-file FILE] [--household]
       hearth user passwd NAME [--password-file FILE]
       hearth user del NAME
       hearth user list

NAME is a user name (alice) or an address on this server (alice@home.local).
Without --password-file the password is asked twice on the terminal. With it, the
first line of FILE is the password; FILE `-` is standard input. --household puts
the new account in the household (see `hearth household help`).";

/// The longest password line read from a file: far beyond any real password, and it keeps a
/// wrong file (a disk image, /dev/zero) from being read whole.
const MAX_PASSWORD_LINE: u64 = 4096;

/// A parsed `hearth user` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Add {
        name: String,
        password: PasswordSource,
        /// `--household`: the new account joins the household (`features::household`).
        household: bool,
    },
    Passwd {
        name: String,
        password: PasswordSource,
    },
    Del {
        name: String,
    },
    List,
    Help,
}

/// Where a new password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// Asked twice on the terminal, without echo.
    Prompt,
    /// The first line of a file.
    File(PathBuf),
    /// The first line of standard input (`--password-file -`).
    Stdin,
}

/// Parses the arguments after `hearth user`.
pub fn parse_user_args(args: &[String]) -> Result<UserCommand, AdminError> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(usage("missing subcommand: add, passwd, del or list"));
    };
    let mut name = None;
    let mut password_file = None;
    let mut household = false;
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        if let Some(option) = arg.strip_prefix("--") {
            let (option, inline) = match option.split_once('=') {
                Some((option, value)) => (option, Some(value.to_owned())),
                None => (option, None),
            };
            if option == "household" && inline.is_none() {
                household = true;
                continue;
            }
            if option != "password-file" {
                return Err(usage(&format!("unknown option {arg:?}")));
            }
            let value = match inline {
                Some(value) => value,
                None => rest
                    .next()
                    .cloned()
                    .ok_or_else(|| usage("--password-file needs a FILE"))?,
            };
            if value.is_empty() {
                return Err(usage("--password-file needs a FILE"));
            }
            if password_file.replace(value).is_some() {
                return Err(usage("--password-file given twice"));
            }
        } else if arg.starts_with('-') && arg != "-" {
            return Err(usage(&format!("unknown option {arg:?}")));
        } else if name.replace(arg.clone()).is_some() {
            return Err(usage(&format!("unexpected argument {arg:?}")));
        }
    }
    let password = match password_file.as_deref() {
        None => PasswordSource::Prompt,
        Some("-") => PasswordSource::Stdin,
        Some(path) => PasswordSource::File(PathBuf::from(path)),
    };
    let need_name = |name: Option<String>| name.ok_or_else(|| usage(&format!("{sub} needs NAME")));
    let no_password_file = |sub: &str| match password_file {
        Some(_) => Err(usage(&format!("{sub} takes no --password-file"))),
        None => Ok(()),
    };
    match sub.as_str() {
        "add" => Ok(UserCommand::Add {
            name: need_name(name)?,
            password,
            household,
        }),
        _ if household => Err(usage("only add takes --household")),
        "passwd" => Ok(UserCommand::Passwd {
            name: need_name(name)?,
            password,
        }),
        "del" => {
            no_password_file("del")?;
            Ok(UserCommand::Del {
                name: need_name(name)?,
            })
        }
        "list" => {
            no_password_file("list")?;
            match name {
                Some(extra) => Err(usage(&format!("unexpected argument {extra:?}"))),
                None => Ok(UserCommand::List),
            }
        }
        "help" | "-h" | "--help" => Ok(UserCommand::Help),
        other => Err(usage(&format!(
            "unknown subcommand {other:?}: expected add, passwd, del or list"
        ))),
    }
}

/// Runs `hearth user …` (arguments after `user`) on the database in `data_dir`, for the
/// server whose domain is `domain` (already normalized). Returns the message to print: one
/// line for a change, the addresses one per line for `list` (nothing when there are none).
pub fn user_command(args: &[String], data_dir: &Path, domain: &str) -> Result<String, AdminError> {
    // Parse first: a typo should not create the data directory.
    let command = parse_user_args(args)?;
    if command == UserCommand::Help {
        return Ok(USER_USAGE.to_owned());
    }
    let storage = Storage::open(data_dir).map_err(AdminError::Storage)?;
    execute(command, &storage, domain, &mut terminal_prompt)
}

/// [`user_command`] on a [`Storage`] the caller opened (with its options, such as SCRAM keys
/// off).
pub fn user_command_with(
    args: &[String],
    storage: &Storage,
    domain: &str,
) -> Result<String, AdminError> {
    execute(
        parse_user_args(args)?,
        storage,
        domain,
        &mut terminal_prompt,
    )
}

/// Asks on the terminal without echo.
fn terminal_prompt(prompt: &str) -> std::io::Result<String> {
    rpassword::prompt_password(prompt)
}

/// Runs a parsed command; `prompt` asks for a password (the terminal, or a test's script).
fn execute(
    command: UserCommand,
    storage: &Storage,
    domain: &str,
    prompt: &mut dyn FnMut(&str) -> std::io::Result<String>,
) -> Result<String, AdminError> {
    match command {
        UserCommand::Help => Ok(USER_USAGE.to_owned()),
        UserCommand::List => {
            let users = storage.list_accounts().map_err(AdminError::Storage)?;
            let lines: Vec<String> = users.iter().map(|u| format!("{u}@{domain}")).collect();
            Ok(lines.join("\n"))
        }
        UserCommand::Add {
            name,
            password,
            household,
        } => {
            let user = localpart_of(&name, domain)?;
            let jid = format!("{user}@{domain}");
            // Checked before asking for a password, so the owner does not type it in vain;
            // create_account checks again.
            if storage.account_exists(&user).map_err(AdminError::Storage)? {
                return Err(AdminError::UserExists(jid));
            }
            let password = read_password(&password, &jid, prompt)?;
            storage
                .create_account(&user, &password)
                .map_err(|e| account_error(e, &jid))?;
            if household {
                use crate::features::household::Household as _;
                storage
                    .add_to_household(&user)
                    .map_err(|e| account_error(e, &jid))?;
                return Ok(format!("added {jid} to the household"));
            }
            Ok(format!("added {jid}"))
        }
        UserCommand::Passwd { name, password } => {
            let user = localpart_of(&name, domain)?;
            let jid = format!("{user}@{domain}");
            if !storage.account_exists(&user).map_err(AdminError::Storage)? {
                return Err(AdminError::UnknownUser(jid));
            }
            let password = read_password(&password, &jid, prompt)?;
            storage
                .set_password(&user, &password)
                .map_err(|e| account_error(e, &jid))?;
            Ok(format!("changed the password of {jid}"))
        }
        UserCommand::Del { name } => {
            let user = localpart_of(&name, domain)?;
            let jid = format!("{user}@{domain}");
            storage
                .delete_account(&user)
                .map_err(|e| account_error(e, &jid))?;
            Ok(format!("deleted {jid}"))
        }
    }
}

/// The normalized localpart (RFC 7622 §3.3) of `alice` or `alice@<domain>`; the domain given
/// must be this server's once both are normalized (RFC 7622 §3.2: case, trailing dot, IDNA).
pub fn localpart_of(name: &str, domain: &str) -> Result<String, AdminError> {
    let bad = |reason: String| AdminError::BadName {
        name: name.to_owned(),
        reason,
    };
    let local = match name.split_once('@') {
        None => name,
        Some((local, given)) => {
            if given.contains('/') {
                return Err(bad(
                    "a user name has no resource (the part after '/')".into()
                ));
            }
            let given = normalize_domain(given).map_err(|e| bad(e.to_string()))?;
            // The caller's domain comes from validated config; normalizing again is cheap
            // and makes the comparison independent of how it was written there.
            let ours = normalize_domain(domain).unwrap_or_else(|_| domain.to_owned());
            if given != ours {
                return Err(AdminError::WrongDomain {
                    name: name.to_owned(),
                    domain: domain.to_owned(),
                });
            }
            local
        }
    };
    normalize_localpart(local).map_err(|e| bad(e.to_string()))
}

/// Gets the new password from where the command line said, refusing an empty one.
fn read_password(
    source: &PasswordSource,
    jid: &str,
    prompt: &mut dyn FnMut(&str) -> std::io::Result<String>,
) -> Result<String, AdminError> {
    let (password, from) = match source {
        PasswordSource::Prompt => {
            let first = prompt(&format!("New password for {jid}: ")).map_err(AdminError::Prompt)?;
            if first.is_empty() {
                return Err(AdminError::EmptyPassword { from: None });
            }
            let second = prompt("Repeat it: ").map_err(AdminError::Prompt)?;
            if first != second {
                return Err(AdminError::PasswordMismatch);
            }
            (first, None)
        }
        PasswordSource::Stdin => (
            first_line(std::io::stdin().lock()).map_err(AdminError::PasswordStdin)?,
            None,
        ),
        PasswordSource::File(path) => {
            let line = std::fs::File::open(path)
                .and_then(first_line)
                .map_err(|source| AdminError::PasswordFile {
                    path: path.clone(),
                    source,
                })?;
            (line, Some(path.clone()))
        }
    };
    if password.is_empty() {
        return Err(AdminError::EmptyPassword { from });
    }
    Ok(password)
}

/// The first line of `input`, without its line ending (`\n` or `\r\n`).
fn first_line(input: impl Read) -> std::io::Result<String> {
    let mut line = String::new();
    BufReader::new(input.take(MAX_PASSWORD_LINE)).read_line(&mut line)?;
    if let Some(stripped) = line.strip_suffix('\n') {
        line.truncate(stripped.strip_suffix('\r').unwrap_or(stripped).len());
    }
    Ok(line)
}

/// Account errors in the owner's terms, with the full address.
fn account_error(e: StorageError, jid: &str) -> AdminError {
    match e {
        StorageError::AlreadyExists { .. } => AdminError::UserExists(jid.to_owned()),
        StorageError::NotFound { .. } => AdminError::UnknownUser(jid.to_owned()),
        StorageError::InvalidPassword(why) => AdminError::BadPassword(why),
        other => AdminError::Storage(other),
    }
}

fn usage(msg: &str) -> AdminError {
    AdminError::Usage(msg.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "home.local";

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn parse(s: &str) -> Result<UserCommand, AdminError> {
        parse_user_args(&args(s))
    }

    fn usage_error(s: &str) -> String {
        match parse(s) {
            Err(AdminError::Usage(msg)) => msg,
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse("add alice").unwrap(),
            UserCommand::Add {
                name: "alice".into(),
                password: PasswordSource::Prompt,
                household: false,
            }
        );
        assert_eq!(
            parse("add alice --password-file /tmp/pw").unwrap(),
            UserCommand::Add {
                name: "alice".into(),
                password: PasswordSource::File("/tmp/pw".into()),
                household: false,
            }
        );
        assert_eq!(
            parse("add thermo --household --password-file -").unwrap(),
            UserCommand::Add {
                name: "thermo".into(),
                password: PasswordSource::Stdin,
                household: true,
            }
        );
        assert!(usage_error("del thermo --household").contains("only add takes --household"));
        assert_eq!(
            parse("passwd --password-file=/tmp/pw alice@home.local").unwrap(),
            UserCommand::Passwd {
                name: "alice@home.local".into(),
                password: PasswordSource::File("/tmp/pw".into())
            }
        );
        assert_eq!(
            parse("passwd alice --password-file -").unwrap(),
            UserCommand::Passwd {
                name: "alice".into(),
                password: PasswordSource::Stdin
            }
        );
        assert_eq!(
            parse("del bob").unwrap(),
            UserCommand::Del { name: "bob".into() }
        );
        assert_eq!(parse("list").unwrap(), UserCommand::List);
        assert_eq!(parse("help").unwrap(), UserCommand::Help);
        assert_eq!(parse("--help").unwrap(), UserCommand::Help);
    }

    #[test]
    fn rejects_bad_command_lines() {
        assert!(usage_error("").contains("missing subcommand"));
        assert!(usage_error("remove alice").contains("unknown subcommand \"remove\""));
        assert!(usage_error("add").contains("add needs NAME"));
        assert!(usage_error("add alice bob").contains("unexpected argument \"bob\""));
        assert!(usage_error("add alice --password-file").contains("needs a FILE"));
        assert!(usage_error("add alice --password-file=").contains("needs a FILE"));
        assert!(usage_error("add alice --password-file a --password-file b").contains("twice"));
        assert!(usage_error("add alice --force").contains("unknown option \"--force\""));
        assert!(usage_error("add alice -f").contains("unknown option \"-f\""));
        assert!(usage_error("del alice --password-file x").contains("no --password-file"));
        assert!(usage_error("list alice").contains("unexpected argument"));
        let shown = parse("add").unwrap_err().to_string();
        assert!(shown.contains("hearth user help"), "{shown}");
    }

    #[test]
    fn names_are_normalized_and_checked() {
        assert_eq!(localpart_of("Alice", DOMAIN).unwrap(), "alice");
        assert_eq!(localpart_of("alice@home.local", DOMAIN).unwrap(), "alice");
        assert_eq!(localpart_of("ALICE@Home.Local.", DOMAIN).unwrap(), "alice");
        assert!(matches!(
            localpart_of("alice@example.org", DOMAIN),
            Err(AdminError::WrongDomain { .. })
        ));
        assert!(matches!(
            localpart_of("alice@home.local.example", DOMAIN),
            Err(AdminError::WrongDomain { .. })
        ));
        for bad in [
            "",
            "@home.local",
            "a b",
            "a:b",
            "alice@home.local/phone",
            "alice@",
            "alice@bad_domain!",
        ] {
            let err = localpart_of(bad, DOMAIN).unwrap_err();
            assert!(
                matches!(err, AdminError::BadName { .. }),
                "{bad:?}: {err:?}"
            );
            assert!(err.to_string().starts_with("bad user name"), "{err}");
        }
    }

    #[test]
    fn first_line_strips_line_ending_only() {
        assert_eq!(first_line(&b"secret\nsecond\n"[..]).unwrap(), "secret");
        assert_eq!(first_line(&b"secret\r\n"[..]).unwrap(), "secret");
        assert_eq!(first_line(&b" spaced pw \n"[..]).unwrap(), " spaced pw ");
        assert_eq!(first_line(&b"no newline"[..]).unwrap(), "no newline");
        assert_eq!(first_line(&b""[..]).unwrap(), "");
        assert!(first_line(&b"\xff\xfe\n"[..]).is_err());
    }

    /// A temp data dir, a password file in it, and a way to run commands.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn data(&self) -> PathBuf {
            self.dir.path().join("data")
        }

        fn password_file(&self, contents: &str) -> String {
            let path = self.dir.path().join("pw");
            std::fs::write(&path, contents).unwrap();
            path.display().to_string()
        }

        fn run(&self, line: &str) -> Result<String, AdminError> {
            user_command(&args(line), &self.data(), DOMAIN)
        }

        fn run_prompted(&self, line: &str, answers: &[&str]) -> Result<String, AdminError> {
            let storage = Storage::open(&self.data()).unwrap();
            let mut answers = answers.iter();
            let mut prompt = |_: &str| {
                answers
                    .next()
                    .map(|a| a.to_string())
                    .ok_or_else(|| std::io::Error::other("no more answers"))
            };
            execute(parse(line)?, &storage, DOMAIN, &mut prompt)
        }

        fn storage(&self) -> Storage {
            Storage::open(&self.data()).unwrap()
        }
    }

    #[test]
    fn add_passwd_list_del_with_password_file() {
        let f = Fixture::new();
        assert_eq!(f.run("list").unwrap(), "");
        let pw = f.password_file("first pw\nignored\n");
        assert_eq!(
            f.run(&format!("add Alice --password-file {pw}")).unwrap(),
            "added alice@home.local"
        );
        assert!(f.storage().verify_password("alice", "first pw").unwrap());

        let pw = f.password_file("second\r\n");
        assert_eq!(
            f.run(&format!("passwd alice@home.local --password-file {pw}"))
                .unwrap(),
            "changed the password of alice@home.local"
        );
        assert!(f.storage().verify_password("alice", "second").unwrap());
        assert!(!f.storage().verify_password("alice", "first pw").unwrap());

        f.run(&format!("add bob --password-file {pw}")).unwrap();
        assert_eq!(f.run("list").unwrap(), "alice@home.local\nbob@home.local");

        assert_eq!(f.run("del ALICE").unwrap(), "deleted alice@home.local");
        assert_eq!(f.run("list").unwrap(), "bob@home.local");
    }

    #[test]
    fn add_into_the_household() {
        use crate::features::household::Household as _;
        let f = Fixture::new();
        let pw = f.password_file("pw\n");
        assert_eq!(
            f.run(&format!("add thermo --household --password-file {pw}"))
                .unwrap(),
            "added thermo@home.local to the household"
        );
        f.run(&format!("add bob --password-file {pw}")).unwrap();
        assert_eq!(f.storage().household_members().unwrap(), ["thermo"]);
    }

    #[test]
    fn errors_name_the_problem() {
        let f = Fixture::new();
        let pw = f.password_file("pw\n");
        f.run(&format!("add alice --password-file {pw}")).unwrap();

        let err = f
            .run(&format!("add alice --password-file {pw}"))
            .unwrap_err();
        assert_eq!(err.to_string(), "user alice@home.local already exists");
        let err = f
            .run(&format!("passwd carol --password-file {pw}"))
            .unwrap_err();
        assert_eq!(err.to_string(), "no such user: carol@home.local");
        let err = f.run("del carol").unwrap_err();
        assert_eq!(err.to_string(), "no such user: carol@home.local");

        let err = f
            .run(&format!("add bob@example.org --password-file {pw}"))
            .unwrap_err();
        assert!(err.to_string().contains("domain is home.local"), "{err}");

        let missing = f.dir.path().join("nope");
        let err = f
            .run(&format!("add bob --password-file {}", missing.display()))
            .unwrap_err();
        assert!(matches!(err, AdminError::PasswordFile { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );

        let empty = f.password_file("\nsecond line\n");
        let err = f
            .run(&format!("add bob --password-file {empty}"))
            .unwrap_err();
        assert!(
            matches!(err, AdminError::EmptyPassword { from: Some(_) }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&empty), "{err}");

        let control = f.password_file("a\u{7}b\n");
        let err = f
            .run(&format!("add bob --password-file {control}"))
            .unwrap_err();
        assert!(matches!(err, AdminError::BadPassword(_)), "{err:?}");

        assert!(!f.storage().account_exists("bob").unwrap());
    }

    #[test]
    fn usage_errors_touch_nothing() {
        let f = Fixture::new();
        assert!(f.run("frobnicate").is_err());
        assert!(f.run("help").unwrap().starts_with("usage:"));
        assert!(!f.data().exists());
    }

    #[test]
    fn prompt_asks_twice() {
        let f = Fixture::new();
        assert_eq!(
            f.run_prompted("add alice", &["s3cret", "s3cret"]).unwrap(),
            "added alice@home.local"
        );
        assert!(f.storage().verify_password("alice", "s3cret").unwrap());

        let err = f.run_prompted("passwd alice", &["one", "two"]).unwrap_err();
        assert!(matches!(err, AdminError::PasswordMismatch));
        let err = f.run_prompted("passwd alice", &["", ""]).unwrap_err();
        assert!(matches!(err, AdminError::EmptyPassword { from: None }));
        let err = f.run_prompted("passwd alice", &[]).unwrap_err();
        assert!(matches!(err, AdminError::Prompt(_)));
        assert!(err.to_string().contains("--password-file"), "{err}");
        assert!(f.storage().verify_password("alice", "s3cret").unwrap());

        // Existence is checked before anything is asked.
        let err = f.run_prompted("add alice", &[]).unwrap_err();
        assert!(matches!(err, AdminError::UserExists(_)), "{err:?}");
        let err = f.run_prompted("passwd nobody", &[]).unwrap_err();
        assert!(matches!(err, AdminError::UnknownUser(_)), "{err:?}");
    }

    #[test]
    fn respects_scram_keys_off() {
        let f = Fixture::new();
        let storage = f.storage().with_scram_keys(false);
        let pw = f.password_file("pw\n");
        user_command_with(
            &args(&format!("add alice --password-file {pw}")),
            &storage,
            DOMAIN,
        )
        .unwrap();
        let on = f.storage();
        assert!(on.verify_password("alice", "pw").unwrap());
        let keys = on
            .scram_credentials("alice", crate::stream::sasl::ScramHash::Sha256)
            .unwrap();
        assert_eq!(keys, None);
    }
}
