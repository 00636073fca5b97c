//! `hearth invite` and `hearth invites [revoke ID]`: invitations to sign up from a phone
//! (XEP-0401 Easy User Onboarding, `features::invite`).
//!
//! `hearth invite` prints the invitation's `xmpp:` URI, the same as a QR code for the new
//! user's app to scan, and the server certificate's SHA-256 fingerprint for the new user
//! to compare when the app asks whether to trust it (a self-signed certificate at home).
//! The token is shown this once: storage keeps only its hash, and `hearth invites` lists
//! invitations without it.

use super::{AdminError, localpart_of};
use crate::config::Config;
use crate::features::invite::{self, DEFAULT_VALIDITY_SECS};
use crate::features::register::{InviteEffects, InviteStore as _};
use crate::jid::BareJid;
use crate::storage::{Accounts as _, Storage, StorageError};

/// Help text for `hearth invite` and `hearth invites`.
pub const INVITE_USAGE: &str = "\
usage: hearth invite [--uses N] [--expires 7d|12h|30m] [--household] [--from NAME]
                     [--note TEXT]
       hearth invites
       hearth invites revoke ID

`hearth invite` makes an invitation to create an account on this server from an
app (Conversations, Monal, Siskin…): it prints an xmpp: link and the same as a QR
code to scan, and the certificate fingerprint the app may ask to confirm.
--uses N      how many accounts it may create (default 1)
--expires D   how long it is valid: s, m, h, d or w (default 7d)
--household   the new account joins the household
--from NAME   the new user and NAME (an account here) become contacts
--note TEXT   a reminder for you, shown by `hearth invites`
`hearth invites` lists invitations (never their secret part); `revoke` ends one.";

/// A parsed `hearth invite` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRequest {
    pub uses: u32,
    pub valid_secs: u64,
    pub household: bool,
    /// `--from`, as given (checked against the accounts when run).
    pub from: Option<String>,
    pub note: String,
    /// Whether the server lets the token register an account (`[registration]` not
    /// closed): a user invitation's URI says so with `ibr=y` (XEP-0401).
    pub ibr: bool,
    /// Who makes it, for `hearth invites`: the account of an admin using the ad-hoc
    /// command; by default the inviter, or `admin` (the owner at the command line).
    pub created_by: Option<String>,
}

/// A parsed `hearth invites` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvitesCommand {
    List,
    Revoke(i64),
    Help,
}

fn usage(msg: impl Into<String>) -> AdminError {
    AdminError::InviteUsage(msg.into())
}

/// Parses the arguments after `hearth invite`; `None` for `help`.
pub fn parse_invite_args(args: &[String]) -> Result<Option<InviteRequest>, AdminError> {
    let mut req = InviteRequest {
        uses: 1,
        valid_secs: DEFAULT_VALIDITY_SECS,
        household: false,
        from: None,
        note: String::new(),
        ibr: true,
        created_by: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "help" | "-h" | "--help" => return Ok(None),
            "--uses" => {
                let v = value("--uses")?;
                req.uses = match v.parse::<u32>() {
                    Ok(n) if (1..=1000).contains(&n) => n,
                    _ => return Err(usage(format!("--uses {v:?}: a number from 1 to 1000"))),
                };
            }
            "--expires" => {
                let v = value("--expires")?;
                req.valid_secs = invite::parse_validity(&v).map_err(usage)?;
            }
            "--household" => req.household = true,
            "--from" => req.from = Some(value("--from")?),
            "--note" => req.note = value("--note")?,
            other => return Err(usage(format!("unexpected argument {other:?}"))),
        }
    }
    Ok(Some(req))
}

/// Parses the arguments after `hearth invites`.
pub fn parse_invites_args(args: &[String]) -> Result<InvitesCommand, AdminError> {
    match args {
        [] => Ok(InvitesCommand::List),
        [list] if list == "list" => Ok(InvitesCommand::List),
        [help] if matches!(help.as_str(), "help" | "-h" | "--help") => Ok(InvitesCommand::Help),
        [revoke, id] if revoke == "revoke" => id
            .trim_start_matches('#')
            .parse()
            .map(InvitesCommand::Revoke)
            .map_err(|_| usage(format!("revoke {id:?}: an invitation's number"))),
        [revoke] if revoke == "revoke" => Err(usage("revoke needs ID (see `hearth invites`)")),
        [first, ..] => Err(usage(format!("unexpected argument {first:?}"))),
    }
}

