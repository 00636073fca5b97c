//! XEP-0133: Service Administration — the commands an owner needs from a phone: add a
//! user (§4.1), delete users (§4.2), end users' sessions (§4.5), change a user's
//! password (§4.7), the number (§4.13) and list (§4.18) of registered users, the number
//! (§4.15) and list (§4.20) of online users, and an announcement to everyone online
//! (§4.23).
//! Each is one stage: a form (XEP-0004, `FORM_TYPE` `http://jabber.org/protocol/admin`),
//! then the result.
//!
//! What the admin typed wrong (an unknown user, a taken name, passwords that differ)
//! completes the command with an error note (XEP-0050 §3.5) the client shows, rather
//! than a stanza error most clients show as "failed". Passwords are hashed on the
//! bounded argon2id threads (`PasswordChecks::derive`), never on the executor or the
//! storage threads, and never logged.

use crate::admin::localpart_of;
use crate::features::IqCx;
use crate::features::forms::{Field, Form, FormType, Submitted};
use crate::features::invite;
use crate::jid::normalize_resource;
use crate::ns;
use crate::password::{PasswordChecks, PasswordError};
use crate::router::im::on_pool;
use crate::stanza::{StanzaCondition, StanzaError};
use crate::stanza::{StreamCondition, StreamError};
use crate::storage::{Accounts as _, StorageError};
use crate::xml::Element;

/// The `FORM_TYPE` of every form here (XEP-0133 §4).
pub const NS_ADMIN: &str = "http://jabber.org/protocol/admin";

/// Accounts one delete-user may name.
const MAX_DELETE: usize = 100;

/// A command of the XEP-0133 set that hearth runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    AddUser,
    DeleteUser,
    EndUserSession,
    ChangeUserPassword,
    GetRegisteredUsersNum,
    GetRegisteredUsersList,
    GetOnlineUsersNum,
    GetOnlineUsersList,
    Announce,
    /// XEP-0401 (Prosody's mod_invites_adhoc node `urn:xmpp:invite#create-account`): an
    /// account invitation, with uses, validity, household and a note. Admins only.
    CreateAccountInvite,
    /// XEP-0401 (Prosody's node `urn:xmpp:invite#invite`): an invitation from the user
    /// running it, for themselves (the new user becomes their contact). Any local user
    /// ([`FOR_USERS`]).
    Invite,
}

/// Every command, in the order they are listed (disco#items, XEP-0050 §2.2).
pub const ALL: &[Command] = &[
    Command::AddUser,
    Command::DeleteUser,
    Command::EndUserSession,
    Command::ChangeUserPassword,
    Command::GetRegisteredUsersNum,
    Command::GetRegisteredUsersList,
    Command::GetOnlineUsersNum,
    Command::GetOnlineUsersList,
    Command::Announce,
    Command::CreateAccountInvite,
    Command::Invite,
];

/// The commands every local account may run: invite someone (XEP-0401).
pub const FOR_USERS: &[Command] = &[Command::Invite];

/// The `FORM_TYPE` of the invitation commands' result forms (XEP-0401's namespace).
pub const NS_INVITE: &str = "urn:xmpp:invite";

