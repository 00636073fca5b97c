//! XEP-0050: Ad-Hoc Commands — the server's commands, run from any client that speaks
//! XEP-0050 (Gajim, Conversations, Psi, slixmpp…): the owner administers the server
//! from a phone. The commands are XEP-0133's service administration set ([`admin`]) and
//! XEP-0401's `urn:xmpp:invite#create-account`, offered to the accounts named in the
//! `admins` setting only, and XEP-0401's `urn:xmpp:invite#invite`, offered to every
//! local account ([`admin::FOR_USERS`]).
//!
//! - Discovery (§2): `disco#items` on the server with node
//!   `http://jabber.org/protocol/commands` lists the commands the asker may run (only
//!   the invite command for anyone but an admin); `disco#info` on a command's node
//!   describes it (§2.3).
//! - Execution (§3): `<command node=… action='execute'/>` answers with the command's
//!   data form (XEP-0004) and `status='executing'` with a `sessionid`; submitting the
//!   form (`action='complete'`, or `execute` with a filled form) runs it and answers
//!   `status='completed'` with a note or a result form; `action='cancel'` ends the session
//!   with `status='canceled'`. Commands with nothing to ask (the number of online users)
//!   complete at once.
//! - Errors (§4.4): `bad-request` with `<malformed-action/>`, `<bad-action/>`,
//!   `<bad-payload/>` or `<bad-sessionid/>`; `not-allowed` with `<session-expired/>`;
//!   `forbidden` for a command the asker may not run; `item-not-found` for an unknown
//!   node.
//!
//! Sessions live in memory only, a few per account ([`MAX_SESSIONS_PER_ACCOUNT`], the
//! oldest is dropped for a new one), [`MAX_SESSIONS`] in all, each for
//! [`SESSION_TTL`]; every command here has one stage, so a session is the time between
//! showing a form and its submission. The rules ([`Sessions::step`]) take the clock as a
//! parameter and are tested without a socket.

pub mod admin;
#[cfg(test)]
mod tests;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::forms::{FormType, NS_DATA, Submitted};
use super::{
    Access, Announce, Doc, IqCx, IqFuture, IqOutcome, IqRoute, Module, On, Spec, Status, Target,
};
use crate::jid::{BareJid, FullJid};
use crate::password::PasswordChecks;
use crate::router::im::Sender;
use crate::stanza::{IqType, Stanza, StanzaCondition, StanzaError};
use crate::xml::Element;
use admin::{Command, Done};

/// The ad-hoc commands namespace, also the disco node listing the commands (§2.2).
pub const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";

/// Open sessions per account; a new one drops that account's oldest.
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 4;
/// Open sessions in all; past this a new one is refused (`resource-constraint`).
pub const MAX_SESSIONS: usize = 64;
/// A form not submitted within this long is forgotten: `<session-expired/>`.
pub const SESSION_TTL: Duration = Duration::from_secs(10 * 60);

/// XEP-0050 with the XEP-0133 commands, for the server's domain.
pub struct Adhoc {
    /// Who may run the admin commands (`admins`).
    admins: Vec<BareJid>,
    /// The bounded argon2id threads, for the commands that set passwords.
    passwords: PasswordChecks,
    /// Commands waiting for their form.
    sessions: Sessions,
    /// Whether `[registration]` lets accounts be created from a client (XEP-0401's
    /// commands depend on it); true unless told otherwise ([`Adhoc::with_registration`]).
    is_registration_offered: bool,
}

impl Adhoc {
    pub fn new(admins: Vec<BareJid>, passwords: PasswordChecks) -> Adhoc {
        Adhoc {
            admins,
            passwords,
            sessions: Sessions::default(),
            is_registration_offered: true,
        }
    }

    /// Says whether accounts may be registered from a client (`[registration] policy`
    /// not closed): an admin's account invitation is refused when not, and a user's
    /// invitation is for existing accounts only (no `ibr=y`, XEP-0401).
    pub fn with_registration(mut self, is_offered: bool) -> Adhoc {
        self.is_registration_offered = is_offered;
        self
    }

