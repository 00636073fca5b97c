//! The XEP-0050 rules and the XEP-0133 commands through `Im::route`, without a socket:
//! a real router, a registry whose `admins` is alice, and a temporary SQLite file.

use std::time::{Duration, Instant};

use super::admin::{ALL, Command, FOR_USERS};
use super::{Action, Adhoc, MAX_SESSIONS_PER_ACCOUNT, Request, SESSION_TTL, Sessions, Step};
use crate::features::Registry;
use crate::jid::{BareJid, FullJid};
use crate::ns;
use crate::password::{PasswordCheckConfig, PasswordChecks};
use crate::router::im::Im;
use crate::router::{QUEUE_BYTES, Router, SessionRx, ToSession, session_queue};
use crate::stanza::{Stanza, StanzaCondition};
use crate::storage::{Accounts as _, Storage};
use crate::xml::{Element, Event, Framer, Limits};

const DOMAIN: &str = "home.example";
const ADMIN: &str = "http://jabber.org/protocol/admin";

struct World {
    _dir: tempfile::TempDir,
    router: Router,
    storage: Storage,
    modules: Registry,
}

struct Session {
    jid: FullJid,
    rx: SessionRx,
}

impl World {
    /// Accounts alice (the admin), bob and carol, password "pw".
    fn new() -> World {
        World::with_registration(true)
    }

    /// [`World::new`], with `[registration]` offering sign-up or closed.
    fn with_registration(is_offered: bool) -> World {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap().with_scram_keys(false);
        for u in ["alice", "bob", "carol"] {
            storage.create_account(u, "pw").unwrap();
        }
        let passwords = PasswordChecks::new(PasswordCheckConfig {
            at_once: 1,
            queue: 2,
        });
        let admins = vec![BareJid::parse("alice@home.example").unwrap()];
        World {
            _dir: dir,
            router: Router::new(DOMAIN.into()),
            storage,
            modules: Registry::configured(
                &Default::default(),
                Adhoc::new(admins, passwords).with_registration(is_offered),
                crate::features::register::Register::standalone(),
                &Default::default(),
                &Default::default(),
            ),
        }
    }

    fn im(&self) -> Im<'_> {
        Im {
            router: &self.router,
            storage: &self.storage,
            modules: &self.modules,
            conn: 0,
        }
    }

    fn bind(&self, user: &str, resource: &str) -> Session {
        let (tx, rx) = session_queue(QUEUE_BYTES);
        let bound = self.router.bind(user, Some(resource.into()), tx).unwrap();
        Session { jid: bound.jid, rx }
    }

    /// `xml` from `from`; what was written straight back, in single quotes.
    fn send(&self, from: &Session, xml: &str) -> String {
        let mut el = parse(xml);
        el.set_attr("from", from.jid.as_str());
        let stanza = Stanza::from_client(el).unwrap();
        let mut out = String::new();
        let _ = smol::block_on(self.im().route(&from.jid, stanza, &mut out));
        out.replace('"', "'")
    }

    /// A `<command/>` to the server, with `inner` inside it.
    fn command(&self, from: &Session, attrs: &str, inner: &str) -> String {
        self.send(
            from,
            &format!(
                "<iq type='set' id='c' to='{DOMAIN}'><command \
                 xmlns='http://jabber.org/protocol/commands' {attrs}>{inner}</command></iq>"
            ),
        )
    }
}

fn parse(xml: &str) -> Element {
    let mut f = Framer::new(Limits::default());
    let header = format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}' to='{DOMAIN}' version='1.0'>",
        ns::CLIENT,
        ns::STREAM
    );
    f.feed(header.as_bytes()).unwrap();
    f.feed(xml.as_bytes()).unwrap();
    loop {
        match f.next_event().unwrap() {
            Some(Event::Stanza(el)) => return el,
            Some(_) => continue,
            None => panic!("no stanza in {xml}"),
        }
    }
}

/// A submitted admin form with these fields.
fn submit(fields: &[(&str, &str)]) -> String {
    let mut x = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{ADMIN}</value></field>"
    );
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    x + "</x>"
}

fn sessionid(out: &str) -> String {
    let at = out.find("sessionid='").expect("a sessionid") + "sessionid='".len();
    out[at..].split('\'').next().unwrap().to_owned()
}

fn node(c: Command) -> String {
    format!("node='{}'", c.node())
}