impl Command {
    /// The node XEP-0133 gives it.
    pub fn node(self) -> &'static str {
        match self {
            Command::AddUser => "http://jabber.org/protocol/admin#add-user",
            Command::DeleteUser => "http://jabber.org/protocol/admin#delete-user",
            Command::EndUserSession => "http://jabber.org/protocol/admin#end-user-session",
            Command::ChangeUserPassword => "http://jabber.org/protocol/admin#change-user-password",
            Command::GetRegisteredUsersNum => {
                "http://jabber.org/protocol/admin#get-registered-users-num"
            }
            Command::GetRegisteredUsersList => {
                "http://jabber.org/protocol/admin#get-registered-users-list"
            }
            Command::GetOnlineUsersNum => "http://jabber.org/protocol/admin#get-online-users-num",
            Command::GetOnlineUsersList => "http://jabber.org/protocol/admin#get-online-users-list",
            Command::Announce => "http://jabber.org/protocol/admin#announce",
            Command::CreateAccountInvite => "urn:xmpp:invite#create-account",
            Command::Invite => "urn:xmpp:invite#invite",
        }
    }

    /// Its name in a client's menu.
    pub fn name(self) -> &'static str {
        match self {
            Command::AddUser => "Add a user",
            Command::DeleteUser => "Delete users",
            Command::EndUserSession => "Log users out",
            Command::ChangeUserPassword => "Change a user's password",
            Command::GetRegisteredUsersNum => "Number of users",
            Command::GetRegisteredUsersList => "Users",
            Command::GetOnlineUsersNum => "Number of online users",
            Command::GetOnlineUsersList => "Online users",
            Command::Announce => "Announce to everyone online",
            Command::CreateAccountInvite => "Create an invitation",
            Command::Invite => "Invite someone",
        }
    }

    pub fn by_node(node: &str) -> Option<Command> {
        ALL.iter().copied().find(|c| c.node() == node)
    }

    /// The form it asks to be filled in, or `None` when it has nothing to ask.
    pub fn form(self) -> Option<Form> {
        let form = Form::new(FormType::Form, NS_ADMIN).title(self.name());
        Some(match self {
            // §4.1
            Command::AddUser => form
                .instructions("The new account's address and password.")
                .field(jid_single("accountjid", "The address of the new user"))
                .field(private("password", "Password"))
                .field(private("password-verify", "Password again")),
            // §4.2
            Command::DeleteUser => form
                .instructions("Everything stored for them goes too; they are logged out.")
                .field(
                    Field::new("accountjids", "jid-multi")
                        .label("The addresses of the users to delete")
                        .required(),
                ),
            // §4.5
            Command::EndUserSession => form
                .instructions(
                    "An address ends all of that user's sessions, user@domain/resource one. \
                     Their devices may log in again: change the password to stop that.",
                )
                .field(
                    Field::new("accountjids", "jid-multi")
                        .label("The users whose sessions to end")
                        .required(),
                ),
            // §4.7
            Command::ChangeUserPassword => form
                .field(jid_single("accountjid", "The address of the user"))
                .field(private("password", "New password")),
            // §4.13, §4.15: nothing to ask.
            Command::GetRegisteredUsersNum | Command::GetOnlineUsersNum => return None,
            // §4.18, §4.20
            Command::GetRegisteredUsersList | Command::GetOnlineUsersList => {
                form.field(max_items())
            }
            // §4.23
            Command::Announce => form
                .field(Field::new("subject", "text-single").label("Subject"))
                .field(
                    Field::new("announcement", "text-multi")
                        .label("Announcement")
                        .required(),
                ),
            Command::CreateAccountInvite => form
                .instructions(
                    "An invitation to create an account on this server from an app: \
                     scan or share the link it gives.",
                )
                .field(
                    Field::new("uses", "text-single")
                        .label("How many accounts it may create")
                        .value("1"),
                )
                .field(
                    Field::new("expires", "text-single")
                        .label("How long it is valid (30m, 12h, 7d, 2w)")
                        .value("7d"),
                )
                .field(
                    Field::new("household", "boolean")
                        .label("The new accounts join the household")
                        .value("0"),
                )
                .field(Field::new("note", "text-single").label("A note for you")),
            // Nothing to ask: one use, a week.
            Command::Invite => return None,
        })
    }
}

/// §4.18, §4.20: how long a list may be.
fn max_items() -> Field {
    let mut max = Field::new("max_items", "list-single")
        .label("Maximum number of users")
        .value("100");
    for n in ["25", "50", "75", "100", "150", "200"] {
        max = max.option(n, n);
    }
    max.option("none", "none")
}

/// The `max_items` asked for: all for `none`, 100 when unreadable.
fn max_items_of(form: &Submitted) -> usize {
    match form.text("max_items") {
        None | Some("none") => usize::MAX,
        Some(n) => n.parse().unwrap_or(100),
    }
}

/// A result form with one field of `values`.
fn result_field(var: &str, kind: &'static str, label: &str, values: Vec<String>) -> Done {
    let mut field = Field::new(var, kind).label(label);
    for v in values {
        field = field.value(v);
    }
    Done {
        note: None,
        result: Some(Form::new(FormType::Result, NS_ADMIN).field(field)),
    }
}

fn jid_single(var: &str, label: &str) -> Field {
    Field::new(var, "jid-single").label(label).required()
}

fn private(var: &str, label: &str) -> Field {
    Field::new(var, "text-private").label(label).required()
}

/// XEP-0050 §3.5 note types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteType {
    Info,
    Error,
}

impl NoteType {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteType::Info => "info",
            NoteType::Error => "error",
        }
    }
}

/// What a completed command tells the admin.
#[derive(Debug, Default)]
pub struct Done {
    pub note: Option<(NoteType, String)>,
    pub result: Option<Form>,
}