    /// An admin is a local session of an account in `admins`; never a remote address.
    pub fn is_admin(&self, from: Sender<'_>) -> bool {
        from.session()
            .is_some_and(|j| self.admins.iter().any(|a| *a == j.bare()))
    }

    /// The commands `from` may run: all for an admin, inviting (XEP-0401) for any other
    /// local account, none for another server's users.
    pub fn commands_for(&self, from: Sender<'_>) -> &'static [Command] {
        if self.is_admin(from) {
            admin::ALL
        } else if from.session().is_some() {
            admin::FOR_USERS
        } else {
            &[]
        }
    }

    async fn execute(&self, cx: &IqCx<'_>, iq: &Stanza, now: Instant) -> IqOutcome {
        if *cx.target != Target::Server {
            return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
        }
        let Some(payload) = iq.iq_payload().filter(|p| p.is("command", NS_COMMANDS)) else {
            return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
        };
        if iq.iq_type() != Some(IqType::Set) {
            // §3: commands are run with iq set.
            return Err(StanzaError::new(StanzaCondition::BadRequest));
        }
        let request = Request::parse(payload)?;
        let Some(command) = Command::by_node(&request.node) else {
            return Err(StanzaError::new(StanzaCondition::ItemNotFound));
        };
        let Some(owner) = cx
            .from
            .session()
            .filter(|_| self.commands_for(cx.from).contains(&command))
        else {
            return Err(StanzaError::new(StanzaCondition::Forbidden));
        };
        match self.sessions.step(owner, command, &request, now)? {
            Step::Show(id) => Ok(Some(executing(command, &id))),
            Step::Canceled(id) => Ok(Some(answer(command, &id, "canceled"))),
            Step::Run(id) => {
                let ctx = admin::Context {
                    passwords: &self.passwords,
                    is_registration_offered: self.is_registration_offered,
                };
                let done = admin::run(command, cx, &ctx, request.form.as_ref()).await?;
                Ok(Some(completed(command, &id, done)))
            }
        }
    }

    /// §2.2, §2.3: the command list, and each command's description.
    fn node(&self, cx: &IqCx<'_>, node: &str, is_info: bool) -> Option<IqOutcome> {
        if *cx.target != Target::Server {
            return None;
        }
        let domain = cx.domain();
        if node == NS_COMMANDS {
            let ns = if is_info {
                crate::ns::DISCO_INFO
            } else {
                crate::ns::DISCO_ITEMS
            };
            let mut q = Element::new("query", ns).with_attr("node", NS_COMMANDS);
            if is_info {
                q.push_child(
                    Element::new("identity", ns)
                        .with_attr("category", "automation")
                        .with_attr("type", "command-list")
                        .with_attr("name", "Commands"),
                );
            } else {
                for c in self.commands_for(cx.from) {
                    q.push_child(
                        Element::new("item", ns)
                            .with_attr("jid", domain)
                            .with_attr("node", c.node())
                            .with_attr("name", c.name()),
                    );
                }
            }
            return Some(Ok(Some(q)));
        }
        let command = Command::by_node(node)?;
        if !self.commands_for(cx.from).contains(&command) {
            return Some(Err(StanzaError::new(StanzaCondition::Forbidden)));
        }
        let ns = crate::ns::DISCO_INFO;
        let mut q = Element::new("query", if is_info { ns } else { crate::ns::DISCO_ITEMS })
            .with_attr("node", node);
        if is_info {
            q.push_child(
                Element::new("identity", ns)
                    .with_attr("category", "automation")
                    .with_attr("type", "command-node")
                    .with_attr("name", command.name()),
            );
            for f in [NS_COMMANDS, NS_DATA] {
                q.push_child(Element::new("feature", ns).with_attr("var", f));
            }
        }
        Some(Ok(Some(q)))
    }
}

impl Module for Adhoc {
    fn name(&self) -> &'static str {
        "adhoc"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Xep(4),
                title: "Data Forms",
                version: "2.13.1",
                status: Status::Partial,
                note: "the forms of ad-hoc commands; no reported tables, no media",
            },
            Spec {
                doc: Doc::Xep(50),
                title: "Ad-Hoc Commands",
                version: "1.3.0",
                status: Status::Complete,
                note: "the server's commands, one stage each; sessions in memory, 10 \
                       minutes; every local user may run XEP-0401's invite command",
            },
            Spec {
                doc: Doc::Xep(133),
                title: "Service Administration",
                version: "1.3.0",
                status: Status::Partial,
                note: "for `admins`: add and delete users, end sessions, change a password, \
                       registered and online users (number, list), announce; no disabling, \
                       no statistics, no MOTD",
            },
        ]
    }

    fn disco(&self) -> &'static [Announce] {
        &[Announce {
            var: NS_COMMANDS,
            on: On::Server,
        }]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            ns: NS_COMMANDS,
            on: On::Server,
            access: Access::Anyone,
        }]
    }

    fn disco_node(&self, cx: &IqCx<'_>, node: &str, is_info: bool) -> Option<IqOutcome> {
        self.node(cx, node, is_info)
    }

    fn handle_iq<'a>(&'a self, cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        Box::pin(self.execute(cx, iq, Instant::now()))
    }
}