/// Runs `command` to its form, then submits `fields`; the completed answer.
fn run(w: &World, who: &Session, command: Command, fields: &[(&str, &str)]) -> String {
    let out = w.command(who, &format!("{} action='execute'", node(command)), "");
    assert!(out.contains("status='executing'"), "{out}");
    let id = sessionid(&out);
    w.command(
        who,
        &format!("{} sessionid='{id}' action='complete'", node(command)),
        &submit(fields),
    )
}

fn queued(s: &Session) -> Vec<String> {
    let mut v = Vec::new();
    loop {
        match s.rx.try_recv() {
            Ok(ToSession::Stanza(x)) => v.push(x.el.to_xml_in(ns::CLIENT).replace('"', "'")),
            Ok(ToSession::Close(e)) => v.push(format!("CLOSE {}", e.to_xml())),
            Err(_) => return v,
        }
    }
}

#[test]
fn disco_lists_the_commands_to_admins_only() {
    let w = World::new();
    let alice = w.bind("alice", "phone");
    let bob = w.bind("bob", "desk");
    let info = w.send(
        &bob,
        "<iq type='get' id='i' to='home.example'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(
        info.contains("var='http://jabber.org/protocol/commands'"),
        "{info}"
    );
    let items = "<iq type='get' id='i' to='home.example'><query \
                 xmlns='http://jabber.org/protocol/disco#items' \
                 node='http://jabber.org/protocol/commands'/></iq>";
    let out = w.send(&alice, items);
    for c in ALL {
        assert!(out.contains(&format!("node='{}'", c.node())), "{out}");
    }
    assert!(out.contains("jid='home.example'"), "{out}");
    // Anyone else local: only inviting (XEP-0401).
    let out = w.send(&bob, items);
    assert!(out.contains("type='result'"), "{out}");
    assert_eq!(out.matches("<item").count(), 1, "{out}");
    assert!(out.contains("node='urn:xmpp:invite#invite'"), "{out}");
    let node_info = format!(
        "<iq type='get' id='n' to='home.example'><query \
         xmlns='http://jabber.org/protocol/disco#info' node='{}'/></iq>",
        Command::AddUser.node()
    );
    let out = w.send(&alice, &node_info);
    assert!(
        out.contains("type='command-node'") && out.contains("var='jabber:x:data'"),
        "{out}"
    );
    assert!(w.send(&bob, &node_info).contains("<forbidden"));
    // Other nodes are nobody's.
    let out = w.send(
        &alice,
        "<iq type='get' id='x' to='home.example'><query \
         xmlns='http://jabber.org/protocol/disco#info' node='urn:none'/></iq>",
    );
    assert!(out.contains("item-not-found"), "{out}");
}

#[test]
fn non_admins_are_refused() {
    let w = World::new();
    let bob = w.bind("bob", "desk");
    for c in ALL.iter().filter(|c| !FOR_USERS.contains(c)) {
        let out = w.command(&bob, &format!("{} action='execute'", node(*c)), "");
        assert!(
            out.contains("type='error'") && out.contains("<forbidden"),
            "{out}"
        );
    }
    // Even with a filled form at once.
    let out = w.command(
        &bob,
        &node(Command::AddUser),
        &submit(&[
            ("accountjid", "eve@home.example"),
            ("password", "x"),
            ("password-verify", "x"),
        ]),
    );
    assert!(out.contains("<forbidden"), "{out}");
    assert!(!w.storage.account_exists("eve").unwrap());
}

