//! One XEP-0045 room as a pure state machine: its configuration (§10.2), affiliations
//! (§5.2), occupants with their roles (§5.1), subject and history. Every stanza the room
//! gets is answered with the stanzas it sends ([`Out`]) and what must be stored
//! ([`Persist`]); nothing here touches a socket or the database, so the rules of §5's
//! tables are unit-tested below.

use std::collections::{BTreeMap, VecDeque};

use crate::features::forms::{Field, Form, FormType, NS_DATA, Submitted};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::stanza::{StanzaCondition, StanzaError};
use crate::xml::Element;

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const NS_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
pub const NS_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_VCARD: &str = "vcard-temp";
/// XEP-0421 occupant identifiers.
pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// §8.6 voice requests and their approval.
pub const NS_REQUEST: &str = "http://jabber.org/protocol/muc#request";
/// XEP-0410 §6: the room answers self-pings itself.
pub const NS_SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";

/// Longest nickname accepted, in bytes (the resourcepart allows 1023; a nickname is read
/// by people).
pub const MAX_NICK_BYTES: usize = 128;
/// Longest subject kept, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 1024;
/// Longest room name or description, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Affiliations a room keeps (members, admins, owners, outcasts).
pub const MAX_AFFILIATIONS: usize = 1000;

/// §5.1 roles, ordered by privilege.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// §5.2 affiliations, ordered by privilege.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// Who may see occupants' real JIDs (§10.2 `muc#roomconfig_whois`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whois {
    /// Semi-anonymous (§4.1): moderators only.
    Moderators,
    /// Non-anonymous: every occupant.
    Anyone,
}

/// A room's configuration (§10.2, the `muc#roomconfig` form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub name: String,
    pub description: String,
    /// Kept when empty, and across restarts (§4.2 persistent room).
    pub persistent: bool,
    /// Listed in the service's disco#items (§4.2 public room).
    pub public: bool,
    pub members_only: bool,
    /// `None`: not password-protected.
    pub password: Option<String>,
    /// Only participants and moderators may speak (§4.2 moderated room).
    pub moderated: bool,
    pub whois: Whois,
    /// Participants (not only moderators) may change the subject (§8.1).
    pub change_subject: bool,
    /// Occupants (not only admins) may invite others (§7.8).
    pub allow_invites: bool,
    pub max_users: usize,
    /// Messages kept for history (§7.2.15).
    pub history_length: usize,
}

impl Config {
    /// A new room's configuration, within the service's limits.
    pub fn new_room(limits: &Limits) -> Config {
        Config {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            password: None,
            moderated: false,
            whois: Whois::Moderators,
            change_subject: false,
            allow_invites: false,
            max_users: limits.max_occupants,
            history_length: limits.history_length.min(20),
        }
    }

    /// Stored as `key=value` lines (values escape newlines).
    pub fn to_text(&self) -> String {
        let b = |v: bool| if v { "1" } else { "0" };
        let esc = |s: &str| s.replace('\\', "\\\\").replace('\n', "\\n");
        let mut s = String::new();
        s.push_str(&format!("name={}\n", esc(&self.name)));
        s.push_str(&format!("description={}\n", esc(&self.description)));
        s.push_str(&format!("persistent={}\n", b(self.persistent)));
        s.push_str(&format!("public={}\n", b(self.public)));
        s.push_str(&format!("members_only={}\n", b(self.members_only)));
        if let Some(p) = &self.password {
            s.push_str(&format!("password={}\n", esc(p)));
        }
        s.push_str(&format!("moderated={}\n", b(self.moderated)));
        s.push_str(&format!(
            "whois={}\n",
            match self.whois {
                Whois::Anyone => "anyone",
                Whois::Moderators => "moderators",
            }
        ));
        s.push_str(&format!("change_subject={}\n", b(self.change_subject)));
        s.push_str(&format!("allow_invites={}\n", b(self.allow_invites)));
        s.push_str(&format!("max_users={}\n", self.max_users));
        s.push_str(&format!("history_length={}\n", self.history_length));
        s
    }

    /// The inverse of [`Config::to_text`]; unknown or broken lines keep the defaults.
    pub fn from_text(text: &str, limits: &Limits) -> Config {
        let mut c = Config::new_room(limits);
        c.persistent = true;
        let unesc = |s: &str| {
            let mut out = String::new();
            let mut it = s.chars();
            while let Some(ch) = it.next() {
                if ch == '\\' {
                    match it.next() {
                        Some('n') => out.push('\n'),
                        Some(o) => out.push(o),
                        None => {}
                    }
                } else {
                    out.push(ch);
                }
            }
            out
        };
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let flag = v == "1";
            match k {
                "name" => c.name = unesc(v),
                "description" => c.description = unesc(v),
                "persistent" => c.persistent = flag,
                "public" => c.public = flag,
                "members_only" => c.members_only = flag,
                "password" => c.password = Some(unesc(v)),
                "moderated" => c.moderated = flag,
                "whois" => {
                    c.whois = if v == "anyone" {
                        Whois::Anyone
                    } else {
                        Whois::Moderators
                    }
                }
                "change_subject" => c.change_subject = flag,
                "allow_invites" => c.allow_invites = flag,
                "max_users" => {
                    if let Ok(n) = v.parse::<usize>() {
                        c.max_users = n.min(limits.max_occupants);
                    }
                }
                "history_length" => {
                    if let Ok(n) = v.parse::<usize>() {
                        c.history_length = n.min(limits.history_length);
                    }
                }
                _ => {}
            }
        }
        c
    }
}

/// The service's bounds every room lives within (`[muc]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Occupants per room, the most `muc#roomconfig_maxusers` may be.
    pub max_occupants: usize,
    /// Messages of history per room, the most `muc#roomconfig_historylength` may be.
    pub history_length: usize,
}

/// One message of the room's history (§7.2.15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryItem {
    /// Its XEP-0359 stanza-id (`by` the room).
    pub id: String,
    /// When the room got it, Unix seconds.
    pub at: i64,
    /// Who sent it (the room/nick), for archive queries `with` an occupant.
    pub from: Box<str>,
    /// The message as broadcast, without `to`, serialized: a message kept as text takes
    /// a third of its element tree's memory, and is only parsed again when replayed.
    pub xml: Box<str>,
}

impl HistoryItem {
    pub fn new(id: String, at: i64, el: &Element) -> HistoryItem {
        HistoryItem {
            id,
            at,
            from: el.attr("from").unwrap_or_default().into(),
            xml: el.to_xml_in(ns::CLIENT).into(),
        }
    }

    /// The message again, to send.
    pub fn element(&self) -> Option<Element> {
        crate::xml::parse_fragment(&self.xml)
    }
}

/// One occupant (§5.1): a nickname held by one person, from one or more of their
/// sessions (multi-session nicks, as Prosody allows).
#[derive(Clone, Debug)]
pub struct Occupant {
    pub nick: String,
    /// The real full JIDs joined under this nick (at least one).
    pub sessions: Vec<FullJid>,
    pub role: Role,
    /// The last presence it sent, its `<show/>`, `<status/>` and other children, without
    /// the MUC `<x/>`.
    pub presence: Element,
}

impl Occupant {
    pub fn bare(&self) -> Option<BareJid> {
        self.sessions.first().map(FullJid::bare)
    }
}

/// A stanza the room sends: `el` carries `from` and `to` already.
#[derive(Clone, Debug)]
pub struct Out {
    pub from: Jid,
    pub to: Jid,
    pub el: Element,
}

/// What the room's changes need stored (persistent rooms only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist {
    /// The room's configuration, subject and affiliations, as they are now.
    Room,
    /// A message for the history, and how many the room keeps.
    History(HistoryItem, usize),
    /// The room is gone (§10.9).
    Destroyed,
    /// The room was made temporary: nothing of it stays stored.
    Unstored,
    /// A message of the history was replaced (a XEP-0425 tombstone).
    Replaced(HistoryItem),
}

/// What handling a stanza gave.
#[derive(Debug, Default)]
pub struct Effects {
    pub out: Vec<Out>,
    pub persist: Vec<Persist>,
}

/// A join's `<history/>` request (§7.2.15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryRequest {
    pub max_stanzas: Option<usize>,
    pub max_chars: Option<usize>,
    pub seconds: Option<i64>,
    pub since: Option<i64>,
}

impl HistoryRequest {
    pub fn parse(x: Option<&Element>) -> HistoryRequest {
        let Some(h) = x.and_then(|x| x.get_child("history", NS_MUC)) else {
            return HistoryRequest::default();
        };
        let num = |k: &str| h.attr(k).and_then(|v| v.trim().parse::<usize>().ok());
        HistoryRequest {
            max_stanzas: num("maxstanzas"),
            max_chars: num("maxchars"),
            seconds: h.attr("seconds").and_then(|v| v.trim().parse::<i64>().ok()),
            since: h
                .attr("since")
                .and_then(crate::features::mam::query::parse_datetime),
        }
    }
}

/// A room.
#[derive(Clone, Debug)]
pub struct Room {
    pub jid: BareJid,
    pub config: Config,
    /// §10.1.1: a new room is locked until its owner configures it or accepts the
    /// defaults; nobody else may enter.
    pub locked: bool,
    /// Bare JID (normalized) → affiliation; `none` is not kept.
    pub affiliations: BTreeMap<String, Affiliation>,
    pub occupants: Vec<Occupant>,
    /// (the nick or JID that set it, the text).
    pub subject: Option<(String, String)>,
    pub history: VecDeque<HistoryItem>,
    /// The room's vCard (XEP-0054), set by an owner.
    pub vcard: Option<Element>,
    /// The last stanza-id given ([`Room::next_id`]).
    pub counter: u64,
    /// Iqs relayed between occupants awaiting their answer (bounded, oldest dropped).
    pub pending_iqs: VecDeque<PendingIq>,
    /// The service's secret that XEP-0421 occupant ids are derived from (the same across
    /// restarts, so an id stays the person's).
    pub secret: std::sync::Arc<[u8]>,
}

/// An iq one occupant sent another through the room, awaiting its answer.
#[derive(Clone, Debug)]
pub struct PendingIq {
    /// The id the room gave it.
    pub id: String,
    /// Who asked, and the id it used.
    pub requester: FullJid,
    pub requester_id: String,
    /// The session asked (its answer must come from there).
    pub target: FullJid,
    /// The nick asked (the answer comes from it).
    pub target_nick: String,
}

/// Relayed iqs a room waits on at once.
const MAX_PENDING_IQS: usize = 64;

fn err(cond: StanzaCondition) -> StanzaError {
    StanzaError::new(cond)
}

fn bool_field(v: Option<&str>) -> Result<Option<bool>, StanzaError> {
    match v {
        None => Ok(None),
        Some("1") | Some("true") => Ok(Some(true)),
        Some("0") | Some("false") => Ok(Some(false)),
        Some(_) => Err(err(StanzaCondition::NotAcceptable).with_text("a boolean field is 0 or 1")),
    }
}

/// The `<presence/>` or `<message/>` `from` the room or an occupant to `to`.
fn stanza(name: &str, from: &Jid, to: &Jid) -> Element {
    Element::new(name, ns::CLIENT)
        .with_attr("from", from.as_str())
        .with_attr("to", to.as_str())
}

/// The error reply to `request`; a refused join carries the `<x/>` it came with
/// (§7.2.6's examples, and what clients match a join's error by), without its password.
pub fn error_reply(request: &Element, e: StanzaError) -> Option<Element> {
    let mut el = e.reply_to(request)?;
    if request.name() == "presence" && request.get_child("x", NS_MUC).is_some() {
        el.insert_child(0, Element::new("x", NS_MUC));
    }
    Some(el)
}