/// What the requester asks for (§3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Execute,
    Complete,
    Cancel,
    Next,
    Prev,
}

/// A `<command/>` from a requester, read.
#[derive(Debug)]
pub struct Request {
    pub node: String,
    pub sessionid: Option<String>,
    pub action: Action,
    /// The data form it carries, if any.
    pub form: Option<Submitted>,
}

/// The XEP-0050 §4.4 error: `condition` with the commands namespace's `name`.
fn command_error(condition: StanzaCondition, name: &'static str) -> StanzaError {
    StanzaError::new(condition).with_app(name, NS_COMMANDS)
}

fn bad(name: &'static str) -> StanzaError {
    command_error(StanzaCondition::BadRequest, name)
}

impl Request {
    pub fn parse(el: &Element) -> Result<Request, StanzaError> {
        let node = el
            .attr("node")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| StanzaError::new(StanzaCondition::BadRequest).with_text("no node"))?;
        // §3.3: no action means execute.
        let action = match el.attr("action").unwrap_or("execute") {
            "execute" => Action::Execute,
            "complete" => Action::Complete,
            "cancel" => Action::Cancel,
            "next" => Action::Next,
            "prev" => Action::Prev,
            _ => return Err(bad("malformed-action")),
        };
        let form = match el.get_child("x", NS_DATA) {
            Some(x) => {
                Some(Submitted::parse(x).map_err(|e| bad("bad-payload").with_text(e.to_string()))?)
            }
            None => None,
        };
        Ok(Request {
            node: node.to_owned(),
            sessionid: el.attr("sessionid").map(str::to_owned),
            action,
            form,
        })
    }
}

/// What to do with a request, decided by [`Sessions::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Show the command's form, in this session.
    Show(String),
    /// Run the command with the submitted form (the session, if any, is over).
    Run(String),
    /// The session is canceled.
    Canceled(String),
}

/// One command waiting for its form.
#[derive(Debug)]
struct Session {
    id: String,
    /// The full JID that started it: only that resource may go on with it (§3.4).
    owner: FullJid,
    command: Command,
    started: Instant,
}