/// XEP-0401: any local user may invite, for themselves; the URI's token is stored with
/// them as the inviter. An admin's account invitation takes uses, validity, household.
#[test]
fn users_invite_and_admins_create_invitations() {
    use crate::features::register::InviteStore as _;
    let w = World::new();
    let alice = w.bind("alice", "phone");
    let bob = w.bind("bob", "desk");
    let out = w.command(
        &bob,
        &format!("{} action='execute'", node(Command::Invite)),
        "",
    );
    assert!(out.contains("status='completed'"), "{out}");
    assert!(out.contains("<value>urn:xmpp:invite</value>"), "{out}");
    let uri = out
        .split("<field var='uri'")
        .nth(1)
        .and_then(|f| f.split("<value>").nth(1))
        .and_then(|v| v.split("</value>").next())
        .unwrap_or_else(|| panic!("no uri in {out}"));
    assert!(
        uri.starts_with("xmpp:bob@home.example?roster;preauth="),
        "{uri}"
    );
    let token = uri
        .split("preauth=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .unwrap();
    let stored = w
        .storage
        .find_invite(token, crate::storage::unix_now())
        .unwrap()
        .unwrap();
    assert_eq!(stored.effects.inviter.as_deref(), Some("bob"));
    assert_eq!((stored.uses_left, stored.effects.household), (1, false));

    let create = Command::CreateAccountInvite;
    let shown = w.command(&alice, &format!("{} action='execute'", node(create)), "");
    assert!(shown.contains("var='household'"), "{shown}");
    let out = run(
        &w,
        &alice,
        create,
        &[
            ("uses", "3"),
            ("expires", "2h"),
            ("household", "1"),
            ("note", "guests"),
        ],
    );
    assert!(out.contains("xmpp:home.example?register;preauth="), "{out}");
    let listed = w.storage.list_invites().unwrap();
    let newest = &listed[0];
    assert_eq!((newest.uses_left, newest.note.as_str()), (3, "guests"));
    assert_eq!(newest.created_by, "alice");
    assert!(newest.effects.household && newest.effects.inviter.is_none());
    let left = newest.expires_at - crate::storage::unix_now();
    assert!((7190..=7200).contains(&left), "{left}");
    // A bad validity is a note, not an invitation.
    let out = run(&w, &alice, create, &[("expires", "3y")]);
    assert!(
        out.contains("type='error'") && out.contains("<note"),
        "{out}"
    );
    assert_eq!(w.storage.list_invites().unwrap().len(), 2);
}

/// XEP-0401 with `[registration] policy = "closed"`: a user's invitation has no `ibr=y`
/// (the token cannot register, it only approves a subscription, XEP-0379), and an
/// admin's account invitation is refused with a note.
#[test]
fn invitations_when_sign_up_is_closed() {
    use crate::features::register::InviteStore as _;
    let w = World::with_registration(false);
    let alice = w.bind("alice", "phone");
    let bob = w.bind("bob", "desk");
    let out = w.command(
        &bob,
        &format!("{} action='execute'", node(Command::Invite)),
        "",
    );
    assert!(
        out.contains("xmpp:bob@home.example?roster;preauth="),
        "{out}"
    );
    assert!(!out.contains("ibr=y"), "{out}");
    let out = run(&w, &alice, Command::CreateAccountInvite, &[("uses", "1")]);
    assert!(
        out.contains("<note type='error'>Sign-up is closed"),
        "{out}"
    );
    assert_eq!(w.storage.list_invites().unwrap().len(), 1, "bob's only");
}

#[test]
fn add_user_shows_a_form_then_creates_the_account() {
    let w = World::new();
    let alice = w.bind("alice", "phone");
    let out = w.command(&alice, &node(Command::AddUser), "");
    assert!(out.contains("status='executing'"), "{out}");
    assert!(
        out.contains("<actions execute='complete'><complete/></actions>"),
        "{out}"
    );
    assert!(
        out.contains("<x xmlns='jabber:x:data' type='form'>"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "<field var='FORM_TYPE' type='hidden'><value>{ADMIN}</value></field>"
        )),
        "{out}"
    );
    for var in ["accountjid", "password", "password-verify"] {
        assert!(out.contains(&format!("var='{var}'")), "{out}");
    }
    let done = w.command(
        &alice,
        &format!(
            "{} sessionid='{}' action='complete'",
            node(Command::AddUser),
            sessionid(&out)
        ),
        &submit(&[
            ("accountjid", "Dave@home.example"),
            ("password", "correct horse"),
            ("password-verify", "correct horse"),
        ]),
    );
    assert!(done.contains("status='completed'"), "{done}");
    assert!(
        done.contains("<note type='info'>Added dave@home.example.</note>"),
        "{done}"
    );
    assert!(w.storage.verify_password("dave", "correct horse").unwrap());
    assert!(
        !done.contains("correct horse"),
        "the password is not echoed"
    );

    // What the admin typed wrong is an error note; nothing changes.
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("accountjid", "erin@home.example"),
                ("password", "a"),
                ("password-verify", "b"),
            ],
            "differ",
        ),
        (
            &[
                ("accountjid", "bob@home.example"),
                ("password", "a"),
                ("password-verify", "a"),
            ],
            "already exists",
        ),
        (
            &[
                ("accountjid", "erin@elsewhere.example"),
                ("password", "a"),
                ("password-verify", "a"),
            ],
            "domain",
        ),
        (&[("accountjid", "erin@home.example")], "empty"),
        (&[("password", "a"), ("password-verify", "a")], "No address"),
    ];
    for (fields, why) in cases {
        let out = run(&w, &alice, Command::AddUser, fields);
        assert!(
            out.contains("status='completed'")
                && out.contains("<note type='error'>")
                && out.contains(why),
            "{why}: {out}"
        );
    }
    assert!(!w.storage.account_exists("erin").unwrap());
    assert!(w.storage.verify_password("bob", "pw").unwrap());
}