/// Whether an error from an occupant's address says the occupant is not there any more
/// (its session or server gone), as opposed to a passing condition (a full queue:
/// `resource-constraint`) that must not cost it its place in the room.
fn is_gone(el: &Element) -> bool {
    let cond = el
        .get_child("error", ns::CLIENT)
        .and_then(|e| {
            e.children()
                .find(|c| c.ns() == ns::STANZA_ERRORS && c.name() != "text")
        })
        .map(|c| c.name().to_owned());
    matches!(
        cond.as_deref(),
        Some(
            "service-unavailable"
                | "recipient-unavailable"
                | "item-not-found"
                | "remote-server-not-found"
                | "remote-server-timeout"
                | "gone"
                | "redirect"
                | "not-authorized"
        )
    )
}

fn status(code: u16) -> Element {
    Element::new("status", NS_USER).with_attr("code", code.to_string())
}

impl Room {
    pub fn new(jid: BareJid, owner: &BareJid, limits: &Limits) -> Room {
        let mut affiliations = BTreeMap::new();
        affiliations.insert(owner.as_str().to_owned(), Affiliation::Owner);
        Room {
            jid,
            config: Config::new_room(limits),
            locked: true,
            affiliations,
            occupants: Vec::new(),
            subject: None,
            history: VecDeque::new(),
            vcard: None,
            counter: 0,
            pending_iqs: VecDeque::new(),
            secret: std::sync::Arc::from(&[][..]),
        }
    }

    pub fn affiliation(&self, jid: &BareJid) -> Affiliation {
        self.affiliations
            .get(jid.as_str())
            .copied()
            .unwrap_or(Affiliation::None)
    }

    fn occupant_jid(&self, nick: &str) -> Jid {
        // The nick came from a valid resourcepart, so this does not fail; were it to, the
        // room's own JID is a harmless stand-in.
        self.jid
            .with_resource(nick)
            .map(Jid::from)
            .unwrap_or_else(|_| self.room_jid())
    }

    fn room_jid(&self) -> Jid {
        Jid::from(self.jid.clone())
    }

    /// The occupant a real full JID is joined as.
    pub fn occupant_of(&self, real: &FullJid) -> Option<usize> {
        self.occupants
            .iter()
            .position(|o| o.sessions.contains(real))
    }