fn info(text: impl Into<String>) -> Result<Done, StanzaError> {
    Ok(Done {
        note: Some((NoteType::Info, text.into())),
        result: None,
    })
}

fn refused(text: impl Into<String>) -> Result<Done, StanzaError> {
    Ok(Done {
        note: Some((NoteType::Error, text.into())),
        result: None,
    })
}

fn internal(e: impl std::fmt::Display) -> StanzaError {
    log::error!("adhoc: {e}");
    StanzaError::new(StanzaCondition::InternalServerError)
}

/// What the commands need besides the request.
pub struct Context<'a> {
    /// The bounded argon2id threads, for the commands that set passwords.
    pub passwords: &'a PasswordChecks,
    /// Whether accounts may be registered from a client (`[registration]` not closed):
    /// an account invitation is refused otherwise, and a user invitation's URI has no
    /// `ibr=y` (XEP-0401).
    pub is_registration_offered: bool,
}

/// Runs `command` with the submitted `form` (`None` for a command with nothing to ask).
pub async fn run(
    command: Command,
    cx: &IqCx<'_>,
    ctx: &Context<'_>,
    form: Option<&Submitted>,
) -> Result<Done, StanzaError> {
    let passwords = ctx.passwords;
    if let Some(t) = form.and_then(Submitted::form_type)
        && t != NS_ADMIN
    {
        return Err(StanzaError::new(StanzaCondition::BadRequest)
            .with_app("bad-payload", super::NS_COMMANDS)
            .with_text("FORM_TYPE is not http://jabber.org/protocol/admin"));
    }
    let empty = Submitted::empty();
    let form = form.unwrap_or(&empty);
    let domain = cx.domain();
    match command {
        Command::AddUser => add_user(cx, passwords, form).await,
        Command::DeleteUser => delete_users(cx, form).await,
        Command::ChangeUserPassword => change_password(cx, passwords, form).await,
        Command::EndUserSession => end_sessions(cx, form).await,
        Command::GetRegisteredUsersNum => {
            let n = registered(cx).await?.len();
            Ok(result_field(
                "registeredusersnum",
                "text-single",
                "The number of registered users",
                vec![n.to_string()],
            ))
        }
        Command::GetRegisteredUsersList => {
            let users = registered(cx).await?;
            let jids = users.into_iter().take(max_items_of(form));
            Ok(result_field(
                "registereduserjids",
                "jid-multi",
                "The list of all users",
                jids.map(|u| format!("{u}@{domain}")).collect(),
            ))
        }
        Command::GetOnlineUsersNum => {
            let n = cx.im.router.online_users().len();
            Ok(result_field(
                "onlineusersnum",
                "text-single",
                "The number of online users",
                vec![n.to_string()],
            ))
        }
        Command::GetOnlineUsersList => {
            let users = cx.im.router.online_users().into_iter();
            Ok(result_field(
                "onlineuserjids",
                "jid-multi",
                "The list of all online users",
                users
                    .take(max_items_of(form))
                    .map(|u| format!("{u}@{domain}"))
                    .collect(),
            ))
        }
        Command::Announce => {
            let body = form.lines("announcement").join("\n");
            if body.is_empty() {
                return refused("The announcement is empty.");
            }
            let subject = form.text("subject").map(str::to_owned);
            let sent = cx.im.router.deliver_to_every_session(|to| {
                announcement(domain, to.as_str(), subject.as_deref(), &body)
            });
            log::info!(
                "c2s{}: {} announced to {sent} session(s)",
                cx.im.conn,
                cx.from.as_str()
            );
            info(format!("Sent to {sent} online session(s)."))
        }
        Command::CreateAccountInvite => {
            if !ctx.is_registration_offered {
                return refused(
                    "Sign-up is closed ([registration] policy): an invitation could not \
                     be used.",
                );
            }
            let uses = match form.text("uses").unwrap_or("1").parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => return refused("The number of uses must be from 1 to 1000."),
            };
            let valid_secs = match invite::parse_validity(form.text("expires").unwrap_or("7d")) {
                Ok(s) => s,
                Err(why) => return refused(format!("{why}.")),
            };
            let req = crate::admin::InviteRequest {
                uses,
                valid_secs,
                household: matches!(form.text("household"), Some("1" | "true")),
                from: None,
                note: form.text("note").unwrap_or_default().to_owned(),
                ibr: true,
                created_by: cx.from.session().and_then(|j| j.local()).map(str::to_owned),
            };
            make_invite(cx, req).await
        }
        Command::Invite => {
            let Some(user) = cx.from.session().and_then(|j| j.local()) else {
                return Err(StanzaError::new(StanzaCondition::Forbidden));
            };
            let req = crate::admin::InviteRequest {
                uses: 1,
                valid_secs: invite::DEFAULT_VALIDITY_SECS,
                household: false,
                from: Some(user.to_owned()),
                note: String::new(),
                ibr: ctx.is_registration_offered,
                created_by: None,
            };
            make_invite(cx, req).await
        }
    }
}