#[test]
fn delete_user_removes_the_rows_and_ends_the_sessions() {
    use crate::features::last::LastActivity as _;
    let w = World::new();
    let alice = w.bind("alice", "phone");
    let bob = w.bind("bob", "desk");
    let carol = w.bind("carol", "tv");
    // Carol sees bob's presence.
    w.send(&bob, "<presence/>");
    w.send(&carol, "<presence/>");
    w.send(&carol, "<presence type='subscribe' to='bob@home.example'/>");
    w.send(
        &bob,
        "<presence type='subscribed' to='carol@home.example'/>",
    );
    queued(&carol);
    w.storage.set_last_activity("bob", 1, "gone").unwrap();
    // One jid-multi field with two values.
    let x = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{ADMIN}</value></field>\
         <field var='accountjids'><value>bob@home.example</value><value>nobody@home.example</value></field></x>"
    );
    let out = w.command(&alice, &node(Command::DeleteUser), &x);
    assert!(out.contains("status='completed'"), "{out}");
    assert!(out.contains("Deleted bob@home.example."), "{out}");
    assert!(out.contains("no such user: nobody@home.example"), "{out}");
    assert!(!w.storage.account_exists("bob").unwrap());
    assert_eq!(
        w.storage.last_activity("bob").unwrap(),
        None,
        "rows cascade"
    );
    let to_bob = queued(&bob);
    assert!(
        to_bob
            .iter()
            .any(|s| s.starts_with("CLOSE") && s.contains("not-authorized")),
        "{to_bob:?}"
    );
    assert!(w.router.available_resources("bob").is_empty());
    // RFC 6121 §4.5.2: his contacts see him go.
    let to_carol = queued(&carol);
    assert!(
        to_carol
            .iter()
            .any(|p| p.contains("type='unavailable'") && p.contains("from='bob@home.example/desk'")),
        "{to_carol:?}"
    );
}

#[test]
fn change_password_replaces_it() {
    let w = World::new();
    let alice = w.bind("alice", "phone");
    let out = run(
        &w,
        &alice,
        Command::ChangeUserPassword,
        &[("accountjid", "carol"), ("password", "new one")],
    );
    assert!(
        out.contains("Changed the password of carol@home.example."),
        "{out}"
    );
    assert!(w.storage.verify_password("carol", "new one").unwrap());
    assert!(!w.storage.verify_password("carol", "pw").unwrap());
    let out = run(
        &w,
        &alice,
        Command::ChangeUserPassword,
        &[("accountjid", "nobody"), ("password", "x")],
    );
    assert!(out.contains("<note type='error'>No such user"), "{out}");
}

#[test]
fn online_users_number_and_list() {
    let w = World::new();
    let alice = w.bind("alice", "phone");
    let _a2 = w.bind("alice", "laptop");
    let _c = w.bind("carol", "tv");
    // Nothing to ask: completed at once.
    let out = w.command(&alice, &node(Command::GetOnlineUsersNum), "");
    assert!(out.contains("status='completed'"), "{out}");
    assert!(
        out.contains("<field var='onlineusersnum' type='text-single' label='The number of online users'><value>2</value>"),
        "{out}"
    );
    let out = run(
        &w,
        &alice,
        Command::GetOnlineUsersList,
        &[("max_items", "none")],
    );
    assert!(out.contains("type='result'"), "{out}");
    assert!(
        out.contains("<value>alice@home.example</value><value>carol@home.example</value>"),
        "{out}"
    );
    // A filled form with the first request runs at once (no session kept).
    let out = w.command(
        &alice,
        &node(Command::GetOnlineUsersList),
        &submit(&[("max_items", "1")]),
    );
    assert!(out.contains("status='completed'"), "{out}");
    assert!(
        out.contains("alice@home.example") && !out.contains("carol@"),
        "{out}"
    );
}