    pub fn occupant_by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| o.nick == nick)
    }

    /// The role an affiliation gets on entering (§5.1.2's defaults).
    fn default_role(&self, aff: Affiliation) -> Role {
        match aff {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// A XEP-0359 stanza-id: microseconds since the epoch, above the last one given, so
    /// ids grow in time (XEP-0313 paging compares them) and stay unique across restarts.
    pub(super) fn next_id(&mut self, now: i64) -> String {
        let id = now.saturating_mul(1_000_000).max(
            i64::try_from(self.counter)
                .unwrap_or(i64::MAX)
                .saturating_add(1),
        );
        self.counter = u64::try_from(id).unwrap_or(0);
        id.to_string()
    }

    /// XEP-0421 §3: the occupant's stable id in this room, HMAC-SHA-256 of the room's and
    /// the person's bare JIDs under the service's secret: the same across nick changes,
    /// devices and restarts, and telling nothing about the real JID.
    pub fn occupant_id(&self, o: &Occupant) -> Element {
        use base64::Engine as _;
        use hmac::{Hmac, KeyInit, Mac};
        let real = o.bare().map(|b| b.as_str().to_owned()).unwrap_or_default();
        let id = match <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.secret) {
            Ok(mut mac) => {
                mac.update(self.jid.as_str().as_bytes());
                mac.update(b"\0");
                mac.update(real.as_bytes());
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        };
        Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", id)
    }

    /// The `<x xmlns=muc#user>` of presence about occupant `i`, as `viewer` sees it.
    fn user_x(&self, o: &Occupant, viewer_is_moderator: bool, codes: &[u16]) -> Element {
        self.user_x_with(o, viewer_is_moderator, codes, &|_| {})
    }

    /// [`Room::user_x`] with `item_extra` adding to the `<item/>` (303's new nick, a
    /// kick's actor and reason).
    fn user_x_with(
        &self,
        o: &Occupant,
        viewer_is_moderator: bool,
        codes: &[u16],
        item_extra: &dyn Fn(&mut Element),
    ) -> Element {
        let aff = o
            .bare()
            .map(|b| self.affiliation(&b))
            .unwrap_or(Affiliation::None);
        let mut item = Element::new("item", NS_USER)
            .with_attr("affiliation", aff.as_str())
            .with_attr("role", o.role.as_str());
        if (self.config.whois == Whois::Anyone || viewer_is_moderator)
            && let Some(real) = o.sessions.first()
        {
            item.set_attr("jid", real.as_str());
        }
        item_extra(&mut item);
        let mut x = Element::new("x", NS_USER).with_child(item);
        for c in codes {
            x.push_child(status(*c));
        }
        x
    }

    /// Presence of occupant `o` (available, or `unavailable` with `extra` codes) to every
    /// session of every occupant; the occupant's own sessions get 110 too.
    fn broadcast_presence(
        &self,
        o: &Occupant,
        unavailable: bool,
        codes: &[u16],
        item_extra: &dyn Fn(&mut Element),
        fx: &mut Effects,
    ) {
        let from = self.occupant_jid(&o.nick);
        let mut targets: Vec<(&FullJid, bool, bool)> = Vec::new();
        for other in &self.occupants {
            let is_self = other.nick == o.nick;
            for s in &other.sessions {
                targets.push((s, other.role == Role::Moderator, is_self));
            }
        }
        // The occupant itself when it already left the list (leave, kick).
        if !self.occupants.iter().any(|x| x.nick == o.nick) {
            for s in &o.sessions {
                targets.push((s, o.role == Role::Moderator, true));
            }
        }
        for (to, is_mod, is_self) in targets {
            let to = Jid::from(to.clone());
            let mut el = if unavailable {
                stanza("presence", &from, &to).with_attr("type", "unavailable")
            } else {
                let mut p = o.presence.clone();
                p.set_attr("from", from.as_str());
                p.set_attr("to", to.as_str());
                p
            };
            let mut all: Vec<u16> = codes.to_vec();
            if is_self {
                all.push(110);
            }
            let x = self.user_x_with(o, is_mod || is_self, &all, item_extra);
            el.push_child(x);
            el.push_child(self.occupant_id(o));
            fx.out.push(Out {
                from: from.clone(),
                to,
                el,
            });
        }
    }

    fn error_out(&self, to: &Jid, request: &Element, e: StanzaError) -> Option<Out> {
        let el = error_reply(request, e)?;
        let from = el
            .attr("from")
            .and_then(|f| Jid::parse(f).ok())
            .unwrap_or_else(|| self.room_jid());
        Some(Out {
            from,
            to: to.clone(),
            el,
        })
    }

    /// `fx` with the error reply to `request` added: what a refused request returns.
    fn refused(&self, mut fx: Effects, to: &Jid, request: &Element, e: StanzaError) -> Effects {
        fx.out.extend(self.error_out(to, request, e));
        fx
    }

    /// Presence from `real` to `room/nick` (§7.2 join, §7.6 nick change, §7.14 leave,
    /// presence updates). `created` says the room was made by this presence (§10.1).
    pub fn presence(
        &mut self,
        real: &FullJid,
        nick: &str,
        el: &Element,
        now: i64,
        created: bool,
    ) -> Effects {
        let mut fx = Effects::default();
        let real_jid = Jid::from(real.clone());
        let ty = el.attr("type");
        if ty == Some("error") {
            // The occupant's client or server refused what the room sent: it is gone.
            if is_gone(el)
                && let Some(i) = self.occupant_of(real)
            {
                self.remove_session(i, real, &[], &mut fx);
            }
            return fx;
        }
        if ty == Some("unavailable") {
            if let Some(i) = self.occupant_of(real) {
                self.remove_session(i, real, &[], &mut fx);
            }
            return fx;
        }
        if ty.is_some() {
            // Subscriptions and probes mean nothing to a room.
            return fx;
        }
        if nick.len() > MAX_NICK_BYTES {
            return self.refused(
                fx,
                &real_jid,
                el,
                err(StanzaCondition::NotAcceptable).with_text("that nickname is too long"),
            );
        }
        let mut presence = Element::new("presence", ns::CLIENT);
        for c in el.children() {
            // XEP-0421 §4: an occupant-id is the room's to give, never the sender's.
            if c.ns() == NS_MUC || c.ns() == NS_USER || c.ns() == NS_OCCUPANT_ID {
                continue;
            }
            presence.push_child(c.clone());
        }
        if let Some(i) = self.occupant_of(real) {
            if self.occupants[i].nick == nick {
                // §7.7: a presence update, broadcast as it is.
                self.occupants[i].presence = presence;
                let o = self.occupants[i].clone();
                self.broadcast_presence(&o, false, &[], &|_| {}, &mut fx);
                return fx;
            }
            return self.change_nick(i, real, nick, el, presence);
        }
        self.join(real, nick, el, presence, now, created)
    }

    fn join(
        &mut self,
        real: &FullJid,
        nick: &str,
        el: &Element,
        presence: Element,
        now: i64,
        created: bool,
    ) -> Effects {
        let mut fx = Effects::default();
        let real_jid = Jid::from(real.clone());
        let bare = real.bare();
        let aff = self.affiliation(&bare);
        let x = el.get_child("x", NS_MUC);
        let refuse = |room: &Room, fx: &mut Effects, e: StanzaError| {
            fx.out.extend(room.error_out(&real_jid, el, e));
        };
        // §10.1.1: only the owner enters a locked room.
        if self.locked && aff != Affiliation::Owner {
            refuse(
                self,
                &mut fx,
                err(StanzaCondition::ItemNotFound).with_text("the room is not configured yet"),
            );
            return fx;
        }
        // §7.2.8
        if aff == Affiliation::Outcast {
            refuse(
                self,
                &mut fx,
                err(StanzaCondition::Forbidden).with_text("you are banned from this room"),
            );
            return fx;
        }
        // §7.2.6
        if self.config.members_only && aff < Affiliation::Member {
            refuse(
                self,
                &mut fx,
                err(StanzaCondition::RegistrationRequired).with_text("this room is for members"),
            );
            return fx;
        }
        // §7.2.9: another person's nick; the same person may join it from another device.
        let existing = self.occupant_by_nick(nick);
        if let Some(i) = existing
            && self.occupants[i].bare().as_ref() != Some(&bare)
        {
            refuse(
                self,
                &mut fx,
                err(StanzaCondition::Conflict).with_text("that nickname is in use"),
            );
            return fx;
        }
        // Nicks reserved by members (affiliation with a nick) are not kept: no §7.2.9
        // check beyond occupants.
        // §7.2.10
        if existing.is_none()
            && self.occupants.len() >= self.config.max_users
            && aff < Affiliation::Admin
        {
            refuse(
                self,
                &mut fx,
                err(StanzaCondition::ServiceUnavailable).with_text("the room is full"),
            );
            return fx;
        }
        // §7.2.5
        if let Some(pw) = &self.config.password
            && aff != Affiliation::Owner
        {
            let given = x
                .and_then(|x| x.get_child("password", NS_MUC))
                .map(|p| p.text());
            if given.as_deref() != Some(pw.as_str()) {
                refuse(
                    self,
                    &mut fx,
                    err(StanzaCondition::NotAuthorized).with_text("a password is needed"),
                );
                return fx;
            }
        }
        let history = HistoryRequest::parse(x);
        let i = match existing {
            Some(i) => {
                self.occupants[i].sessions.push(real.clone());
                self.occupants[i].presence = presence;
                i
            }
            None => {
                self.occupants.push(Occupant {
                    nick: nick.to_owned(),
                    sessions: vec![real.clone()],
                    role: self.default_role(aff),
                    presence,
                });
                self.occupants.len() - 1
            }
        };
        let is_mod = self.occupants[i].role == Role::Moderator;
        // §7.2.3: the others' presence first, to the new session only.
        for (j, o) in self.occupants.iter().enumerate() {
            if j == i {
                continue;
            }
            let from = self.occupant_jid(&o.nick);
            let mut p = o.presence.clone();
            p.set_attr("from", from.as_str());
            p.set_attr("to", real.as_str());
            p.push_child(self.user_x(o, is_mod, &[]));
            p.push_child(self.occupant_id(o));
            fx.out.push(Out {
                from,
                to: real_jid.clone(),
                el: p,
            });
        }
        // Then the new occupant's presence to everyone (its own with 110, 100, 201).
        let mut codes = Vec::new();
        if self.config.whois == Whois::Anyone {
            codes.push(100);
        }
        if created {
            codes.push(201);
        }
        let o = self.occupants[i].clone();
        let from = self.occupant_jid(&o.nick);
        for other in &self.occupants {
            for s in &other.sessions {
                let is_self = s == real;
                let to = Jid::from(s.clone());
                let mut p = o.presence.clone();
                p.set_attr("from", from.as_str());
                p.set_attr("to", to.as_str());
                let mut c: Vec<u16> = Vec::new();
                if is_self {
                    c.extend(&codes);
                    c.push(110);
                }
                p.push_child(self.user_x(&o, other.role == Role::Moderator || is_self, &c));
                p.push_child(self.occupant_id(&o));
                fx.out.push(Out {
                    from: from.clone(),
                    to,
                    el: p,
                });
            }
        }
        // §7.2.15: the history, then the subject.
        for h in self.select_history(&history, now) {
            let Some(mut m) = h.element() else { continue };
            m.set_attr("to", real.as_str());
            m.push_child(
                Element::new("delay", ns::DELAY)
                    .with_attr("from", self.jid.as_str())
                    .with_attr(
                        "stamp",
                        crate::features::time::xep0082_utc(u64::try_from(h.at).unwrap_or(0)),
                    ),
            );
            fx.out.push(Out {
                from: m
                    .attr("from")
                    .and_then(|f| Jid::parse(f).ok())
                    .unwrap_or_else(|| self.room_jid()),
                to: real_jid.clone(),
                el: m,
            });
        }
        let (subject_from, subject) = match &self.subject {
            Some((by, text)) => (self.occupant_jid(by), text.clone()),
            None => (self.room_jid(), String::new()),
        };
        let mut s = stanza("message", &subject_from, &real_jid).with_attr("type", "groupchat");
        s.set_attr("id", self.next_id(now));
        s.push_child(Element::new("subject", ns::CLIENT).with_text(subject));
        fx.out.push(Out {
            from: subject_from,
            to: real_jid,
            el: s,
        });
        fx
    }

    /// §7.2.15: the history a join asked for, oldest first.
    fn select_history(&self, req: &HistoryRequest, now: i64) -> Vec<&HistoryItem> {
        let mut picked: Vec<&HistoryItem> = Vec::new();
        let mut chars = 0usize;
        let max_stanzas = req
            .max_stanzas
            .unwrap_or(self.config.history_length)
            .min(self.config.history_length);
        for h in self.history.iter().rev() {
            if picked.len() >= max_stanzas {
                break;
            }
            if let Some(s) = req.seconds
                && h.at < now.saturating_sub(s)
            {
                break;
            }
            if let Some(since) = req.since
                && h.at < since
            {
                break;
            }
            if let Some(max) = req.max_chars {
                chars += h.xml.len();
                if chars > max {
                    break;
                }
            }
            picked.push(h);
        }
        picked.reverse();
        picked
    }

    /// §7.6: occupant `i` (session `real`) takes `nick`.
    fn change_nick(
        &mut self,
        i: usize,
        real: &FullJid,
        nick: &str,
        el: &Element,
        presence: Element,
    ) -> Effects {
        let mut fx = Effects::default();
        let real_jid = Jid::from(real.clone());
        if self.occupant_by_nick(nick).is_some() {
            return self.refused(
                fx,
                &real_jid,
                el,
                err(StanzaCondition::Conflict).with_text("that nickname is in use"),
            );
        }
        let old = self.occupants[i].clone();
        // 303 with the new nick, as unavailable from the old one.
        let new_nick = nick.to_owned();
        self.broadcast_presence(
            &old,
            true,
            &[303],
            &|item| item.set_attr("nick", new_nick.clone()),
            &mut fx,
        );
        self.occupants[i].nick = nick.to_owned();
        self.occupants[i].presence = presence;
        let o = self.occupants[i].clone();
        self.broadcast_presence(&o, false, &[], &|_| {}, &mut fx);
        fx
    }

    /// A session leaves; the occupant goes with its last session (§7.14).
    fn remove_session(&mut self, i: usize, real: &FullJid, codes: &[u16], fx: &mut Effects) {
        let Some(o) = self.occupants.get_mut(i) else {
            return;
        };
        if o.sessions.len() > 1 {
            o.sessions.retain(|s| s != real);
            // Its other devices stay; this one hears it left.
            let from = self.occupant_jid(&self.occupants[i].nick);
            let to = Jid::from(real.clone());
            let mut p = stanza("presence", &from, &to).with_attr("type", "unavailable");
            p.push_child(self.user_x(&self.occupants[i], true, &[110]));
            fx.out.push(Out { from, to, el: p });
            return;
        }
        let mut o = self.occupants.remove(i);
        o.role = Role::None;
        self.broadcast_presence(&o, true, codes, &|_| {}, fx);
    }

    /// Removes occupant `i` altogether (kick, ban, §9.x affiliation changes), telling
    /// everyone with `codes` and the actor and reason in the item.
    fn remove_occupant(
        &mut self,
        i: usize,
        codes: &[u16],
        actor: Option<&str>,
        reason: Option<&str>,
        fx: &mut Effects,
    ) {
        if i >= self.occupants.len() {
            return;
        }
        let mut o = self.occupants.remove(i);
        o.role = Role::None;
        let actor = actor.map(str::to_owned);
        let reason = reason.map(str::to_owned);
        self.broadcast_presence(
            &o,
            true,
            codes,
            &|item| {
                if let Some(a) = &actor {
                    item.push_child(Element::new("actor", NS_USER).with_attr("nick", a.clone()));
                }
                if let Some(r) = &reason {
                    item.push_child(Element::new("reason", NS_USER).with_text(r.clone()));
                }
            },
            fx,
        );
    }

    /// A message from `real` to the room's bare JID (§7.4 groupchat, §8.1 subject,
    /// §7.8.2 invitations and declines).
    pub fn message_to_room(&mut self, real: &FullJid, el: &Element, now: i64) -> Effects {
        let mut fx = Effects::default();
        let real_jid = Jid::from(real.clone());
        let ty = el.attr("type");
        if ty == Some("error") {
            if is_gone(el)
                && let Some(i) = self.occupant_of(real)
            {
                self.remove_session(i, real, &[], &mut fx);
            }
            return fx;
        }
        if ty != Some("groupchat") {
            if let Some(x) = el.get_child("x", NS_USER) {
                return self.invite_or_decline(real, x, el);
            }
            if let Some(form) = el
                .get_child("x", NS_DATA)
                .and_then(|x| Submitted::parse(x).ok())
                .filter(|f| f.form_type() == Some(NS_REQUEST))
            {
                return self.voice_request(real, el, &form);
            }
            return self.refused(
                fx,
                &real_jid,
                el,
                err(StanzaCondition::BadRequest)
                    .with_text("messages to a room are of type groupchat"),
            );
        }
        // §7.4: only occupants speak, visitors not in a moderated room.
        let Some(i) = self.occupant_of(real) else {
            return self.refused(
                fx,
                &real_jid,
                el,
                err(StanzaCondition::NotAcceptable).with_text("only occupants may speak here"),
            );
        };
        let role = self.occupants[i].role;
        let has_body = el.get_child("body", ns::CLIENT).is_some();
        if let Some(subject) = el.get_child("subject", ns::CLIENT)
            && !has_body
        {
            // §8.1
            let allowed = role == Role::Moderator
                || (self.config.change_subject && role >= Role::Participant);
            if !allowed {
                return self.refused(
                    fx,
                    &real_jid,
                    el,
                    err(StanzaCondition::Forbidden)
                        .with_text("you may not change the subject of this room"),
                );
            }
            let text = subject.text();
            if text.len() > MAX_SUBJECT_BYTES {
                return self.refused(
                    fx,
                    &real_jid,
                    el,
                    err(StanzaCondition::NotAcceptable).with_text("the subject is too long"),
                );
            }
            let nick = self.occupants[i].nick.clone();
            self.subject = Some((nick, text));
            self.broadcast_message(i, el, now, false, &mut fx);
            if self.config.persistent {
                fx.persist.push(Persist::Room);
            }
            return fx;
        }
        if role < Role::Participant {
            return self.refused(
                fx,
                &real_jid,
                el,
                err(StanzaCondition::Forbidden).with_text("visitors may not speak here"),
            );
        }
        self.broadcast_message(i, el, now, has_body, &mut fx);
        fx
    }

    /// Sends `el` from occupant `i` to every occupant, with the room's stanza-id
    /// (XEP-0359 §3), and keeps it as history when `keep`.
    fn broadcast_message(
        &mut self,
        i: usize,
        el: &Element,
        now: i64,
        keep: bool,
        fx: &mut Effects,
    ) {
        let from = self.occupant_jid(&self.occupants[i].nick);
        let id = self.next_id(now);
        let mut m = Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", from.as_str());
        if let Some(mid) = el.attr("id") {
            m.set_attr("id", mid);
        }
        if let Some(lang) = el.attr("xml:lang") {
            m.set_attr("xml:lang", lang);
        }
        for c in el.children() {
            // XEP-0359 §5: a stanza-id claiming to be by the room is not the sender's to set.
            if c.is("stanza-id", NS_SID) && c.attr("by") == Some(self.jid.as_str()) {
                continue;
            }
            if c.ns() == NS_USER || c.ns() == NS_OCCUPANT_ID {
                continue;
            }
            m.push_child(c.clone());
        }
        let oid = self.occupant_id(&self.occupants[i]);
        m.push_child(oid);
        m.push_child(
            Element::new("stanza-id", NS_SID)
                .with_attr("id", id.clone())
                .with_attr("by", self.jid.as_str()),
        );
        for o in &self.occupants {
            for s in &o.sessions {
                let to = Jid::from(s.clone());
                let mut copy = m.clone();
                copy.set_attr("to", to.as_str());
                fx.out.push(Out {
                    from: from.clone(),
                    to,
                    el: copy,
                });
            }
        }
        if keep && self.config.history_length > 0 {
            let item = HistoryItem::new(id, now, &m);
            self.history.push_back(item.clone());
            while self.history.len() > self.config.history_length {
                self.history.pop_front();
            }
            if self.config.persistent {
                fx.persist
                    .push(Persist::History(item, self.config.history_length));
            }
        }
    }

    /// §8.6: a visitor asks for voice (the moderators get the approval form), or a
    /// moderator sends the form back approved (the visitor becomes a participant).
    fn voice_request(&mut self, real: &FullJid, el: &Element, form: &Submitted) -> Effects {
        let mut fx = Effects::default();
        let real_jid = Jid::from(real.clone());
        let Some(i) = self.occupant_of(real) else {
            return self.refused(
                fx,
                &real_jid,
                el,
                err(StanzaCondition::NotAcceptable).with_text("only occupants ask for voice"),
            );
        };
        let role = self.occupants[i].role;
        if role == Role::Moderator {
            // An approval (or a refusal, ignored).
            if form
                .value("muc#request_allow")
                .is_some_and(|v| v == "1" || v == "true")
                && let Some(t) = form
                    .value("muc#roomnick")
                    .and_then(|n| self.occupant_by_nick(n))
                && self.occupants[t].role == Role::Visitor
            {
                self.occupants[t].role = Role::Participant;
                let o = self.occupants[t].clone();
                self.broadcast_presence(&o, false, &[], &|_| {}, &mut fx);
            }
            return fx;
        }
        if role != Role::Visitor {
            // It has voice already: nothing to ask.
            return fx;
        }
        let nick = self.occupants[i].nick.clone();
        let approval = Form::new(FormType::Form, NS_REQUEST)
            .title("Voice request")
            .instructions(
                "To give this person voice, tick \"Grant voice\" and send the form; \
                 to skip the request, cancel it.",
            )
            .field(
                Field::new("muc#role", "list-single")
                    .label("Requested role")
                    .value("participant"),
            )
            .field(
                Field::new("muc#jid", "jid-single")
                    .label("User ID")
                    .value(real.as_str()),
            )
            .field(
                Field::new("muc#roomnick", "text-single")
                    .label("Room nickname")
                    .value(nick),
            )
            .field(
                Field::new("muc#request_allow", "boolean")
                    .label("Grant voice to this person?")
                    .value("false"),
            )
            .to_element();
        let room = self.room_jid();
        for o in self.occupants.iter().filter(|o| o.role == Role::Moderator) {
            for s in &o.sessions {
                let to = Jid::from(s.clone());
                let m = stanza("message", &room, &to).with_child(approval.clone());
                fx.out.push(Out {
                    from: room.clone(),
                    to,
                    el: m,
                });
            }
        }
        fx
    }

    /// §7.8.2 mediated invitations, and their declines (§7.8.2 end).
    fn invite_or_decline(&mut self, real: &FullJid, x: &Element, el: &Element) -> Effects {
        let mut fx = Effects::default();
        let real_jid = Jid::from(real.clone());
        let bare = real.bare();
        let room = self.room_jid();
        if let Some(decline) = x.get_child("decline", NS_USER) {
            let Some(to) = decline.attr("to").and_then(|t| Jid::parse(t).ok()) else {
                return self.refused(
                    fx,
                    &real_jid,
                    el,
                    err(StanzaCondition::BadRequest).with_text("a decline names whom it is for"),
                );
            };
            let mut d = Element::new("decline", NS_USER).with_attr("from", bare.as_str());
            if let Some(r) = decline.get_child("reason", NS_USER) {
                d.push_child(r.clone());
            }
            let m =
                stanza("message", &room, &to).with_child(Element::new("x", NS_USER).with_child(d));
            fx.out.push(Out {
                from: room,
                to,
                el: m,
            });
            return fx;
        }
        let invites: Vec<&Element> = x
            .children()
            .filter(|c| c.is("invite", NS_USER))
            .take(20)
            .collect();
        if invites.is_empty() {
            return self.refused(
                fx,
                &real_jid,
                el,
                err(StanzaCondition::BadRequest).with_text("nothing to do with this message"),
            );
        }
        let aff = self.affiliation(&bare);
        let is_occupant = self.occupant_of(real).is_some();
        // §7.8.2: occupants invite; in a members-only room only admins unless allowed.
        let may = if self.config.members_only {
            aff >= Affiliation::Admin || (self.config.allow_invites && is_occupant)
        } else {
            is_occupant || aff >= Affiliation::Admin
        };
        if !may {
            return self.refused(
                fx,
                &real_jid,
                el,
                err(StanzaCondition::Forbidden).with_text("you may not invite to this room"),
            );
        }
        for inv in invites {
            let Some(to) = inv.attr("to").and_then(|t| Jid::parse(t).ok()) else {
                return self.refused(
                    fx,
                    &real_jid,
                    el,
                    err(StanzaCondition::JidMalformed).with_text("the invitee's JID is not valid"),
                );
            };
            // A members-only room makes the invitee a member (§7.8.2), as Prosody does.
            if self.config.members_only
                && self.affiliation(&to.bare()) == Affiliation::None
                && self.affiliations.len() < MAX_AFFILIATIONS
            {
                self.affiliations
                    .insert(to.bare().as_str().to_owned(), Affiliation::Member);
                if self.config.persistent {
                    fx.persist.push(Persist::Room);
                }
            }
            let mut i = Element::new("invite", NS_USER).with_attr("from", bare.as_str());
            if let Some(r) = inv.get_child("reason", NS_USER) {
                i.push_child(r.clone());
            }
            let mut ux = Element::new("x", NS_USER).with_child(i);
            if let Some(pw) = &self.config.password {
                ux.push_child(Element::new("password", NS_USER).with_text(pw.clone()));
            }
            let body = format!(
                "{} invites you to the room {}",
                bare.as_str(),
                self.jid.as_str()
            );
            let m = stanza("message", &room, &to)
                .with_child(ux)
                .with_child(Element::new("body", ns::CLIENT).with_text(body));
            fx.out.push(Out {
                from: room.clone(),
                to,
                el: m,
            });
        }
        fx
    }

    /// A message from `real` to the occupant `nick` (§7.5 private messages).
    pub fn private_message(&mut self, real: &FullJid, nick: &str, el: &Element) -> Effects {
        let mut fx = Effects::default();
        let real_jid = Jid::from(real.clone());
        let ty = el.attr("type");
        if ty == Some("error") {
            return fx;
        }
        if ty == Some("groupchat") {
            return self.refused(
                fx,
                &real_jid,
                el,
                err(StanzaCondition::BadRequest)
                    .with_text("a private message is not of type groupchat"),
            );
        }
        let Some(i) = self.occupant_of(real) else {
            return self.refused(
                fx,
                &real_jid,
                el,
                err(StanzaCondition::NotAcceptable)
                    .with_text("only occupants may send private messages"),
            );
        };
        let Some(t) = self.occupant_by_nick(nick) else {
            return self.refused(
                fx,
                &real_jid,
                el,
                err(StanzaCondition::ItemNotFound).with_text("nobody has that nickname here"),
            );
        };
        let from = self.occupant_jid(&self.occupants[i].nick);
        for s in &self.occupants[t].sessions {
            let to = Jid::from(s.clone());
            let mut m = el.clone();
            m.set_attr("from", from.as_str());
            m.set_attr("to", to.as_str());
            m.remove_children("occupant-id", NS_OCCUPANT_ID);
            m.push_child(self.occupant_id(&self.occupants[i]));
            if m.get_child("x", NS_USER).is_none() {
                m.push_child(Element::new("x", NS_USER));
            }
            fx.out.push(Out {
                from: from.clone(),
                to,
                el: m,
            });
        }
        fx
    }

    /// The room's disco#info (§6.4): identity, features and the `muc#roominfo` form.
    pub fn disco_info(&self) -> Element {
        let c = &self.config;
        let mut q = Element::new("query", ns::DISCO_INFO);
        let mut id = Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "conference")
            .with_attr("type", "text");
        if !c.name.is_empty() {
            id.set_attr("name", c.name.clone());
        }
        q.push_child(id);
        let features = [
            NS_MUC,
            if c.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if c.public { "muc_public" } else { "muc_hidden" },
            if c.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if c.password.is_some() {
                "muc_passwordprotected"
            } else {
                "muc_unsecured"
            },
            if c.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
            if c.whois == Whois::Anyone {
                "muc_nonanonymous"
            } else {
                "muc_semianonymous"
            },
            NS_SID,
            NS_SELF_PING,
            NS_VCARD,
            NS_OCCUPANT_ID,
            "http://jabber.org/protocol/muc#stable_id",
            crate::features::mam::NS,
            super::archive::NS_MODERATE,
            super::archive::NS_MODERATE_0,
            ns::DISCO_INFO,
        ];
        for f in features {
            q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
        }
        let subject = self
            .subject
            .as_ref()
            .map(|s| s.1.clone())
            .unwrap_or_default();
        let form =
            Form::new(FormType::Result, NS_ROOMINFO)
                .field(
                    Field::new("muc#roominfo_description", "text-single")
                        .value(c.description.clone()),
                )
                .field(
                    Field::new("muc#roominfo_occupants", "text-single")
                        .value(self.occupants.len().to_string()),
                )
                .field(Field::new("muc#roomconfig_roomname", "text-single").value(c.name.clone()))
                .field(Field::new("muc#roominfo_subject", "text-single").value(subject))
                .field(
                    // XEP-0486 §3: the hash of the room's picture, for apps to show it.
                    Field::new("muc#roominfo_avatarhash", "text-multi").value(
                        self.vcard
                            .as_ref()
                            .and_then(crate::features::vcard::photo_hash)
                            .unwrap_or_default(),
                    ),
                )
                .field(
                    Field::new("muc#roomconfig_changesubject", "boolean")
                        .value(if c.change_subject { "1" } else { "0" }),
                );
        q.push_child(form.to_element());
        q
    }

    /// The `muc#roomconfig` form (§10.2) with the current values.
    pub fn config_form(&self, limits: &Limits) -> Element {
        let c = &self.config;
        let b = |v: bool| if v { "1" } else { "0" };
        let form = Form::new(FormType::Form, NS_ROOMCONFIG)
            .title(format!("Configuration of {}", self.jid.as_str()))
            .field(
                Field::new("muc#roomconfig_roomname", "text-single")
                    .label("Name")
                    .value(c.name.clone()),
            )
            .field(
                Field::new("muc#roomconfig_roomdesc", "text-single")
                    .label("Description")
                    .value(c.description.clone()),
            )
            .field(
                Field::new("muc#roomconfig_persistentroom", "boolean")
                    .label("Keep the room when it is empty")
                    .value(b(c.persistent)),
            )
            .field(
                Field::new("muc#roomconfig_publicroom", "boolean")
                    .label("List the room in the directory")
                    .value(b(c.public)),
            )
            .field(
                Field::new("muc#roomconfig_membersonly", "boolean")
                    .label("Only members may enter")
                    .value(b(c.members_only)),
            )
            .field(
                Field::new("muc#roomconfig_passwordprotectedroom", "boolean")
                    .label("A password is needed to enter")
                    .value(b(c.password.is_some())),
            )
            .field(
                Field::new("muc#roomconfig_roomsecret", "text-private")
                    .label("Password")
                    .value(c.password.clone().unwrap_or_default()),
            )
            .field(
                Field::new("muc#roomconfig_moderatedroom", "boolean")
                    .label("Only participants may speak (visitors need voice)")
                    .value(b(c.moderated)),
            )
            .field(
                Field::new("muc#roomconfig_whois", "list-single")
                    .label("Who may see real JIDs")
                    .option("Moderators", "moderators")
                    .option("Anyone", "anyone")
                    .value(match c.whois {
                        Whois::Anyone => "anyone",
                        Whois::Moderators => "moderators",
                    }),
            )
            .field(
                Field::new("muc#roomconfig_changesubject", "boolean")
                    .label("Participants may change the subject")
                    .value(b(c.change_subject)),
            )
            .field(
                Field::new("muc#roomconfig_allowinvites", "boolean")
                    .label("Occupants may invite others")
                    .value(b(c.allow_invites)),
            )
            .field(
                {
                    let mut f = Field::new("muc#roomconfig_maxusers", "list-single")
                        .label(format!("Most occupants (up to {})", limits.max_occupants));
                    // §15.5.3 registers it as a list-single; any number up to the limit
                    // is accepted.
                    let mut sizes: Vec<usize> =
                        [5, 10, 20, 30, 50, 100, c.max_users, limits.max_occupants]
                            .into_iter()
                            .filter(|n| *n <= limits.max_occupants)
                            .collect();
                    sizes.sort_unstable();
                    sizes.dedup();
                    for n in sizes {
                        f = f.option(n.to_string(), n.to_string());
                    }
                    f
                }
                .value(c.max_users.to_string()),
            )
            .field(
                Field::new("muc#roomconfig_historylength", "text-single")
                    .label(format!(
                        "Messages of history kept (up to {})",
                        limits.history_length
                    ))
                    .value(c.history_length.to_string()),
            );
        Element::new("query", NS_OWNER).with_child(form.to_element())
    }

    /// §10.2: applies a submitted `muc#roomconfig` form; fields left out keep their value.
    /// Returns the status codes the change is announced with (§10.2.1: 104, 172, 173).
    pub fn apply_config(
        &mut self,
        form: &Submitted,
        limits: &Limits,
    ) -> Result<Vec<u16>, StanzaError> {
        if let Some(t) = form.form_type()
            && t != NS_ROOMCONFIG
        {
            return Err(err(StanzaCondition::BadRequest).with_text("not a muc#roomconfig form"));
        }
        let mut c = self.config.clone();
        let text = |var: &str| form.value(var).map(str::to_owned);
        let long = || err(StanzaCondition::NotAcceptable).with_text("too long");
        if let Some(v) = text("muc#roomconfig_roomname") {
            if v.len() > MAX_NAME_BYTES {
                return Err(long());
            }
            c.name = v;
        }
        if let Some(v) = text("muc#roomconfig_roomdesc") {
            if v.len() > MAX_NAME_BYTES {
                return Err(long());
            }
            c.description = v;
        }
        if let Some(v) = bool_field(form.value("muc#roomconfig_persistentroom"))? {
            c.persistent = v;
        }
        if let Some(v) = bool_field(form.value("muc#roomconfig_publicroom"))? {
            c.public = v;
        }
        if let Some(v) = bool_field(form.value("muc#roomconfig_membersonly"))? {
            c.members_only = v;
        }
        if let Some(v) = bool_field(form.value("muc#roomconfig_moderatedroom"))? {
            c.moderated = v;
        }
        if let Some(v) = bool_field(form.value("muc#roomconfig_changesubject"))? {
            c.change_subject = v;
        }
        if let Some(v) = bool_field(form.value("muc#roomconfig_allowinvites"))? {
            c.allow_invites = v;
        }
        let secret = text("muc#roomconfig_roomsecret");
        match bool_field(form.value("muc#roomconfig_passwordprotectedroom"))? {
            Some(true) => {
                let pw = secret.or(c.password.clone()).unwrap_or_default();
                if pw.is_empty() {
                    return Err(err(StanzaCondition::NotAcceptable)
                        .with_text("a password-protected room needs a password"));
                }
                if pw.len() > MAX_NAME_BYTES {
                    return Err(long());
                }
                c.password = Some(pw);
            }
            Some(false) => c.password = None,
            None => {
                if let Some(pw) = secret {
                    c.password = (!pw.is_empty()).then_some(pw);
                }
            }
        }
        if let Some(v) = form.value("muc#roomconfig_whois") {
            c.whois = match v {
                "anyone" => Whois::Anyone,
                "moderators" => Whois::Moderators,
                _ => {
                    return Err(err(StanzaCondition::NotAcceptable)
                        .with_text("whois is moderators or anyone"));
                }
            };
        }
        let number = |var: &str, max: usize| -> Result<Option<usize>, StanzaError> {
            match form.value(var) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() || v == "none" => Ok(Some(max)),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(|n| Some(n.min(max)))
                    .map_err(|_| {
                        err(StanzaCondition::NotAcceptable).with_text(format!("{var} is a number"))
                    }),
            }
        };
        if let Some(n) = number("muc#roomconfig_maxusers", limits.max_occupants)? {
            c.max_users = n.max(1);
        }
        if let Some(n) = number("muc#roomconfig_historylength", limits.history_length)? {
            c.history_length = n;
        }
        if let Some(n) = number("muc#maxhistoryfetch", limits.history_length)? {
            c.history_length = n;
        }
        let mut codes = vec![104];
        if c.whois != self.config.whois {
            codes.push(if c.whois == Whois::Anyone { 172 } else { 173 });
        }
        self.config = c;
        while self.history.len() > self.config.history_length {
            self.history.pop_front();
        }
        Ok(codes)
    }

    /// An iq from `real` to the room's bare JID in the owner namespace (§10).
    /// `Ok(None)` means an empty result; the caller answers.
    pub fn owner_iq(
        &mut self,
        real: &FullJid,
        is_set: bool,
        query: &Element,
        limits: &Limits,
        fx: &mut Effects,
    ) -> Result<Option<Element>, StanzaError> {
        if self.affiliation(&real.bare()) != Affiliation::Owner {
            return Err(err(StanzaCondition::Forbidden).with_text("only owners may do that"));
        }
        if !is_set {
            return Ok(Some(self.config_form(limits)));
        }
        if let Some(d) = query.get_child("destroy", NS_OWNER) {
            self.destroy(d, fx);
            return Ok(None);
        }
        let Some(x) = query.get_child("x", NS_DATA) else {
            return Err(
                err(StanzaCondition::BadRequest).with_text("a form or <destroy/> is expected")
            );
        };
        if x.attr("type") == Some("cancel") {
            // §10.1.3: cancelling the first configuration destroys the new room.
            if self.locked {
                self.destroy(&Element::new("destroy", NS_OWNER), fx);
            }
            return Ok(None);
        }
        if x.attr("type") != Some("submit") {
            return Err(err(StanzaCondition::BadRequest).with_text("a submitted form is expected"));
        }
        let form = Submitted::parse(x)
            .map_err(|_| err(StanzaCondition::BadRequest).with_text("the form is not valid"))?;
        let was_locked = self.locked;
        let codes = self.apply_config(&form, limits)?;
        self.locked = false;
        if self.config.persistent || was_locked {
            fx.persist.push(Persist::Room);
        }
        if !self.config.persistent {
            // Turned temporary: nothing stays stored.
            fx.persist.push(Persist::Unstored);
        }
        if !was_locked {
            // §10.2.1: occupants hear the configuration changed.
            let room = self.room_jid();
            for o in &self.occupants {
                for s in &o.sessions {
                    let to = Jid::from(s.clone());
                    let mut x = Element::new("x", NS_USER);
                    for c in &codes {
                        x.push_child(status(*c));
                    }
                    let m = stanza("message", &room, &to)
                        .with_attr("type", "groupchat")
                        .with_child(x);
                    fx.out.push(Out {
                        from: room.clone(),
                        to,
                        el: m,
                    });
                }
            }
        }
        // §9.x: a room turned members-only loses its non-members (322).
        if self.config.members_only {
            let mut i = 0;
            while i < self.occupants.len() {
                let aff = self.occupants[i]
                    .bare()
                    .map(|b| self.affiliation(&b))
                    .unwrap_or(Affiliation::None);
                if aff < Affiliation::Member {
                    self.remove_occupant(i, &[322], None, None, fx);
                } else {
                    i += 1;
                }
            }
        }
        // Roles follow a room turned moderated or not.
        Ok(None)
    }

    /// §10.9: every occupant leaves with the `<destroy/>` reason; the room is gone.
    pub fn destroy(&mut self, d: &Element, fx: &mut Effects) {
        let mut destroy = Element::new("destroy", NS_USER);
        if let Some(j) = d.attr("jid") {
            destroy.set_attr("jid", j);
        }
        if let Some(r) = d.get_child("reason", NS_OWNER) {
            destroy.push_child(Element::new("reason", NS_USER).with_text(r.text()));
        }
        for o in std::mem::take(&mut self.occupants) {
            let from = self.occupant_jid(&o.nick);
            for s in &o.sessions {
                let to = Jid::from(s.clone());
                let item = Element::new("item", NS_USER)
                    .with_attr("affiliation", "none")
                    .with_attr("role", "none");
                let x = Element::new("x", NS_USER)
                    .with_child(item)
                    .with_child(status(110))
                    .with_child(destroy.clone());
                let p = stanza("presence", &from, &to)
                    .with_attr("type", "unavailable")
                    .with_child(x);
                fx.out.push(Out {
                    from: from.clone(),
                    to,
                    el: p,
                });
            }
        }
        fx.persist.push(Persist::Destroyed);
    }

    /// An iq from `real` in the admin namespace (§8 moderator, §9 admin use cases).
    pub fn admin_iq(
        &mut self,
        real: &FullJid,
        is_set: bool,
        query: &Element,
        fx: &mut Effects,
    ) -> Result<Option<Element>, StanzaError> {
        let actor_aff = self.affiliation(&real.bare());
        let actor_i = self.occupant_of(real);
        let actor_role = actor_i
            .map(|i| self.occupants[i].role)
            .unwrap_or(Role::None);
        let items: Vec<&Element> = query
            .children()
            .filter(|c| c.is("item", NS_ADMIN))
            .collect();
        if items.is_empty() || items.len() > 50 {
            return Err(err(StanzaCondition::BadRequest).with_text("one to fifty <item/>s"));
        }
        if !is_set {
            return self.admin_list(items[0], actor_aff, actor_role).map(Some);
        }
        // Check every item first, then apply them all (all or nothing).
        enum Change {
            Role(usize, Role),
            Aff(BareJid, Affiliation),
        }
        let mut changes = Vec::new();
        for item in &items {
            match (item.attr("role"), item.attr("affiliation")) {
                (Some(r), None) => {
                    let role = Role::parse(r).ok_or_else(|| {
                        err(StanzaCondition::BadRequest).with_text("unknown role")
                    })?;
                    let nick = item.attr("nick").ok_or_else(|| {
                        err(StanzaCondition::BadRequest).with_text("a role change names a nick")
                    })?;
                    let t = self.occupant_by_nick(nick).ok_or_else(|| {
                        err(StanzaCondition::ItemNotFound)
                            .with_text("nobody has that nickname here")
                    })?;
                    let target = &self.occupants[t];
                    let target_aff = target
                        .bare()
                        .map(|b| self.affiliation(&b))
                        .unwrap_or(Affiliation::None);
                    self.check_role_change(actor_aff, actor_role, target_aff, target.role, role)?;
                    changes.push(Change::Role(t, role));
                }
                (None, Some(a)) => {
                    let aff = Affiliation::parse(a).ok_or_else(|| {
                        err(StanzaCondition::BadRequest).with_text("unknown affiliation")
                    })?;
                    let jid = match (item.attr("jid"), item.attr("nick")) {
                        (Some(j), _) => Jid::parse(j)
                            .map_err(|_| err(StanzaCondition::JidMalformed))?
                            .bare(),
                        (None, Some(n)) => self
                            .occupant_by_nick(n)
                            .and_then(|t| self.occupants[t].bare())
                            .ok_or_else(|| err(StanzaCondition::ItemNotFound))?,
                        (None, None) => {
                            return Err(err(StanzaCondition::BadRequest)
                                .with_text("an affiliation change names a JID"));
                        }
                    };
                    let current = self.affiliation(&jid);
                    self.check_aff_change(actor_aff, &real.bare(), &jid, current, aff)?;
                    changes.push(Change::Aff(jid, aff));
                }
                _ => {
                    return Err(err(StanzaCondition::BadRequest)
                        .with_text("an item changes a role or an affiliation"));
                }
            }
        }
        let actor_nick = actor_i.map(|i| self.occupants[i].nick.clone());
        let reasons: Vec<Option<String>> = items
            .iter()
            .map(|i| i.get_child("reason", NS_ADMIN).map(|r| r.text()))
            .collect();
        // Role changes by index: apply removals last so indexes stay valid.
        let mut removals: Vec<(usize, Option<String>)> = Vec::new();
        let mut aff_changed = false;
        for (change, reason) in changes.into_iter().zip(reasons) {
            match change {
                Change::Role(t, Role::None) => removals.push((t, reason)),
                Change::Role(t, role) => {
                    self.occupants[t].role = role;
                    let o = self.occupants[t].clone();
                    self.broadcast_presence(&o, false, &[], &|_| {}, fx);
                }
                Change::Aff(jid, aff) => {
                    aff_changed = true;
                    self.set_affiliation(&jid, aff, actor_nick.as_deref(), reason.as_deref(), fx)?;
                }
            }
        }
        removals.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (t, reason) in removals {
            self.remove_occupant(t, &[307], actor_nick.as_deref(), reason.as_deref(), fx);
        }
        if aff_changed && self.config.persistent {
            fx.persist.push(Persist::Room);
        }
        Ok(None)
    }

    /// Sets `jid`'s affiliation (§9, §10.3-§10.8) and shows the change to the room: an
    /// occupant outcast is removed with 301, one no longer a member of a members-only room
    /// with 321, anyone else sees their new role. The caller persists the room. Refused
    /// (`resource-constraint`) past [`MAX_AFFILIATIONS`].
    pub fn set_affiliation(
        &mut self,
        jid: &BareJid,
        aff: Affiliation,
        actor_nick: Option<&str>,
        reason: Option<&str>,
        fx: &mut Effects,
    ) -> Result<(), StanzaError> {
        if aff == Affiliation::None {
            self.affiliations.remove(jid.as_str());
        } else {
            if self.affiliations.len() >= MAX_AFFILIATIONS
                && !self.affiliations.contains_key(jid.as_str())
            {
                return Err(err(StanzaCondition::ResourceConstraint)
                    .with_text("this room keeps no more affiliations"));
            }
            self.affiliations.insert(jid.as_str().to_owned(), aff);
        }
        // The occupant, if present, sees its new standing.
        let present: Vec<usize> = (0..self.occupants.len())
            .filter(|&i| self.occupants[i].bare().as_ref() == Some(jid))
            .collect();
        for t in present.into_iter().rev() {
            if aff == Affiliation::Outcast {
                self.remove_occupant(t, &[301], actor_nick, reason, fx);
            } else if self.config.members_only && aff < Affiliation::Member {
                self.remove_occupant(t, &[321], actor_nick, reason, fx);
            } else {
                self.occupants[t].role = self.default_role(aff);
                let o = self.occupants[t].clone();
                self.broadcast_presence(&o, false, &[], &|_| {}, fx);
            }
        }
        Ok(())
    }

    /// §8 (roles) as the tables of §5.1.3 and §8.2-§8.5 have it.
    fn check_role_change(
        &self,
        actor_aff: Affiliation,
        actor_role: Role,
        target_aff: Affiliation,
        target_role: Role,
        new: Role,
    ) -> Result<(), StanzaError> {
        let not_allowed =
            |why: &str| Err(err(StanzaCondition::NotAllowed).with_text(why.to_owned()));
        if actor_role != Role::Moderator {
            return Err(err(StanzaCondition::Forbidden).with_text("only moderators change roles"));
        }
        match new {
            // §8.2, §8.4: kicking or revoking voice from an admin or owner is not allowed,
            // nor from someone of higher affiliation.
            Role::None | Role::Visitor => {
                if target_aff >= Affiliation::Admin || target_aff > actor_aff {
                    return not_allowed("you may not do that to an admin or owner");
                }
                if target_role == Role::Moderator && actor_aff < Affiliation::Admin {
                    return not_allowed("only admins may change a moderator's role");
                }
            }
            Role::Participant => {
                // §8.3 voice; §9.7 revoking moderator status is for admins.
                if target_role == Role::Moderator {
                    if actor_aff < Affiliation::Admin {
                        return Err(err(StanzaCondition::Forbidden)
                            .with_text("only admins may revoke moderator status"));
                    }
                    if target_aff >= Affiliation::Admin {
                        return not_allowed("an admin or owner stays a moderator");
                    }
                }
            }
            Role::Moderator => {
                // §9.6: admins grant moderator status.
                if actor_aff < Affiliation::Admin {
                    return Err(err(StanzaCondition::Forbidden)
                        .with_text("only admins may grant moderator status"));
                }
            }
        }
        Ok(())
    }

    /// §9 (affiliations): admins manage members and outcasts, owners manage admins and
    /// owners; an admin cannot touch another admin or an owner; the last owner stays.
    fn check_aff_change(
        &self,
        actor_aff: Affiliation,
        actor: &BareJid,
        target: &BareJid,
        current: Affiliation,
        new: Affiliation,
    ) -> Result<(), StanzaError> {
        if actor_aff < Affiliation::Admin {
            return Err(err(StanzaCondition::Forbidden)
                .with_text("only admins and owners change affiliations"));
        }
        if (new >= Affiliation::Admin || current >= Affiliation::Admin)
            && actor_aff != Affiliation::Owner
        {
            return Err(
                err(StanzaCondition::NotAllowed).with_text("only owners change admins and owners")
            );
        }
        if current == Affiliation::Owner && new != Affiliation::Owner {
            let owners = self
                .affiliations
                .values()
                .filter(|a| **a == Affiliation::Owner)
                .count();
            if owners <= 1 {
                // §10.6: the last owner cannot step down.
                return Err(err(StanzaCondition::Conflict).with_text("a room keeps one owner"));
            }
        }
        if new == Affiliation::Outcast && actor == target {
            return Err(err(StanzaCondition::Conflict).with_text("you cannot ban yourself"));
        }
        Ok(())
    }

    /// §9.5, §8.5, §9.8, §10.5: a list of one affiliation or one role.
    fn admin_list(
        &self,
        item: &Element,
        actor_aff: Affiliation,
        actor_role: Role,
    ) -> Result<Element, StanzaError> {
        let mut q = Element::new("query", NS_ADMIN);
        if let Some(a) = item.attr("affiliation") {
            let aff = Affiliation::parse(a)
                .filter(|a| *a != Affiliation::None)
                .ok_or_else(|| err(StanzaCondition::BadRequest).with_text("unknown affiliation"))?;
            // Members may see the member list of a members-only room; admins see all.
            let may = actor_aff >= Affiliation::Admin
                || (aff == Affiliation::Member && actor_aff == Affiliation::Member);
            if !may {
                return Err(err(StanzaCondition::Forbidden));
            }
            for (jid, a) in &self.affiliations {
                if *a == aff {
                    q.push_child(
                        Element::new("item", NS_ADMIN)
                            .with_attr("affiliation", a.as_str())
                            .with_attr("jid", jid.clone()),
                    );
                }
            }
            return Ok(q);
        }
        if let Some(r) = item.attr("role") {
            let role = Role::parse(r)
                .filter(|r| *r != Role::None)
                .ok_or_else(|| err(StanzaCondition::BadRequest).with_text("unknown role"))?;
            if actor_role != Role::Moderator {
                return Err(err(StanzaCondition::Forbidden));
            }
            for o in self.occupants.iter().filter(|o| o.role == role) {
                let aff = o
                    .bare()
                    .map(|b| self.affiliation(&b))
                    .unwrap_or(Affiliation::None);
                let mut it = Element::new("item", NS_ADMIN)
                    .with_attr("nick", o.nick.clone())
                    .with_attr("role", o.role.as_str())
                    .with_attr("affiliation", aff.as_str());
                if let Some(s) = o.sessions.first() {
                    it.set_attr("jid", s.as_str());
                }
                q.push_child(it);
            }
            return Ok(q);
        }
        Err(err(StanzaCondition::BadRequest).with_text("ask for an affiliation or a role"))
    }

    /// XEP-0486 §4: the room's picture changed; occupants hear its new hash in presence
    /// from the room itself (XEP-0153's `<x/>`).
    pub fn avatar_changed(&self, fx: &mut Effects) {
        let hash = self
            .vcard
            .as_ref()
            .and_then(crate::features::vcard::photo_hash)
            .unwrap_or_default();
        let room = self.room_jid();
        for o in &self.occupants {
            for s in &o.sessions {
                let to = Jid::from(s.clone());
                let p = stanza("presence", &room, &to).with_child(
                    Element::new("x", "vcard-temp:x:update").with_child(
                        Element::new("photo", "vcard-temp:x:update").with_text(hash.clone()),
                    ),
                );
                fx.out.push(Out {
                    from: room.clone(),
                    to,
                    el: p,
                });
            }
        }
    }

    /// §7.x: an iq from occupant `real` to the occupant `nick` goes to that occupant's
    /// session, from the asker's occupant JID, under an id of the room's; the answer
    /// comes back the same way ([`Room::relay_answer`]). XEP-0410 §4: a ping to one's own
    /// nick is answered by the room (`Ok(Some(()))` asks the caller for a result).
    pub fn relay_iq(
        &mut self,
        real: &FullJid,
        nick: &str,
        el: &Element,
        now: i64,
        fx: &mut Effects,
    ) -> Result<Option<()>, StanzaError> {
        let Some(i) = self.occupant_of(real) else {
            return Err(err(StanzaCondition::NotAcceptable)
                .with_text("only occupants reach other occupants (you are not joined)"));
        };
        let is_ping = el.children().next().is_some_and(|p| p.is("ping", ns::PING));
        if is_ping && self.occupants[i].nick == nick {
            return Ok(Some(()));
        }
        let Some(t) = self.occupant_by_nick(nick) else {
            return Err(
                err(StanzaCondition::ItemNotFound).with_text("nobody has that nickname here")
            );
        };
        let Some(target) = self.occupants[t].sessions.first().cloned() else {
            return Err(err(StanzaCondition::ItemNotFound));
        };
        let id = format!("muc-iq-{}", self.next_id(now));
        if self.pending_iqs.len() >= MAX_PENDING_IQS {
            self.pending_iqs.pop_front();
        }
        self.pending_iqs.push_back(PendingIq {
            id: id.clone(),
            requester: real.clone(),
            requester_id: el.attr("id").unwrap_or_default().to_owned(),
            target: target.clone(),
            target_nick: nick.to_owned(),
        });
        let from = self.occupant_jid(&self.occupants[i].nick);
        let to = Jid::from(target);
        let mut fwd = el.clone();
        fwd.set_attr("from", from.as_str());
        fwd.set_attr("to", to.as_str());
        fwd.set_attr("id", id);
        fx.out.push(Out { from, to, el: fwd });
        Ok(None)
    }

    /// The answer (`result` or `error`) from `real` to a relayed iq: back to its asker,
    /// from the answering occupant's JID, under the asker's id. Anything else is dropped.
    pub fn relay_answer(&mut self, real: &FullJid, el: &Element) -> Effects {
        let mut fx = Effects::default();
        let Some(id) = el.attr("id") else { return fx };
        let Some(pos) = self
            .pending_iqs
            .iter()
            .position(|p| p.id == id && p.target == *real)
        else {
            return fx;
        };
        let Some(p) = self.pending_iqs.remove(pos) else {
            return fx;
        };
        let from = self.occupant_jid(&p.target_nick);
        let to = Jid::from(p.requester);
        let mut back = el.clone();
        back.set_attr("from", from.as_str());
        back.set_attr("to", to.as_str());
        back.set_attr("id", p.requester_id);
        fx.out.push(Out { from, to, el: back });
        fx
    }

    /// Whether the room holds nobody and should go (temporary rooms, §4.2).
    pub fn is_disposable(&self) -> bool {
        self.occupants.is_empty() && !self.config.persistent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_occupants: 10,
        history_length: 50,
    };

    fn full(s: &str) -> FullJid {
        FullJid::parse(s).unwrap()
    }

    fn join_el(x: Option<Element>) -> Element {
        let mut p = Element::new("presence", ns::CLIENT);
        p.push_child(x.unwrap_or_else(|| Element::new("x", NS_MUC)));
        p
    }

    /// A room `family@conference.home` made by ann and configured with `fields`.
    fn room(fields: &[(&str, &str)]) -> Room {
        let ann = full("ann@home/phone");
        let mut r = Room::new(
            BareJid::parse("family@conference.home").unwrap(),
            &ann.bare(),
            &LIMITS,
        );
        let fx = r.presence(&ann, "ann", &join_el(None), 0, true);
        assert!(codes_to(&fx, "ann@home/phone").contains(&201));
        let mut x = Element::new("x", NS_DATA).with_attr("type", "submit");
        for (k, v) in fields {
            x.push_child(
                Element::new("field", NS_DATA)
                    .with_attr("var", *k)
                    .with_child(Element::new("value", NS_DATA).with_text(*v)),
            );
        }
        let q = Element::new("query", NS_OWNER).with_child(x);
        let mut fx = Effects::default();
        r.owner_iq(&ann, true, &q, &LIMITS, &mut fx).unwrap();
        assert!(!r.locked);
        r
    }

    fn codes_to(fx: &Effects, to: &str) -> Vec<u16> {
        fx.out
            .iter()
            .filter(|o| o.to.as_str() == to)
            .flat_map(|o| o.el.get_child("x", NS_USER).into_iter())
            .flat_map(|x| x.children().filter(|c| c.is("status", NS_USER)))
            .filter_map(|s| s.attr("code")?.parse().ok())
            .collect()
    }

    fn error_of(fx: &Effects) -> Option<String> {
        fx.out.iter().find_map(|o| {
            let e = o.el.get_child("error", ns::CLIENT)?;
            Some(e.children().next()?.name().to_owned())
        })
    }

    #[test]
    fn a_new_room_is_locked_to_all_but_its_owner() {
        let ann = full("ann@home/phone");
        let mut r = Room::new(
            BareJid::parse("family@conference.home").unwrap(),
            &ann.bare(),
            &LIMITS,
        );
        r.presence(&ann, "ann", &join_el(None), 0, true);
        let fx = r.presence(&full("bob@home/pc"), "bob", &join_el(None), 0, false);
        assert_eq!(error_of(&fx).as_deref(), Some("item-not-found"));
    }

    #[test]
    fn join_order_is_others_then_self_then_subject() {
        let mut r = room(&[]);
        let fx = r.presence(&full("bob@home/pc"), "bob", &join_el(None), 0, false);
        let to_bob: Vec<&Out> = fx
            .out
            .iter()
            .filter(|o| o.to.as_str() == "bob@home/pc")
            .collect();
        assert_eq!(to_bob[0].from.as_str(), "family@conference.home/ann");
        assert_eq!(to_bob[1].from.as_str(), "family@conference.home/bob");
        assert!(codes_to(&fx, "bob@home/pc").contains(&110));
        assert!(
            to_bob
                .last()
                .unwrap()
                .el
                .get_child("subject", ns::CLIENT)
                .is_some()
        );
        // ann hears bob, without 110.
        assert_eq!(codes_to(&fx, "ann@home/phone"), Vec::<u16>::new());
    }

    #[test]
    fn nick_conflict_and_same_person_second_device() {
        let mut r = room(&[]);
        let fx = r.presence(&full("bob@home/pc"), "ann", &join_el(None), 0, false);
        assert_eq!(error_of(&fx).as_deref(), Some("conflict"));
        let fx = r.presence(&full("ann@home/desk"), "ann", &join_el(None), 0, false);
        assert_eq!(error_of(&fx), None);
        assert_eq!(r.occupants.len(), 1);
        assert_eq!(r.occupants[0].sessions.len(), 2);
    }

    #[test]
    fn members_only_password_ban_and_full() {
        let mut r = room(&[("muc#roomconfig_membersonly", "1")]);
        let fx = r.presence(&full("bob@home/pc"), "bob", &join_el(None), 0, false);
        assert_eq!(error_of(&fx).as_deref(), Some("registration-required"));

        let mut r = room(&[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "s3cret"),
        ]);
        let fx = r.presence(&full("bob@home/pc"), "bob", &join_el(None), 0, false);
        assert_eq!(error_of(&fx).as_deref(), Some("not-authorized"));
        let x = Element::new("x", NS_MUC)
            .with_child(Element::new("password", NS_MUC).with_text("s3cret"));
        let fx = r.presence(&full("bob@home/pc"), "bob", &join_el(Some(x)), 0, false);
        assert_eq!(error_of(&fx), None);

        let mut r = room(&[("muc#roomconfig_maxusers", "1")]);
        let fx = r.presence(&full("bob@home/pc"), "bob", &join_el(None), 0, false);
        assert_eq!(error_of(&fx).as_deref(), Some("service-unavailable"));
    }

    fn admin(item: Element) -> Element {
        Element::new("query", NS_ADMIN).with_child(item)
    }

    #[test]
    fn kick_ban_and_the_rules_about_owners() {
        let ann = full("ann@home/phone");
        let mut r = room(&[]);
        r.presence(&full("bob@home/pc"), "bob", &join_el(None), 0, false);
        r.presence(&full("cat@home/pc"), "cat", &join_el(None), 0, false);
        // bob (participant) may not kick.
        let mut fx = Effects::default();
        let kick_ann = admin(
            Element::new("item", NS_ADMIN)
                .with_attr("nick", "ann")
                .with_attr("role", "none"),
        );
        let e = r
            .admin_iq(&full("bob@home/pc"), true, &kick_ann, &mut fx)
            .unwrap_err();
        assert_eq!(e.condition, StanzaCondition::Forbidden);
        // ann makes bob a moderator is for admins: she is owner, fine; bob then may not
        // kick the owner.
        let grant = admin(
            Element::new("item", NS_ADMIN)
                .with_attr("nick", "bob")
                .with_attr("role", "moderator"),
        );
        r.admin_iq(&ann, true, &grant, &mut fx).unwrap();
        let e = r
            .admin_iq(&full("bob@home/pc"), true, &kick_ann, &mut fx)
            .unwrap_err();
        assert_eq!(e.condition, StanzaCondition::NotAllowed);
        // ann kicks cat: 307 to cat.
        let mut fx = Effects::default();
        let kick_cat = admin(
            Element::new("item", NS_ADMIN)
                .with_attr("nick", "cat")
                .with_attr("role", "none"),
        );
        r.admin_iq(&ann, true, &kick_cat, &mut fx).unwrap();
        assert!(codes_to(&fx, "cat@home/pc").contains(&307));
        assert!(r.occupant_by_nick("cat").is_none());
        // ann bans bob: 301, and bob cannot come back.
        let mut fx = Effects::default();
        let ban = admin(
            Element::new("item", NS_ADMIN)
                .with_attr("jid", "bob@home")
                .with_attr("affiliation", "outcast"),
        );
        r.admin_iq(&ann, true, &ban, &mut fx).unwrap();
        assert!(codes_to(&fx, "bob@home/pc").contains(&301));
        let fx = r.presence(&full("bob@home/pc"), "bob", &join_el(None), 0, false);
        assert_eq!(error_of(&fx).as_deref(), Some("forbidden"));
        // The last owner stays.
        let demote = admin(
            Element::new("item", NS_ADMIN)
                .with_attr("jid", "ann@home")
                .with_attr("affiliation", "member"),
        );
        let e = r
            .admin_iq(&ann, true, &demote, &mut Effects::default())
            .unwrap_err();
        assert_eq!(e.condition, StanzaCondition::Conflict);
    }

    #[test]
    fn visitors_need_voice_in_a_moderated_room() {
        let ann = full("ann@home/phone");
        let mut r = room(&[("muc#roomconfig_moderatedroom", "1")]);
        let bob = full("bob@home/pc");
        r.presence(&bob, "bob", &join_el(None), 0, false);
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        let fx = r.message_to_room(&bob, &msg, 0);
        assert_eq!(error_of(&fx).as_deref(), Some("forbidden"));
        let voice = admin(
            Element::new("item", NS_ADMIN)
                .with_attr("nick", "bob")
                .with_attr("role", "participant"),
        );
        r.admin_iq(&ann, true, &voice, &mut Effects::default())
            .unwrap();
        let fx = r.message_to_room(&bob, &msg, 0);
        assert_eq!(error_of(&fx), None);
        assert_eq!(fx.out.len(), 2);
        assert!(fx.out[0].el.get_child("stanza-id", NS_SID).is_some());
    }

    #[test]
    fn history_limits() {
        let ann = full("ann@home/phone");
        let mut r = room(&[("muc#roomconfig_historylength", "3")]);
        for (i, t) in [10, 20, 30, 40].iter().enumerate() {
            let msg = Element::new("message", ns::CLIENT)
                .with_attr("type", "groupchat")
                .with_child(Element::new("body", ns::CLIENT).with_text(format!("m{i}")));
            r.message_to_room(&ann, &msg, *t);
        }
        assert_eq!(r.history.len(), 3);
        let req = HistoryRequest {
            max_stanzas: Some(2),
            ..Default::default()
        };
        let got = r.select_history(&req, 50);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].at, 40);
        let req = HistoryRequest {
            seconds: Some(25),
            ..Default::default()
        };
        assert_eq!(r.select_history(&req, 50).len(), 2);
        let req = HistoryRequest {
            max_chars: Some(0),
            ..Default::default()
        };
        assert_eq!(r.select_history(&req, 50).len(), 0);
    }

    #[test]
    fn subject_rules() {
        let mut r = room(&[]);
        let bob = full("bob@home/pc");
        r.presence(&bob, "bob", &join_el(None), 0, false);
        let s = Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_child(Element::new("subject", ns::CLIENT).with_text("tea"));
        assert_eq!(
            error_of(&r.message_to_room(&bob, &s, 0)).as_deref(),
            Some("forbidden")
        );
        let fx = r.message_to_room(&full("ann@home/phone"), &s, 0);
        assert_eq!(error_of(&fx), None);
        assert_eq!(r.subject.as_ref().unwrap().1, "tea");
    }

    #[test]
    fn config_round_trips_as_text() {
        let r = room(&[
            ("muc#roomconfig_roomname", "Fam\nily"),
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_whois", "anyone"),
        ]);
        let back = Config::from_text(&r.config.to_text(), &LIMITS);
        assert_eq!(back, r.config);
    }

    #[test]
    fn bad_config_values_are_refused() {
        let mut r = room(&[]);
        let form = |k: &str, v: &str| {
            Submitted::parse(
                &Element::new("x", NS_DATA)
                    .with_attr("type", "submit")
                    .with_child(
                        Element::new("field", NS_DATA)
                            .with_attr("var", k)
                            .with_child(Element::new("value", NS_DATA).with_text(v)),
                    ),
            )
            .unwrap()
        };
        assert!(
            r.apply_config(&form("muc#roomconfig_persistentroom", "maybe"), &LIMITS)
                .is_err()
        );
        assert!(
            r.apply_config(&form("muc#roomconfig_maxusers", "lots"), &LIMITS)
                .is_err()
        );
        assert!(
            r.apply_config(&form("muc#roomconfig_whois", "cats"), &LIMITS)
                .is_err()
        );
        r.apply_config(&form("muc#roomconfig_maxusers", "999"), &LIMITS)
            .unwrap();
        assert_eq!(r.config.max_users, LIMITS.max_occupants);
    }

    #[test]
    fn nick_change_sends_303() {
        let mut r = room(&[]);
        let bob = full("bob@home/pc");
        r.presence(&bob, "bob", &join_el(None), 0, false);
        let fx = r.presence(
            &bob,
            "robert",
            &Element::new("presence", ns::CLIENT),
            0,
            false,
        );
        assert!(codes_to(&fx, "ann@home/phone").contains(&303));
        assert_eq!(r.occupants[1].nick, "robert");
        let fx = r.presence(&bob, "ann", &Element::new("presence", ns::CLIENT), 0, false);
        assert_eq!(error_of(&fx).as_deref(), Some("conflict"));
    }

    /// §9 and §10: admins manage members and outcasts but not other admins or owners;
    /// owners manage admins; granting admin is for owners.
    #[test]
    fn affiliation_changes_follow_the_tables() {
        let ann = full("ann@home/phone");
        let mut r = room(&[]);
        let set = |r: &mut Room, by: &FullJid, jid: &str, aff: &str| {
            let q = admin(
                Element::new("item", NS_ADMIN)
                    .with_attr("jid", jid)
                    .with_attr("affiliation", aff),
            );
            r.admin_iq(by, true, &q, &mut Effects::default())
                .map(|_| ())
                .map_err(|e| e.condition)
        };
        assert_eq!(set(&mut r, &ann, "bob@home", "admin"), Ok(()));
        assert_eq!(set(&mut r, &ann, "cat@home", "admin"), Ok(()));
        let bob = full("bob@home/pc");
        // An admin may not touch another admin, nor make one, nor ban an owner.
        assert_eq!(
            set(&mut r, &bob, "cat@home", "none"),
            Err(StanzaCondition::NotAllowed)
        );
        assert_eq!(
            set(&mut r, &bob, "dan@home", "admin"),
            Err(StanzaCondition::NotAllowed)
        );
        assert_eq!(
            set(&mut r, &bob, "ann@home", "outcast"),
            Err(StanzaCondition::NotAllowed)
        );
        // But manages members and outcasts.
        assert_eq!(set(&mut r, &bob, "dan@home", "member"), Ok(()));
        assert_eq!(set(&mut r, &bob, "eve@home", "outcast"), Ok(()));
        // A member manages nothing.
        let dan = full("dan@home/x");
        assert_eq!(
            set(&mut r, &dan, "fay@home", "member"),
            Err(StanzaCondition::Forbidden)
        );
        // A second owner lets the first step down.
        assert_eq!(set(&mut r, &ann, "bob@home", "owner"), Ok(()));
        assert_eq!(set(&mut r, &ann, "ann@home", "admin"), Ok(()));
        // An invalid JID is jid-malformed, an unknown affiliation bad-request.
        assert_eq!(
            set(&mut r, &bob, "@@", "member"),
            Err(StanzaCondition::JidMalformed)
        );
        assert_eq!(
            set(&mut r, &bob, "x@home", "king"),
            Err(StanzaCondition::BadRequest)
        );
    }

    /// §8.3-§8.5, §9.6-§9.7: voice is for moderators to give, moderator status for
    /// admins; a moderator cannot silence another moderator unless an admin.
    #[test]
    fn role_changes_follow_the_tables() {
        let ann = full("ann@home/phone");
        let mut r = room(&[]);
        let bob = full("bob@home/pc");
        let cat = full("cat@home/pc");
        r.presence(&bob, "bob", &join_el(None), 0, false);
        r.presence(&cat, "cat", &join_el(None), 0, false);
        let role = |r: &mut Room, by: &FullJid, nick: &str, role: &str| {
            let q = admin(
                Element::new("item", NS_ADMIN)
                    .with_attr("nick", nick)
                    .with_attr("role", role),
            );
            r.admin_iq(by, true, &q, &mut Effects::default())
                .map(|_| ())
                .map_err(|e| e.condition)
        };
        assert_eq!(role(&mut r, &ann, "bob", "moderator"), Ok(()));
        assert_eq!(role(&mut r, &ann, "cat", "moderator"), Ok(()));
        // bob (a moderator, no affiliation) may not silence cat (a moderator).
        assert_eq!(
            role(&mut r, &bob, "cat", "visitor"),
            Err(StanzaCondition::NotAllowed)
        );
        // nor grant or revoke moderator status.
        assert_eq!(
            role(&mut r, &bob, "cat", "participant"),
            Err(StanzaCondition::Forbidden)
        );
        // The owner may.
        assert_eq!(role(&mut r, &ann, "cat", "participant"), Ok(()));
        assert_eq!(role(&mut r, &bob, "cat", "visitor"), Ok(()));
        assert_eq!(r.occupants[2].role, Role::Visitor);
        // The owner stays a moderator whatever a moderator says.
        assert_eq!(
            role(&mut r, &bob, "ann", "participant"),
            Err(StanzaCondition::Forbidden)
        );
    }

    /// §10.9: everyone leaves with the reason; §10.1.3 cancelling a new room's form
    /// destroys it.
    #[test]
    fn destroy_and_cancel() {
        let ann = full("ann@home/phone");
        let mut r = room(&[]);
        r.presence(&full("bob@home/pc"), "bob", &join_el(None), 0, false);
        let q = Element::new("query", NS_OWNER).with_child(
            Element::new("destroy", NS_OWNER)
                .with_child(Element::new("reason", NS_OWNER).with_text("bye")),
        );
        let mut fx = Effects::default();
        let e = r
            .owner_iq(&full("bob@home/pc"), true, &q, &LIMITS, &mut fx)
            .unwrap_err();
        assert_eq!(e.condition, StanzaCondition::Forbidden);
        r.owner_iq(&ann, true, &q, &LIMITS, &mut fx).unwrap();
        assert!(r.occupants.is_empty());
        assert!(fx.persist.contains(&Persist::Destroyed));
        assert!(fx.out.iter().all(|o| o.el.to_string().contains("bye")));

        let mut fresh = Room::new(
            BareJid::parse("new@conference.home").unwrap(),
            &ann.bare(),
            &LIMITS,
        );
        fresh.presence(&ann, "ann", &join_el(None), 0, true);
        let cancel = Element::new("query", NS_OWNER)
            .with_child(Element::new("x", NS_DATA).with_attr("type", "cancel"));
        let mut fx = Effects::default();
        fresh
            .owner_iq(&ann, true, &cancel, &LIMITS, &mut fx)
            .unwrap();
        assert!(fx.persist.contains(&Persist::Destroyed));
    }

    #[test]
    fn voice_requests_reach_moderators_and_approval_gives_voice() {
        let ann = full("ann@home/phone");
        let mut r = room(&[("muc#roomconfig_moderatedroom", "1")]);
        let bob = full("bob@home/pc");
        r.presence(&bob, "bob", &join_el(None), 0, false);
        let field = |var: &str, v: &str| {
            Element::new("field", NS_DATA)
                .with_attr("var", var)
                .with_child(Element::new("value", NS_DATA).with_text(v))
        };
        let ask = Element::new("message", ns::CLIENT).with_child(
            Element::new("x", NS_DATA)
                .with_attr("type", "submit")
                .with_child(field("FORM_TYPE", NS_REQUEST))
                .with_child(field("muc#role", "participant")),
        );
        let fx = r.message_to_room(&bob, &ask, 0);
        assert_eq!(fx.out.len(), 1);
        assert_eq!(fx.out[0].to.as_str(), "ann@home/phone");
        assert!(fx.out[0].el.to_string().contains("muc#request_allow"));
        let approve = Element::new("message", ns::CLIENT).with_child(
            Element::new("x", NS_DATA)
                .with_attr("type", "submit")
                .with_child(field("FORM_TYPE", NS_REQUEST))
                .with_child(field("muc#roomnick", "bob"))
                .with_child(field("muc#request_allow", "true")),
        );
        r.message_to_room(&ann, &approve, 0);
        assert_eq!(r.occupants[1].role, Role::Participant);
    }

    #[test]
    fn a_decline_goes_back_to_the_inviter() {
        let mut r = room(&[]);
        let decline = Element::new("message", ns::CLIENT).with_child(
            Element::new("x", NS_USER).with_child(
                Element::new("decline", NS_USER)
                    .with_attr("to", "ann@home")
                    .with_child(Element::new("reason", NS_USER).with_text("busy")),
            ),
        );
        let fx = r.message_to_room(&full("bob@home/pc"), &decline, 0);
        assert_eq!(fx.out.len(), 1);
        assert_eq!(fx.out[0].to.as_str(), "ann@home");
        let x = fx.out[0].el.to_string();
        assert!(x.contains("from=\"bob@home\"") && x.contains("busy"), "{x}");
    }

    #[test]
    fn delivery_errors_remove_only_occupants_that_are_gone() {
        let mut r = room(&[]);
        let bob = full("bob@home/pc");
        r.presence(&bob, "bob", &join_el(None), 0, false);
        let error = |cond: &str| {
            Element::new("message", ns::CLIENT)
                .with_attr("type", "error")
                .with_child(
                    Element::new("error", ns::CLIENT)
                        .with_child(Element::new(cond, ns::STANZA_ERRORS)),
                )
        };
        r.message_to_room(&bob, &error("resource-constraint"), 0);
        assert!(r.occupant_by_nick("bob").is_some());
        let fx = r.message_to_room(&bob, &error("service-unavailable"), 0);
        assert!(r.occupant_by_nick("bob").is_none());
        assert!(codes_to(&fx, "ann@home/phone").is_empty());
    }

    /// XEP-0421: one id per person and room, whatever the nick or device; what a client
    /// claims is replaced.
    #[test]
    fn occupant_ids_are_stable_and_the_rooms() {
        let mut r = room(&[]);
        r.secret = std::sync::Arc::from(&b"secret"[..]);
        let bob = full("bob@home/pc");
        let forged = Element::new("presence", ns::CLIENT)
            .with_child(Element::new("x", NS_MUC))
            .with_child(Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", "ann"));
        let fx = r.presence(&bob, "bob", &forged, 0, false);
        let ids = |fx: &Effects| -> Vec<String> {
            fx.out
                .iter()
                .filter(|o| o.from.as_str().ends_with("/bob"))
                .flat_map(|o| {
                    o.el.children()
                        .filter(|c| c.is("occupant-id", NS_OCCUPANT_ID))
                        .map(|c| c.attr("id").unwrap_or_default().to_owned())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let first = ids(&fx);
        assert!(!first.is_empty() && first.iter().all(|i| i == &first[0] && i != "ann"));
        let fx = r.presence(
            &bob,
            "robert",
            &Element::new("presence", ns::CLIENT),
            0,
            false,
        );
        let later: Vec<String> = fx
            .out
            .iter()
            .flat_map(|o| o.el.get_child("occupant-id", NS_OCCUPANT_ID))
            .map(|c| c.attr("id").unwrap_or_default().to_owned())
            .collect();
        assert!(later.iter().all(|i| *i == first[0]), "{later:?}");
    }
}