/// XEP-0401: stores the invitation and answers its URI (result field `uri`, as Prosody's
/// mod_invites_adhoc; no `landing-url`, hearth has no web page) and its expiry (`expire`,
/// XEP-0082). Never logs the token.
async fn make_invite(cx: &IqCx<'_>, req: crate::admin::InviteRequest) -> Result<Done, StanzaError> {
    let domain = cx.domain().to_owned();
    let made = match on_pool(cx.im.storage, move |s| {
        Ok(crate::admin::create_invite(s, &domain, &req))
    })
    .await
    .map_err(internal)?
    {
        Ok(made) => made,
        Err(crate::admin::AdminError::Storage(e)) => return Err(internal(e)),
        Err(e) => return refused(e.to_string()),
    };
    log::info!(
        "c2s{}: {} created invitation #{}",
        cx.im.conn,
        cx.from.as_str(),
        made.id
    );
    let expire = crate::admin::utc_iso(made.expires_at);
    let form = Form::new(FormType::Result, NS_INVITE)
        .title("Invitation")
        .field(
            Field::new("uri", "text-single")
                .label("Invite URI")
                .value(made.uri),
        )
        .field(
            Field::new("expire", "text-single")
                .label("Valid until")
                .value(expire),
        );
    Ok(Done {
        note: None,
        result: Some(form),
    })
}

/// §4.23: a headline from the server (RFC 6121 §5.2.2: not stored offline, not answered).
pub fn announcement(domain: &str, to: &str, subject: Option<&str>, body: &str) -> Element {
    let mut m = Element::new("message", ns::CLIENT)
        .with_attr("type", "headline")
        .with_attr("from", domain)
        .with_attr("to", to);
    if let Some(s) = subject {
        m.push_child(Element::new("subject", ns::CLIENT).with_text(s));
    }
    m.push_child(Element::new("body", ns::CLIENT).with_text(body));
    m
}

/// The localpart of a submitted address, or the note saying why it is not one of ours.
fn account(form: &Submitted, var: &str, domain: &str) -> Result<(String, String), String> {
    let Some(given) = form.text(var) else {
        return Err("No address was given.".into());
    };
    let user = localpart_of(given, domain).map_err(|e| e.to_string())?;
    Ok((format!("{user}@{domain}"), user))
}

/// A password field as typed (not trimmed: spaces may be part of it).
fn password<'f>(form: &'f Submitted, var: &str) -> Option<&'f str> {
    form.value(var).filter(|p| !p.is_empty())
}

/// The note for a password that could not be hashed, or the internal error.
fn password_problem(e: PasswordError) -> Result<Done, StanzaError> {
    match e {
        PasswordError::Busy => {
            refused("The server is busy checking passwords; try again in a moment.")
        }
        PasswordError::Invalid(why) => refused(format!("That password cannot be used: {why}.")),
        PasswordError::Crypto(e) => Err(internal(e)),
    }
}

/// §4.1
async fn add_user(
    cx: &IqCx<'_>,
    passwords: &PasswordChecks,
    form: &Submitted,
) -> Result<Done, StanzaError> {
    let (jid, user) = match account(form, "accountjid", cx.domain()) {
        Ok(a) => a,
        Err(why) => return refused(why),
    };
    let Some(pw) = password(form, "password") else {
        return refused("The password is empty.");
    };
    if form.value("password-verify") != Some(pw) {
        return refused("The two passwords differ.");
    }
    let u = user.clone();
    if on_pool(cx.im.storage, move |s| s.account_exists(&u))
        .await
        .map_err(internal)?
    {
        return refused(format!("{jid} already exists."));
    }
    let creds = match passwords
        .derive(pw.to_owned(), cx.im.storage.keeps_scram_keys())
        .await
    {
        Ok(c) => c,
        Err(e) => return password_problem(e),
    };
    let u = user.clone();
    match on_pool(cx.im.storage, move |s| s.insert_account(&u, &creds)).await {
        Ok(()) => {
            log::info!("c2s{}: {} added {jid}", cx.im.conn, cx.from.as_str());
            info(format!("Added {jid}."))
        }
        Err(StorageError::AlreadyExists { .. }) => refused(format!("{jid} already exists.")),
        Err(e) => Err(internal(e)),
    }
}