/// Runs `hearth invite …`: stores a new invitation and returns what to print (URI, QR
/// code, fingerprint).
pub fn invite_command(args: &[String], cfg: &Config) -> Result<String, AdminError> {
    let Some(mut req) = parse_invite_args(args)? else {
        return Ok(INVITE_USAGE.to_owned());
    };
    req.ibr = cfg.registration.policy != crate::config::RegistrationPolicy::Closed;
    let storage = Storage::open(&cfg.data_dir).map_err(AdminError::Storage)?;
    let made = create(&storage, &cfg.domain, &req)?;
    let mut out = String::new();
    out.push_str(&format!(
        "Invitation #{} for {}, valid {} until {} (UTC){}:\n\n{}\n\n",
        made.id,
        match req.uses {
            1 => "one account".to_owned(),
            n => format!("{n} accounts"),
        },
        describe_secs(req.valid_secs),
        utc(made.expires_at),
        match &made.inviter {
            Some(j) => format!(", who will be contacts of {j}"),
            None => String::new(),
        },
        made.uri,
    ));
    match invite::qr::render(&made.uri) {
        Ok(lines) => {
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
            out.push('\n');
        }
        Err(e) => out.push_str(&format!("({e})\n\n")),
    }
    if cfg.registration.policy == crate::config::RegistrationPolicy::Closed {
        out.push_str(
            "Note: [registration] policy is \"closed\": nobody can sign up with this \
             invitation\nuntil it is \"invite\" (the default) or \"open\".\n\n",
        );
    }
    match crate::net::tls::inspect_certificate(cfg) {
        Ok(Some(info)) => out.push_str(&format!(
            "If the app asks whether to trust the server's certificate, it should show\n\
             this SHA-256 fingerprint:\n{}",
            info.fingerprint
        )),
        Ok(None) => out.push_str(
            "The server's certificate is made at its first start; run `hearth check`\n\
             then to see the fingerprint the app may ask to confirm.",
        ),
        Err(e) => out.push_str(&format!("(the certificate cannot be read: {e})")),
    }
    Ok(out)
}

/// A new invitation, as made by [`create`].
#[derive(Debug)]
pub struct Made {
    pub id: i64,
    pub uri: String,
    pub expires_at: i64,
    pub inviter: Option<BareJid>,
}

/// Stores an invitation for `req` and returns its URI. Shared by the CLI and the admin
/// ad-hoc command.
pub fn create(storage: &Storage, domain: &str, req: &InviteRequest) -> Result<Made, AdminError> {
    let inviter = match &req.from {
        Some(name) => {
            let user = localpart_of(name, domain)?;
            if !storage.account_exists(&user).map_err(AdminError::Storage)? {
                return Err(AdminError::UnknownUser(format!("{user}@{domain}")));
            }
            Some(user)
        }
        None => None,
    };
    let token = invite::new_token().map_err(AdminError::Storage)?;
    let secs = i64::try_from(req.valid_secs).unwrap_or(i64::MAX);
    let expires_at = crate::storage::unix_now().saturating_add(secs);
    let effects = InviteEffects {
        household: req.household,
        inviter: inviter.clone(),
    };
    let created_by = req
        .created_by
        .as_deref()
        .or(inviter.as_deref())
        .unwrap_or("admin");
    let id = storage
        .create_invite_with(
            &token, expires_at, req.uses, created_by, &req.note, &effects,
        )
        .map_err(AdminError::Storage)?;
    let inviter_jid = inviter.and_then(|u| BareJid::new(Some(&u), domain).ok());
    Ok(Made {
        id,
        uri: invite::invite_uri(domain, inviter_jid.as_ref(), &token, req.ibr),
        expires_at,
        inviter: inviter_jid,
    })
}

/// Runs `hearth invites …` on the database in `data_dir`.
pub fn invites_command(args: &[String], data_dir: &std::path::Path) -> Result<String, AdminError> {
    let command = parse_invites_args(args)?;
    if command == InvitesCommand::Help {
        return Ok(INVITE_USAGE.to_owned());
    }
    let storage = Storage::open(data_dir).map_err(AdminError::Storage)?;
    match command {
        InvitesCommand::Help => Ok(INVITE_USAGE.to_owned()),
        InvitesCommand::List => list(&storage, crate::storage::unix_now()),
        InvitesCommand::Revoke(id) => match storage.revoke_invite(id) {
            Ok(true) => Ok(format!("revoked invitation #{id}")),
            Ok(false) => Err(AdminError::UnknownInvite(id)),
            Err(e) => Err(AdminError::Storage(e)),
        },
    }
}