/// The open sessions, bounded (see the module's doc).
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<Vec<Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions open now (for tests).
    pub fn open(&self) -> usize {
        self.lock().len()
    }

    /// The XEP-0050 rules for `request` of `command` from `owner` at `now`: start a
    /// session and show the form, run the command, or cancel — or the §4.4 error.
    pub fn step(
        &self,
        owner: &FullJid,
        command: Command,
        request: &Request,
        now: Instant,
    ) -> Result<Step, StanzaError> {
        let mut action = request.action;
        let mut has_form = false;
        if let Some(form) = &request.form {
            match form.kind {
                // XEP-0004 §3.1: a canceled form cancels the command.
                FormType::Cancel => action = Action::Cancel,
                FormType::Submit => has_form = true,
                FormType::Form | FormType::Result => return Err(bad("bad-payload")),
            }
        }
        if matches!(action, Action::Next | Action::Prev) {
            // §4.4: every command here has one stage; there is nowhere to go.
            return Err(bad("bad-action"));
        }
        let mut open = self.lock();
        let Some(id) = &request.sessionid else {
            return match action {
                Action::Execute if !has_form && command.form().is_some() => {
                    let id = start(&mut open, owner, command, now)?;
                    Ok(Step::Show(id))
                }
                // A filled form with the first request, or nothing to ask: at once.
                Action::Execute | Action::Complete if has_form || command.form().is_none() => {
                    Ok(Step::Run(crate::stream::new_stream_id()))
                }
                _ => Err(bad("bad-sessionid")),
            };
        };
        let Some(i) = open
            .iter()
            .position(|s| s.id == *id && s.owner == *owner && s.command == command)
        else {
            return Err(bad("bad-sessionid"));
        };
        if now.saturating_duration_since(open[i].started) > SESSION_TTL {
            open.remove(i);
            return Err(command_error(
                StanzaCondition::NotAllowed,
                "session-expired",
            ));
        }
        match action {
            Action::Cancel => {
                open.remove(i);
                Ok(Step::Canceled(id.clone()))
            }
            Action::Execute | Action::Complete if has_form => {
                open.remove(i);
                Ok(Step::Run(id.clone()))
            }
            // Execute again without a form: the same form once more.
            Action::Execute => Ok(Step::Show(id.clone())),
            _ => Err(bad("bad-payload").with_text("the form is missing")),
        }
    }
}

/// Opens a session: expired ones go first, then the owner's account's oldest past
/// [`MAX_SESSIONS_PER_ACCOUNT`]; past [`MAX_SESSIONS`] none is opened.
fn start(
    open: &mut Vec<Session>,
    owner: &FullJid,
    command: Command,
    now: Instant,
) -> Result<String, StanzaError> {
    open.retain(|s| now.saturating_duration_since(s.started) <= SESSION_TTL);
    let account = owner.bare();
    let mine: Vec<usize> = (0..open.len())
        .filter(|&i| open[i].owner.bare() == account)
        .collect();
    if mine.len() >= MAX_SESSIONS_PER_ACCOUNT {
        open.remove(mine[0]);
    }
    if open.len() >= MAX_SESSIONS {
        return Err(StanzaError::new(StanzaCondition::ResourceConstraint)
            .with_text("too many commands waiting for a form"));
    }
    let id = crate::stream::new_stream_id();
    open.push(Session {
        id: id.clone(),
        owner: owner.clone(),
        command,
        started: now,
    });
    Ok(id)
}

/// A `<command/>` answer with `status`.
fn answer(command: Command, sessionid: &str, status: &str) -> Element {
    Element::new("command", NS_COMMANDS)
        .with_attr("node", command.node())
        .with_attr("sessionid", sessionid)
        .with_attr("status", status)
}

/// §3.4: the form, the session still open, `complete` the one way on.
fn executing(command: Command, sessionid: &str) -> Element {
    let mut el = answer(command, sessionid, "executing");
    el.push_child(
        Element::new("actions", NS_COMMANDS)
            .with_attr("execute", "complete")
            .with_child(Element::new("complete", NS_COMMANDS)),
    );
    if let Some(form) = command.form() {
        el.push_child(form.to_element());
    }
    el
}

/// §3.4: done, with a note (§3.5) and the result form, if any.
fn completed(command: Command, sessionid: &str, done: Done) -> Element {
    let mut el = answer(command, sessionid, "completed");
    if let Some((kind, text)) = done.note {
        el.push_child(
            Element::new("note", NS_COMMANDS)
                .with_attr("type", kind.as_str())
                .with_text(text),
        );
    }
    if let Some(form) = done.result {
        el.push_child(form.to_element());
    }
    el
}