/// §4.2
async fn delete_users(cx: &IqCx<'_>, form: &Submitted) -> Result<Done, StanzaError> {
    let given = form.lines("accountjids");
    if given.is_empty() {
        return refused("No address was given.");
    }
    if given.len() > MAX_DELETE {
        return refused(format!("At most {MAX_DELETE} users at a time."));
    }
    let domain = cx.domain();
    let (mut deleted, mut problems) = (Vec::new(), Vec::new());
    for g in given {
        match localpart_of(g, domain) {
            Err(e) => problems.push(e.to_string()),
            Ok(user) => match cx.im.remove_account(cx.from, &user).await {
                Ok(true) => deleted.push(format!("{user}@{domain}")),
                Ok(false) => problems.push(format!("no such user: {user}@{domain}")),
                Err(e) => return Err(internal(e)),
            },
        }
    }
    if !deleted.is_empty() {
        log::info!(
            "c2s{}: {} deleted {}",
            cx.im.conn,
            cx.from.as_str(),
            deleted.join(", ")
        );
    }
    let mut text = String::new();
    if !deleted.is_empty() {
        text = format!("Deleted {}.", deleted.join(", "));
    }
    if problems.is_empty() {
        return info(text);
    }
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(&format!("Not deleted: {}.", problems.join("; ")));
    refused(text)
}

/// The accounts, sorted (§4.13, §4.18).
async fn registered(cx: &IqCx<'_>) -> Result<Vec<String>, StanzaError> {
    on_pool(cx.im.storage, |s| s.list_accounts())
        .await
        .map_err(internal)
}

/// §4.5: a bare JID ends all of the account's sessions, a full JID the one.
async fn end_sessions(cx: &IqCx<'_>, form: &Submitted) -> Result<Done, StanzaError> {
    let given = form.lines("accountjids");
    if given.is_empty() {
        return refused("No address was given.");
    }
    let domain = cx.domain();
    let err = StreamError::new(StreamCondition::PolicyViolation)
        .with_text("logged out by an administrator");
    let (mut ended, mut problems) = (0, Vec::new());
    for g in given {
        let (bare, resource) = match g.split_once('/') {
            Some((bare, r)) => match normalize_resource(r) {
                Ok(r) => (bare, Some(r)),
                Err(e) => {
                    problems.push(format!("{g}: {e}"));
                    continue;
                }
            },
            None => (g, None),
        };
        match localpart_of(bare, domain) {
            Err(e) => problems.push(e.to_string()),
            Ok(user) => {
                let n = cx.im.end_sessions(&user, resource.as_deref(), &err).await;
                if n == 0 {
                    problems.push(format!("{g} is not online"));
                }
                ended += n;
            }
        }
    }
    log::info!(
        "c2s{}: {} ended {ended} session(s)",
        cx.im.conn,
        cx.from.as_str()
    );
    let mut text = format!("Ended {ended} session(s).");
    if problems.is_empty() {
        return info(text);
    }
    text.push_str(&format!(" {}.", problems.join("; ")));
    refused(text)
}

/// §4.7
async fn change_password(
    cx: &IqCx<'_>,
    passwords: &PasswordChecks,
    form: &Submitted,
) -> Result<Done, StanzaError> {
    let (jid, user) = match account(form, "accountjid", cx.domain()) {
        Ok(a) => a,
        Err(why) => return refused(why),
    };
    let Some(pw) = password(form, "password") else {
        return refused("The password is empty.");
    };
    let u = user.clone();
    if !on_pool(cx.im.storage, move |s| s.account_exists(&u))
        .await
        .map_err(internal)?
    {
        return refused(format!("No such user: {jid}."));
    }
    let creds = match passwords
        .derive(pw.to_owned(), cx.im.storage.keeps_scram_keys())
        .await
    {
        Ok(c) => c,
        Err(e) => return password_problem(e),
    };
    match on_pool(cx.im.storage, move |s| s.replace_credentials(&user, &creds)).await {
        Ok(()) => {
            log::info!(
                "c2s{}: {} changed the password of {jid}",
                cx.im.conn,
                cx.from.as_str()
            );
            info(format!("Changed the password of {jid}."))
        }
        Err(StorageError::NotFound { .. }) => refused(format!("No such user: {jid}.")),
        Err(e) => Err(internal(e)),
    }
}