#[test]
fn announce_reaches_every_session() {
    let w = World::new();
    let alice = w.bind("alice", "phone");
    let bob = w.bind("bob", "desk");
    let carol = w.bind("carol", "tv");
    let out = run(
        &w,
        &alice,
        Command::Announce,
        &[
            ("subject", "Power cut"),
            ("announcement", "The Pi restarts at 9"),
        ],
    );
    assert!(out.contains("Sent to 3 online session(s)."), "{out}");
    for s in [&bob, &carol, &alice] {
        let q = queued(s);
        assert!(
            q.iter().any(|m| m.contains("type='headline'")
                && m.contains("from='home.example'")
                && m.contains(&format!("to='{}'", s.jid))
                && m.contains("<subject>Power cut</subject>")
                && m.contains("<body>The Pi restarts at 9</body>")),
            "{q:?}"
        );
    }
    let out = run(&w, &alice, Command::Announce, &[("announcement", "  ")]);
    assert!(out.contains("<note type='error'>"), "{out}");
}

#[test]
fn cancel_bad_sessions_and_bad_actions() {
    let w = World::new();
    let alice = w.bind("alice", "phone");
    let laptop = w.bind("alice", "laptop");
    let add = node(Command::AddUser);
    let id = sessionid(&w.command(&alice, &add, ""));
    // Another resource of the same account may not continue it (§3.4).
    let out = w.command(
        &laptop,
        &format!("{add} sessionid='{id}' action='complete'"),
        &submit(&[]),
    );
    assert!(
        out.contains("<bad-request")
            && out.contains("<bad-sessionid xmlns='http://jabber.org/protocol/commands'/>"),
        "{out}"
    );
    let out = w.command(&alice, &format!("{add} sessionid='{id}' action='next'"), "");
    assert!(out.contains("<bad-action"), "{out}");
    let out = w.command(
        &alice,
        &format!("{add} sessionid='{id}' action='dance'"),
        "",
    );
    assert!(out.contains("<malformed-action"), "{out}");
    let out = w.command(
        &alice,
        &format!("{add} sessionid='{id}' action='complete'"),
        "",
    );
    assert!(out.contains("<bad-payload"), "{out}");
    let out = w.command(
        &alice,
        &format!("{add} sessionid='{id}' action='cancel'"),
        "",
    );
    assert!(
        out.contains("status='canceled'") && out.contains(&id),
        "{out}"
    );
    // Gone after the cancel.
    let out = w.command(
        &alice,
        &format!("{add} sessionid='{id}' action='cancel'"),
        "",
    );
    assert!(out.contains("<bad-sessionid"), "{out}");
    let out = w.command(
        &alice,
        "node='http://jabber.org/protocol/admin#frobnicate'",
        "",
    );
    assert!(out.contains("item-not-found"), "{out}");
    // A command is an iq set.
    let out = w.send(
        &alice,
        &format!(
            "<iq type='get' id='g' to='home.example'><command \
             xmlns='http://jabber.org/protocol/commands' {add}/></iq>"
        ),
    );
    assert!(out.contains("bad-request"), "{out}");
    // A form of another kind is not this command's.
    let out = w.command(
        &alice,
        &node(Command::GetOnlineUsersNum),
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>\
         <value>urn:example:other</value></field></x>",
    );
    assert!(
        out.contains("<bad-request") && out.contains("<bad-payload"),
        "{out}"
    );
    // A canceled form cancels too (XEP-0004 §3.1).
    let id = sessionid(&w.command(&alice, &add, ""));
    let out = w.command(
        &alice,
        &format!("{add} sessionid='{id}'"),
        "<x xmlns='jabber:x:data' type='cancel'/>",
    );
    assert!(out.contains("status='canceled'"), "{out}");
}

fn request(action: Action, sessionid: Option<&str>) -> Request {
    Request {
        node: Command::AddUser.node().into(),
        sessionid: sessionid.map(str::to_owned),
        action,
        form: None,
    }
}

