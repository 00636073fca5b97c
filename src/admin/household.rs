//! `hearth household add|remove|list`: who is in the household (`features::household`),
//! the shared roster group whose members see each other without subscribing.
//!
//! A running server notices the change within a few seconds and tells the members'
//! clients (roster pushes, presence).

use super::{AdminError, localpart_of};
use crate::features::household::Household as _;
use crate::storage::{Storage, StorageError};
use std::path::Path;

/// Help text for `hearth household`.
pub const HOUSEHOLD_USAGE: &str = "\
usage: hearth household add NAME
       hearth household remove NAME
       hearth household list

The household's members (people and sensors, accounts of this server) see each
other's presence without asking, in a roster group of their own ([household] group,
\"Household\" by default). NAME is a user name (alice) or an address on this server
(alice@home.local); `hearth user add NAME --household` creates an account in it.";

/// A parsed `hearth household` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HouseholdCommand {
    Add { name: String },
    Remove { name: String },
    List,
    Help,
}

/// Parses the arguments after `hearth household`.
pub fn parse_household_args(args: &[String]) -> Result<HouseholdCommand, AdminError> {
    let usage = |msg: String| AdminError::HouseholdUsage(msg);
    let Some((sub, rest)) = args.split_first() else {
        return Err(usage("missing subcommand: add, remove or list".into()));
    };
    if let Some(opt) = rest.iter().find(|a| a.starts_with('-')) {
        return Err(usage(format!("unknown option {opt:?}")));
    }
    let one_name = |rest: &[String]| match rest {
        [name] => Ok(name.clone()),
        [] => Err(usage(format!("{sub} needs NAME"))),
        [_, extra, ..] => Err(usage(format!("unexpected argument {extra:?}"))),
    };
    match sub.as_str() {
        "add" => Ok(HouseholdCommand::Add {
            name: one_name(rest)?,
        }),
        "remove" | "del" => Ok(HouseholdCommand::Remove {
            name: one_name(rest)?,
        }),
        "list" => match rest.first() {
            Some(extra) => Err(usage(format!("unexpected argument {extra:?}"))),
            None => Ok(HouseholdCommand::List),
        },
        "help" | "-h" | "--help" => Ok(HouseholdCommand::Help),
        other => Err(usage(format!(
            "unknown subcommand {other:?}: expected add, remove or list"
        ))),
    }
}

/// Runs `hearth household …` (arguments after `household`) on the database in
/// `data_dir`, for the server whose domain is `domain`. Returns the message to print: one
/// line for a change, the members' addresses one per line for `list`.
pub fn household_command(
    args: &[String],
    data_dir: &Path,
    domain: &str,
) -> Result<String, AdminError> {
    let command = parse_household_args(args)?;
    if command == HouseholdCommand::Help {
        return Ok(HOUSEHOLD_USAGE.to_owned());
    }
    let storage = Storage::open(data_dir).map_err(AdminError::Storage)?;
    execute(command, &storage, domain)
}

/// Runs a parsed command on `storage`.
pub fn execute(
    command: HouseholdCommand,
    storage: &Storage,
    domain: &str,
) -> Result<String, AdminError> {
    match command {
        HouseholdCommand::Help => Ok(HOUSEHOLD_USAGE.to_owned()),
        HouseholdCommand::List => {
            let members = storage.household_members().map_err(AdminError::Storage)?;
            let lines: Vec<String> = members.iter().map(|u| format!("{u}@{domain}")).collect();
            Ok(lines.join("\n"))
        }
        HouseholdCommand::Add { name } => {
            let user = localpart_of(&name, domain)?;
            let jid = format!("{user}@{domain}");
            match storage.add_to_household(&user) {
                Ok(true) => Ok(format!("added {jid} to the household")),
                Ok(false) => Ok(format!("{jid} is already in the household")),
                Err(StorageError::NotFound { .. }) => Err(AdminError::UnknownUser(jid)),
                Err(e) => Err(AdminError::Storage(e)),
            }
        }
        HouseholdCommand::Remove { name } => {
            let user = localpart_of(&name, domain)?;
            let jid = format!("{user}@{domain}");
            match storage.remove_from_household(&user) {
                Ok(true) => Ok(format!("removed {jid} from the household")),
                Ok(false) => Err(AdminError::NotInHousehold(jid)),
                Err(e) => Err(AdminError::Storage(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Accounts as _;

    const DOMAIN: &str = "home.local";

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn usage_error(s: &str) -> String {
        match parse_household_args(&args(s)) {
            Err(AdminError::HouseholdUsage(msg)) => msg,
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_commands() {
        let p = |s: &str| parse_household_args(&args(s)).unwrap();
        assert_eq!(
            p("add alice"),
            HouseholdCommand::Add {
                name: "alice".into()
            }
        );
        assert_eq!(
            p("remove thermo@home.local"),
            HouseholdCommand::Remove {
                name: "thermo@home.local".into()
            }
        );
        assert_eq!(p("list"), HouseholdCommand::List);
        assert_eq!(p("help"), HouseholdCommand::Help);
        assert!(usage_error("").contains("missing subcommand"));
        assert!(usage_error("add").contains("add needs NAME"));
        assert!(usage_error("add a b").contains("unexpected argument \"b\""));
        assert!(usage_error("list x").contains("unexpected argument"));
        assert!(usage_error("add a --force").contains("unknown option"));
        assert!(usage_error("join a").contains("unknown subcommand \"join\""));
        let shown = AdminError::HouseholdUsage("x".into()).to_string();
        assert!(shown.contains("hearth household help"), "{shown}");
    }

    #[test]
    fn add_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let run = |line: &str| household_command(&args(line), &data, DOMAIN);
        // A typo creates nothing.
        assert!(run("frobnicate").is_err());
        assert!(!data.exists());
        assert_eq!(run("help").unwrap(), HOUSEHOLD_USAGE);
        {
            let s = Storage::open(&data).unwrap().with_scram_keys(false);
            for u in ["alice", "thermo"] {
                s.create_account(u, "pw").unwrap();
            }
        }
        assert_eq!(run("list").unwrap(), "");
        assert_eq!(
            run("add Alice").unwrap(),
            "added alice@home.local to the household"
        );
        assert_eq!(
            run("add alice@home.local").unwrap(),
            "alice@home.local is already in the household"
        );
        run("add thermo").unwrap();
        assert_eq!(run("list").unwrap(), "alice@home.local\nthermo@home.local");
        let e = run("add bob").unwrap_err();
        assert!(matches!(e, AdminError::UnknownUser(_)), "{e:?}");
        assert_eq!(e.to_string(), "no such user: bob@home.local");
        assert!(matches!(
            run("add bob@elsewhere").unwrap_err(),
            AdminError::WrongDomain { .. }
        ));
        assert_eq!(
            run("remove alice").unwrap(),
            "removed alice@home.local from the household"
        );
        let e = run("remove alice").unwrap_err();
        assert_eq!(e.to_string(), "alice@home.local is not in the household");
        assert_eq!(run("list").unwrap(), "thermo@home.local");
    }
}