/// The invitations, one per line, newest first: id, uses left, expiry, creator,
/// household, note. Never a token (only its hash is stored anyway).
fn list(storage: &Storage, now: i64) -> Result<String, AdminError> {
    let invites = storage
        .list_invites()
        .map_err(|e: StorageError| AdminError::Storage(e))?;
    if invites.is_empty() {
        return Ok("no invitations".to_owned());
    }
    let mut out = format!(
        "{:>4}  {:>4}  {:<24}  {:<12}  {:<9}  note",
        "id", "uses", "expires (UTC)", "from", "household"
    );
    for i in invites {
        let expiry = if i.expires_at <= now {
            format!("expired {}", utc(i.expires_at))
        } else {
            utc(i.expires_at)
        };
        out.push_str(&format!(
            "\n{:>4}  {:>4}  {:<24}  {:<12}  {:<9}  {}",
            i.id,
            i.uses_left,
            expiry,
            i.created_by,
            if i.effects.household { "yes" } else { "no" },
            i.note
        ));
    }
    Ok(out)
}

/// `7d`, `12h`… back from seconds, for the summary line.
fn describe_secs(secs: u64) -> String {
    match secs {
        s if s % (24 * 3600) == 0 => format!("{} days", s / (24 * 3600)),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM` (UTC), without a date crate (Howard Hinnant's
/// civil-from-days).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Unix seconds as an XEP-0082 DateTime (`2026-12-11T17:52:00Z`).
pub fn utc_iso(secs: i64) -> String {
    let (date, time) = utc(secs).split_once(' ').map_or_else(
        || (String::new(), String::new()),
        |(d, t)| (d.to_owned(), t.to_owned()),
    );
    format!("{date}T{time}:{:02}Z", secs.rem_euclid(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_invite_lines() {
        let r = parse_invite_args(&args("")).unwrap().unwrap();
        assert_eq!((r.uses, r.valid_secs, r.household), (1, 7 * 86_400, false));
        let r = parse_invite_args(&args(
            "--uses 3 --expires 12h --household --from alice --note tablet",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            r,
            InviteRequest {
                uses: 3,
                valid_secs: 12 * 3600,
                household: true,
                from: Some("alice".into()),
                note: "tablet".into(),
                ibr: true,
                created_by: None,
            }
        );
        assert_eq!(parse_invite_args(&args("help")).unwrap(), None);
        for bad in [
            "--uses 0",
            "--uses x",
            "--expires",
            "--expires 3y",
            "--from",
            "extra",
        ] {
            let e = parse_invite_args(&args(bad)).unwrap_err();
            assert!(matches!(e, AdminError::InviteUsage(_)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn parses_invites_lines() {
        let p = |s: &str| parse_invites_args(&args(s));
        assert_eq!(p("").unwrap(), InvitesCommand::List);
        assert_eq!(p("revoke 4").unwrap(), InvitesCommand::Revoke(4));
        assert_eq!(p("revoke #4").unwrap(), InvitesCommand::Revoke(4));
        assert!(p("revoke").is_err());
        assert!(p("revoke x").is_err());
        assert!(p("drop 4").is_err());
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc_iso(59), "1970-01-01T00:00:59Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_796_400_000 + 3_661), "2026-12-04 17:01");
    }

    #[test]
    fn create_list_revoke() {
        let (_d, s) = crate::storage::test_store(&["alice"]);
        let req = parse_invite_args(&args("--from alice --household --note t"))
            .unwrap()
            .unwrap();
        let made = create(&s, "home.local", &req).unwrap();
        assert!(
            made.uri
                .starts_with("xmpp:alice@home.local?roster;preauth="),
            "{}",
            made.uri
        );
        assert!(made.uri.ends_with(";ibr=y"));
        let token = made
            .uri
            .split("preauth=")
            .nth(1)
            .and_then(|t| t.split(';').next())
            .unwrap();
        let plain = create(
            &s,
            "home.local",
            &parse_invite_args(&args("")).unwrap().unwrap(),
        )
        .unwrap();
        assert!(plain.uri.starts_with("xmpp:home.local?register;preauth="));
        let listed = list(&s, crate::storage::unix_now()).unwrap();
        assert!(!listed.contains(token), "the token is never listed");
        let lines: Vec<&str> = listed.lines().collect();
        assert_eq!(lines.len(), 3, "{listed}");
        assert!(
            lines[1].contains("admin") && lines[1].contains(" no "),
            "{listed}"
        );
        assert!(
            lines[2].contains("alice") && lines[2].contains("yes"),
            "{listed}"
        );
        assert!(lines[2].ends_with(" t"));
        let stored = s
            .find_invite(token, crate::storage::unix_now())
            .unwrap()
            .unwrap();
        assert_eq!(stored.effects.inviter.as_deref(), Some("alice"));
        assert!(stored.effects.household);
        // Unknown inviter.
        let bob = parse_invite_args(&args("--from bob")).unwrap().unwrap();
        assert!(matches!(
            create(&s, "home.local", &bob).unwrap_err(),
            AdminError::UnknownUser(_)
        ));
        assert!(s.revoke_invite(made.id).unwrap());
        assert_eq!(
            s.find_invite(token, crate::storage::unix_now()).unwrap(),
            None
        );
    }
}