#[test]
fn sessions_expire_and_are_bounded_per_account() {
    let s = Sessions::default();
    let phone = FullJid::parse("alice@home.example/phone").unwrap();
    let t0 = Instant::now();
    let Ok(Step::Show(id)) = s.step(
        &phone,
        Command::AddUser,
        &request(Action::Execute, None),
        t0,
    ) else {
        panic!("no session")
    };
    // Shown again while it lasts.
    let again = s.step(
        &phone,
        Command::AddUser,
        &request(Action::Execute, Some(&id)),
        t0,
    );
    assert_eq!(again, Ok(Step::Show(id.clone())));
    // Another command's session id is not this one's.
    let other = s.step(
        &phone,
        Command::Announce,
        &request(Action::Cancel, Some(&id)),
        t0,
    );
    assert_eq!(
        other.unwrap_err().app,
        Some(("bad-sessionid", super::NS_COMMANDS))
    );
    let late = t0 + SESSION_TTL + Duration::from_secs(1);
    let err = s
        .step(
            &phone,
            Command::AddUser,
            &request(Action::Cancel, Some(&id)),
            late,
        )
        .unwrap_err();
    assert_eq!(err.condition, StanzaCondition::NotAllowed);
    assert_eq!(err.app, Some(("session-expired", super::NS_COMMANDS)));
    assert_eq!(s.open(), 0);
    // A few per account: the oldest goes.
    let mut ids = Vec::new();
    for _ in 0..=MAX_SESSIONS_PER_ACCOUNT {
        match s.step(
            &phone,
            Command::AddUser,
            &request(Action::Execute, None),
            t0,
        ) {
            Ok(Step::Show(id)) => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(s.open(), MAX_SESSIONS_PER_ACCOUNT);
    let first = s.step(
        &phone,
        Command::AddUser,
        &request(Action::Cancel, Some(&ids[0])),
        t0,
    );
    assert_eq!(
        first.unwrap_err().app,
        Some(("bad-sessionid", super::NS_COMMANDS))
    );
    let last = s.step(
        &phone,
        Command::AddUser,
        &request(Action::Cancel, Some(&ids[4])),
        t0,
    );
    assert_eq!(last, Ok(Step::Canceled(ids[4].clone())));
    // Expired sessions make room for new ones.
    let _ = s.step(
        &phone,
        Command::AddUser,
        &request(Action::Execute, None),
        late,
    );
    assert_eq!(s.open(), 1);
    // Cancel or complete without a session is no session.
    for a in [Action::Cancel, Action::Complete] {
        let e = s
            .step(&phone, Command::AddUser, &request(a, None), t0)
            .unwrap_err();
        assert_eq!(e.app, Some(("bad-sessionid", super::NS_COMMANDS)));
    }
}

#[test]
fn registered_users_and_ending_sessions() {
    let w = World::new();
    let alice = w.bind("alice", "phone");
    let bob = w.bind("bob", "desk");
    let tablet = w.bind("bob", "tablet");
    let carol = w.bind("carol", "tv");
    let out = w.command(&alice, &node(Command::GetRegisteredUsersNum), "");
    assert!(
        out.contains("status='completed'")
            && out.contains("var='registeredusersnum'")
            && out.contains("<value>3</value>"),
        "{out}"
    );
    let out = run(
        &w,
        &alice,
        Command::GetRegisteredUsersList,
        &[("max_items", "none")],
    );
    assert!(
        out.contains(
            "<value>alice@home.example</value><value>bob@home.example</value>\
             <value>carol@home.example</value>"
        ),
        "{out}"
    );
    // A full JID ends that session only.
    let out = run(
        &w,
        &alice,
        Command::EndUserSession,
        &[("accountjids", "bob@home.example/tablet")],
    );
    assert!(
        out.contains("<note type='info'>Ended 1 session(s).</note>"),
        "{out}"
    );
    let q = queued(&tablet);
    assert!(
        q.iter()
            .any(|s| s.starts_with("CLOSE") && s.contains("policy-violation")),
        "{q:?}"
    );
    assert!(queued(&bob).is_empty());
    // A bare JID ends them all; the account stays.
    let out = run(
        &w,
        &alice,
        Command::EndUserSession,
        &[("accountjids", "carol")],
    );
    assert!(out.contains("Ended 1 session(s)."), "{out}");
    assert!(queued(&carol).iter().any(|s| s.starts_with("CLOSE")));
    assert_eq!(w.router.online_users(), ["alice", "bob"]);
    assert!(w.storage.account_exists("carol").unwrap());
    let out = run(
        &w,
        &alice,
        Command::EndUserSession,
        &[("accountjids", "carol")],
    );
    assert!(
        out.contains("<note type='error'>Ended 0 session(s). carol is not online.</note>"),
        "{out}"
    );
}

/// An admin may delete their own account: the answer comes first, then the stream ends.
#[test]
fn an_admin_deleting_themself_gets_the_answer_then_is_logged_out() {
    let w = World::new();
    let alice = w.bind("alice", "phone");
    let out = run(
        &w,
        &alice,
        Command::DeleteUser,
        &[("accountjids", "alice@home.example")],
    );
    assert!(out.contains("Deleted alice@home.example."), "{out}");
    assert!(queued(&alice).iter().any(|s| s.starts_with("CLOSE")));
    assert!(!w.storage.account_exists("alice").unwrap());
}
