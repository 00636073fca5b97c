//! The router's side of XEP-0045: `conference.<domain>` as a [`Service`] in the domain
//! table. Every stanza for the domain comes here; [`Rooms::handle`] (pure, over the
//! rooms in memory) decides what the rooms send and what must be stored; the service
//! routes the first and hands the second to its own writer thread, so
//! [`Service::receive`] never waits on the disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::MucConfig;
use super::room::{
    Affiliation, Effects, HistoryItem, Limits, NS_ADMIN, NS_MUC, NS_OWNER, NS_SELF_PING, NS_SID,
    NS_VCARD, Out, Persist, Room,
};
use super::store::{self, MucStore, StoredRoom};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::router::{Origin, Router, Service};
use crate::stanza::{IqType, Kind, Stanza, StanzaCondition, StanzaError};
use crate::storage::Storage;
use crate::xml::Element;

/// The disco features of the service itself (XEP-0045 §6.1).
pub const SERVICE_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    NS_MUC,
    NS_SID,
    NS_SELF_PING,
    ns::PING,
];

/// The household's room: `household@conference.<domain>`.
pub const HOUSEHOLD_ROOM: &str = "household";

/// Largest room vCard kept, in bytes of XML.
const MAX_VCARD_BYTES: usize = 64 * 1024;

/// The rooms of the service, in memory (persistent ones loaded at start).
pub struct Rooms {
    /// The service's domain (`conference.<domain>`).
    pub domain: String,
    /// The server's domain: its accounts may create rooms.
    pub host: String,
    pub config: MucConfig,
    pub rooms: HashMap<String, Room>,
    /// The secret XEP-0421 occupant ids are derived from (stored, so they last).
    pub secret: Arc<[u8]>,
}

fn err(cond: StanzaCondition) -> StanzaError {
    StanzaError::new(cond)
}

impl Rooms {
    pub fn new(domain: &str, host: &str, config: MucConfig) -> Rooms {
        Rooms {
            domain: domain.to_owned(),
            host: host.to_owned(),
            config,
            rooms: HashMap::new(),
            secret: Arc::from(&[][..]),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_occupants: self.config.max_occupants,
            history_length: self.config.history_length,
        }
    }

    /// Puts back a room read from storage.
    pub fn restore(&mut self, stored: StoredRoom) {
        let limits = self.limits();
        let Ok(jid) = BareJid::new(Some(&stored.name), &self.domain) else {
            return;
        };
        let mut room = Room {
            jid,
            config: super::room::Config::from_text(&stored.config, &limits),
            locked: false,
            affiliations: Default::default(),
            occupants: Vec::new(),
            subject: stored.subject,
            history: Default::default(),
            vcard: stored.vcard.as_deref().and_then(crate::xml::parse_fragment),
            counter: 0,
            pending_iqs: Default::default(),
            secret: self.secret.clone(),
        };
        for (jid, aff) in stored.affiliations {
            if let Some(a) = Affiliation::parse(&aff) {
                room.affiliations.insert(jid, a);
            }
        }
        for (id, at, xml) in stored.history {
            if let Some(el) = crate::xml::parse_fragment(&xml) {
                room.history.push_back(HistoryItem::new(id, at, &el));
            }
        }
        while room.history.len() > room.config.history_length {
            room.history.pop_front();
        }
        room.counter = room
            .history
            .iter()
            .filter_map(|h| h.id.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        self.rooms.insert(stored.name, room);
    }

    /// The household's room (the accounts issue's shared group, as a group chat): made
    /// on the household's first use, persistent, members-only, named "Household"; every
    /// account that `joined` the household becomes a member, and every one that `left`
    /// stops being one (and, in the room, is removed with 321, §9.4) unless it holds a
    /// higher affiliation given by hand. `owners` (the server's `admins`) own it, so
    /// someone may configure it. Nothing happens while the household is empty and the
    /// room does not exist. Returns what the room sends (and whether to store it) and
    /// who was just made a member and who just stopped being one.
    pub fn household_changed(
        &mut self,
        joined: &[BareJid],
        left: &[BareJid],
        owners: &[BareJid],
    ) -> (Effects, Vec<BareJid>, Vec<BareJid>) {
        let mut fx = Effects::default();
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        if !self.rooms.contains_key(HOUSEHOLD_ROOM) {
            if joined.is_empty() {
                return (fx, added, removed);
            }
            let Ok(jid) = BareJid::new(Some(HOUSEHOLD_ROOM), &self.domain) else {
                return (fx, added, removed);
            };
            let limits = self.limits();
            // Room::new names an owner; the household room's owners are the admins only.
            let service = BareJid::new(None, &self.domain).unwrap_or_else(|_| jid.clone());
            let mut room = Room::new(jid, &service, &limits);
            room.affiliations.clear();
            room.secret = self.secret.clone();
            room.locked = false;
            room.config.name = "Household".into();
            room.config.description = "Everyone in the household".into();
            room.config.persistent = true;
            room.config.members_only = true;
            room.config.allow_invites = false;
            room.config.history_length = limits.history_length;
            self.rooms.insert(HOUSEHOLD_ROOM.to_owned(), room);
            log::info!(
                "muc: room {HOUSEHOLD_ROOM}@{} made for the household",
                self.domain
            );
        }
        let Some(room) = self.rooms.get_mut(HOUSEHOLD_ROOM) else {
            return (fx, added, removed);
        };
        for o in owners {
            if room.affiliation(o) != Affiliation::Owner {
                let _ = room.set_affiliation(o, Affiliation::Owner, None, None, &mut fx);
            }
        }
        for m in joined {
            if room.affiliation(m) < Affiliation::Member
                && room
                    .set_affiliation(m, Affiliation::Member, None, None, &mut fx)
                    .is_ok()
            {
                added.push(m.clone());
            }
        }
        for m in left {
            if room.affiliation(m) == Affiliation::Member
                && room
                    .set_affiliation(
                        m,
                        Affiliation::None,
                        None,
                        Some("no longer in the household"),
                        &mut fx,
                    )
                    .is_ok()
            {
                removed.push(m.clone());
            }
        }
        fx.persist.push(Persist::Room);
        (fx, added, removed)
    }

    /// Handles one stanza `to` the service's domain or one of its rooms; `from` is the
    /// sender's address as the router vouches for it.
    pub fn handle(&mut self, from: &Jid, stanza: &Stanza, now: i64) -> (Effects, Option<String>) {
        let mut fx = Effects::default();
        let Some(to) = &stanza.to else {
            return (fx, None);
        };
        let el = &stanza.el;
        let reply_err = |fx: &mut Effects, e: StanzaError| {
            if let Some(r) = super::room::error_reply(el, e) {
                fx.out.push(Out {
                    from: to.clone(),
                    to: from.clone(),
                    el: r,
                });
            }
        };
        let Some(name) = to.local().map(str::to_owned) else {
            self.to_service(from, stanza, &mut fx);
            return (fx, None);
        };
        // Everything a room does is on behalf of someone's session: a full JID.
        let Some(real) = from.to_full() else {
            reply_err(
                &mut fx,
                err(StanzaCondition::BadRequest).with_text("rooms talk to full JIDs"),
            );
            return (fx, None);
        };
        let limits = self.limits();
        let nick = to.resource().map(str::to_owned);
        match stanza.kind {
            Kind::Presence => {
                let Some(nick) = nick else {
                    // §7.2.1: joining needs a nickname.
                    if el.attr("type").is_none() {
                        reply_err(
                            &mut fx,
                            err(StanzaCondition::JidMalformed)
                                .with_text("join as room@service/nick"),
                        );
                    }
                    return (fx, None);
                };
                let created = if self.rooms.contains_key(&name) {
                    false
                } else {
                    if el.attr("type").is_some() {
                        return (fx, None);
                    }
                    if let Err(e) = self.may_create(&real) {
                        reply_err(&mut fx, e);
                        return (fx, None);
                    }
                    let Ok(jid) = BareJid::new(Some(&name), &self.domain) else {
                        return (fx, None);
                    };
                    let mut room = Room::new(jid, &real.bare(), &limits);
                    room.secret = self.secret.clone();
                    // §10.1.1: a client that does not speak MUC gets an instant room.
                    if el.get_child("x", NS_MUC).is_none() {
                        room.locked = false;
                    }
                    self.rooms.insert(name.clone(), room);
                    log::info!(
                        "muc: room {name}@{} created by {}",
                        self.domain,
                        real.bare().as_str()
                    );
                    true
                };
                if let Some(room) = self.rooms.get_mut(&name) {
                    fx = room.presence(&real, &nick, el, now, created);
                }
            }
            Kind::Message => {
                let Some(room) = self.rooms.get_mut(&name) else {
                    reply_err(
                        &mut fx,
                        err(StanzaCondition::ItemNotFound).with_text("no such room"),
                    );
                    return (fx, None);
                };
                fx = match &nick {
                    None => room.message_to_room(&real, el, now),
                    Some(n) => room.private_message(&real, n, el),
                };
            }
            Kind::Iq => {
                let Some(ty) = stanza.iq_type() else {
                    return (fx, None);
                };
                if !ty.is_request() {
                    // An answer to an iq the room relayed between occupants (§7.x).
                    if let Some(room) = self.rooms.get_mut(&name) {
                        fx = room.relay_answer(&real, el);
                    }
                    return (fx, None);
                }
                let Some(room) = self.rooms.get_mut(&name) else {
                    reply_err(
                        &mut fx,
                        err(StanzaCondition::ItemNotFound).with_text("no such room"),
                    );
                    return (fx, None);
                };
                let payload = stanza.iq_payload();
                let result = match (&nick, payload) {
                    (Some(n), Some(_)) => match room.relay_iq(&real, n, el, now, &mut fx) {
                        // Relayed: the answer comes from the occupant asked.
                        Ok(None) => return (fx, Some(name)),
                        Ok(Some(())) => Ok(None),
                        Err(e) => Err(e),
                    },
                    (None, Some(p)) => room_iq(room, &real, ty == IqType::Set, p, &limits, &mut fx),
                    (_, None) => Err(err(StanzaCondition::BadRequest)),
                };
                match result {
                    Ok(payload) => fx.out.push(Out {
                        from: to.clone(),
                        to: from.clone(),
                        el: stanza.iq_result(payload),
                    }),
                    Err(e) => reply_err(&mut fx, e),
                }
            }
        }
        let destroyed = fx.persist.contains(&Persist::Destroyed);
        if destroyed || self.rooms.get(&name).is_some_and(Room::is_disposable) {
            self.rooms.remove(&name);
            log::info!("muc: room {name}@{} gone", self.domain);
        }
        (fx, Some(name))
    }

    /// Who may create a room (the service's limits; only this server's accounts).
    fn may_create(&self, real: &FullJid) -> Result<(), StanzaError> {
        if real.domain() != self.host {
            return Err(err(StanzaCondition::NotAllowed)
                .with_text("only this server's accounts may create rooms"));
        }
        if self.rooms.len() >= self.config.max_rooms {
            return Err(err(StanzaCondition::ResourceConstraint)
                .with_text("this service holds no more rooms"));
        }
        let bare = real.bare();
        let owned = self
            .rooms
            .values()
            .filter(|r| r.affiliation(&bare) == Affiliation::Owner)
            .count();
        if owned >= self.config.max_rooms_per_user {
            return Err(
                err(StanzaCondition::NotAllowed).with_text("you own as many rooms as you may")
            );
        }
        Ok(())
    }

    /// Stanzas to the service's own domain: disco (§6.1, §6.3), ping.
    fn to_service(&self, from: &Jid, stanza: &Stanza, fx: &mut Effects) {
        let Some(to) = &stanza.to else { return };
        if stanza.kind != Kind::Iq || !stanza.iq_type().is_some_and(IqType::is_request) {
            return;
        }
        let answer = |el: Element| Out {
            from: to.clone(),
            to: from.clone(),
            el,
        };
        let payload = stanza.iq_payload();
        let get = stanza.iq_type() == Some(IqType::Get);
        let result = match payload {
            Some(p) if get && p.is("query", ns::DISCO_INFO) && p.attr("node").is_none() => {
                let mut q = Element::new("query", ns::DISCO_INFO).with_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "conference")
                        .with_attr("type", "text")
                        .with_attr("name", "Group chats"),
                );
                for f in SERVICE_FEATURES {
                    q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
                }
                Ok(Some(q))
            }
            Some(p) if get && p.is("query", ns::DISCO_ITEMS) && p.attr("node").is_none() => {
                // §6.3: the public rooms.
                let mut names: Vec<&Room> = self
                    .rooms
                    .values()
                    .filter(|r| r.config.public && !r.locked)
                    .collect();
                names.sort_by(|a, b| a.jid.as_str().cmp(b.jid.as_str()));
                let mut q = Element::new("query", ns::DISCO_ITEMS);
                for r in names {
                    let mut item =
                        Element::new("item", ns::DISCO_ITEMS).with_attr("jid", r.jid.as_str());
                    if !r.config.name.is_empty() {
                        item.set_attr("name", r.config.name.clone());
                    }
                    q.push_child(item);
                }
                Ok(Some(q))
            }
            Some(p) if get && p.is("ping", ns::PING) => Ok(None),
            _ => Err(err(StanzaCondition::ServiceUnavailable)),
        };
        match result {
            Ok(p) => fx.out.push(answer(stanza.iq_result(p))),
            Err(e) => {
                if let Some(r) = e.reply_to(&stanza.el) {
                    fx.out.push(answer(r));
                }
            }
        }
    }
}

/// An iq to the room's bare JID: disco (§6.4, §6.5), owner (§10), admin (§8, §9),
/// the room's vCard (XEP-0054 on the room), ping.
fn room_iq(
    room: &mut Room,
    real: &FullJid,
    is_set: bool,
    p: &Element,
    limits: &Limits,
    fx: &mut Effects,
) -> Result<Option<Element>, StanzaError> {
    let aff = room.affiliation(&real.bare());
    let is_occupant = room.occupant_of(real).is_some();
    if room.locked && aff != Affiliation::Owner {
        return Err(err(StanzaCondition::ItemNotFound).with_text("no such room"));
    }
    match (p.name(), p.ns()) {
        ("query", ns::DISCO_INFO) if !is_set => {
            if p.attr("node").is_some() {
                return Err(err(StanzaCondition::ItemNotFound));
            }
            Ok(Some(room.disco_info()))
        }
        ("query", ns::DISCO_ITEMS) if !is_set => {
            // §6.5: occupants are listed to occupants only.
            let mut q = Element::new("query", ns::DISCO_ITEMS);
            if is_occupant {
                for o in &room.occupants {
                    if let Ok(j) = room.jid.with_resource(&o.nick) {
                        q.push_child(
                            Element::new("item", ns::DISCO_ITEMS).with_attr("jid", j.as_str()),
                        );
                    }
                }
            }
            Ok(Some(q))
        }
        ("query", NS_OWNER) => room.owner_iq(real, is_set, p, limits, fx),
        ("query", NS_ADMIN) => room.admin_iq(real, is_set, p, fx),
        ("vCard", NS_VCARD) => {
            if !is_set {
                return Ok(Some(
                    room.vcard
                        .clone()
                        .unwrap_or_else(|| Element::new("vCard", NS_VCARD)),
                ));
            }
            if aff != Affiliation::Owner {
                return Err(
                    err(StanzaCondition::Forbidden).with_text("owners set the room's vCard")
                );
            }
            if p.xml_len_in(ns::CLIENT) > MAX_VCARD_BYTES {
                return Err(err(StanzaCondition::NotAcceptable).with_text("the vCard is too large"));
            }
            room.vcard = (p.children().next().is_some()).then(|| p.clone());
            if room.config.persistent {
                fx.persist.push(Persist::Room);
            }
            room.avatar_changed(fx);
            Ok(None)
        }
        ("ping", ns::PING) if !is_set => Ok(None),
        ("query", crate::features::mam::NS) if is_set => room.mam_query(real, p, fx),
        ("moderate", super::archive::NS_MODERATE) | ("apply-to", super::archive::NS_FASTEN)
            if is_set =>
        {
            room.moderate(real, p, crate::storage::unix_now(), fx)
        }
        _ => Err(err(StanzaCondition::ServiceUnavailable)),
    }
}

/// A write for storage.
enum Write {
    Room(StoredRoom),
    History(String, HistoryItem, usize),
    Delete(String),
    Replace(String, HistoryItem),
}

/// `conference.<domain>` in the router's domain table.
pub struct MucService {
    rooms: Mutex<Rooms>,
    /// Where persistent rooms are written (none in unit tests).
    storage: Option<Storage>,
}

impl MucService {
    /// The service with the persistent rooms read from `storage`; with no storage, rooms
    /// live in memory only.
    pub fn new(
        domain: &str,
        host: &str,
        config: MucConfig,
        storage: Option<Storage>,
    ) -> Result<Arc<MucService>, crate::storage::StorageError> {
        let mut rooms = Rooms::new(domain, host, config);
        if let Some(storage) = &storage {
            rooms.secret = Arc::from(storage.muc_secret()?);
            for stored in storage.muc_rooms()? {
                rooms.restore(stored);
            }
            log::info!("muc: {} persistent rooms on {domain}", rooms.rooms.len());
        }
        Ok(Arc::new(MucService {
            rooms: Mutex::new(rooms),
            storage,
        }))
    }

    /// Keeps `stanza` (a message for a local account with no session online) in its
    /// offline storage, under the account's quota, without waiting for the disk; what
    /// the quota refuses is dropped (the room's invitation is not worth a bounce).
    fn store_offline(&self, router: &Router, stanza: Stanza) {
        let (Some(storage), Some(to)) = (&self.storage, &stanza.to) else {
            return;
        };
        let Some(user) = to.local().filter(|_| to.domain() == router.domain()) else {
            return;
        };
        let user = user.to_owned();
        let now = crate::storage::unix_now();
        let xml =
            crate::features::offline::stamp(stanza.el, router.domain(), now).to_xml_in(ns::CLIENT);
        let quota = *router.quota();
        let queued = storage.write_deferred(xml.len(), move |s, c| {
            crate::features::offline::store_offline_in(s, c, &user, &xml, &quota).map(|_| ())
        });
        if !queued {
            storage.flush_deferred();
        }
    }

    /// Queues `w` with the storage's deferred writes (group commit, flushed before the
    /// server exits), so routing never waits for the disk; when too many wait (a slow SD
    /// card), this writer waits for them, keeping memory bounded.
    fn write(&self, w: Write) {
        let Some(storage) = &self.storage else { return };
        let bytes = match &w {
            Write::Room(r) => r.config.len() + r.vcard.as_ref().map_or(0, String::len),
            Write::History(_, item, _) | Write::Replace(_, item) => item.xml.len(),
            Write::Delete(_) => 0,
        };
        let queued = storage.write_deferred(bytes, move |s, c| match w {
            Write::Room(room) => store::save_room(s, c, &room),
            Write::History(name, item, keep) => {
                store::add_history(s, c, &name, &item.id, item.at, &item.xml, keep)
            }
            Write::Replace(name, item) => store::replace_history(s, c, &name, &item.id, &item.xml),
            Write::Delete(name) => store::delete_room(s, c, &name),
        });
        if !queued {
            storage.flush_deferred();
        }
    }
}

/// What a room looks like in storage.
fn snapshot(room: &Room) -> StoredRoom {
    StoredRoom {
        name: room.jid.local().unwrap_or_default().to_owned(),
        config: room.config.to_text(),
        subject: room.subject.clone(),
        affiliations: room
            .affiliations
            .iter()
            .map(|(j, a)| (j.clone(), a.as_str().to_owned()))
            .collect(),
        vcard: room.vcard.as_ref().map(|v| v.to_xml_in(ns::CLIENT)),
        history: Vec::new(),
    }
}

impl Service for MucService {
    fn receive(&self, router: &Router, origin: Origin<'_>, stanza: Stanza) {
        let from = match (
            stanza.el.attr("from").and_then(|f| Jid::parse(f).ok()),
            origin,
        ) {
            (Some(f), _) => f,
            (None, Origin::Local(f)) => Jid::from(f.clone()),
            _ => return,
        };
        let now = crate::storage::unix_now();
        let (fx, writes) = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            let (fx, name) = rooms.handle(&from, &stanza, now);
            let mut writes = Vec::new();
            if let Some(name) = name {
                for p in &fx.persist {
                    match p {
                        Persist::Room => {
                            if let Some(r) = rooms.rooms.get(&name)
                                && r.config.persistent
                            {
                                writes.push(Write::Room(snapshot(r)));
                            }
                        }
                        Persist::History(item, keep) => {
                            writes.push(Write::History(name.clone(), item.clone(), *keep))
                        }
                        Persist::Replaced(item) => {
                            writes.push(Write::Replace(name.clone(), item.clone()))
                        }
                        Persist::Destroyed | Persist::Unstored => {
                            writes.push(Write::Delete(name.clone()))
                        }
                    }
                }
            }
            (fx, writes)
        };
        for w in writes {
            self.write(w);
        }
        self.send(router, fx.out);
    }
}

impl MucService {
    /// Routes what the rooms send, from the service.
    fn send(&self, router: &Router, out: Vec<Out>) {
        for out in out {
            let kind = match out.el.name() {
                "message" => Kind::Message,
                "presence" => Kind::Presence,
                _ => Kind::Iq,
            };
            let s = Stanza {
                kind,
                el: out.el,
                to: Some(out.to),
            };
            // A message nobody online could take (an invitation, §7.8.2, for someone
            // offline) waits in their offline storage like any other (XEP-0160).
            if let Some(undelivered) = router.route(Origin::Service(&out.from), s) {
                self.store_offline(router, undelivered);
            }
        }
    }

    /// The household changed (`joined` and `left` are account names of the server's
    /// domain; at start-up every member counts as joined): the household's room follows
    /// ([`Rooms::household_changed`]), and is stored. Returns the room's address, who was
    /// just made a member and who just stopped being one (account names).
    pub fn household_changed(
        &self,
        router: &Router,
        joined: &[String],
        left: &[String],
        owners: &[BareJid],
    ) -> (Option<BareJid>, Vec<String>, Vec<String>) {
        let jids = |names: &[String]| -> Vec<BareJid> {
            names
                .iter()
                .filter_map(|n| BareJid::new(Some(n), router.domain()).ok())
                .collect()
        };
        log::info!(
            "muc: household room: {} joined, {} left",
            joined.len(),
            left.len()
        );
        let (fx, write, added, removed) = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            let (fx, added, removed) = rooms.household_changed(&jids(joined), &jids(left), owners);
            let write = if fx.persist.is_empty() {
                None
            } else {
                rooms.rooms.get(HOUSEHOLD_ROOM).map(snapshot)
            };
            (fx, write, added, removed)
        };
        if let Some(room) = write {
            self.write(Write::Room(room));
        }
        self.send(router, fx.out);
        let names = |v: Vec<BareJid>| -> Vec<String> {
            v.iter()
                .filter_map(|j| j.local().map(str::to_owned))
                .collect()
        };
        let domain = self
            .rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .domain
            .clone();
        (
            BareJid::new(Some(HOUSEHOLD_ROOM), &domain).ok(),
            names(added),
            names(removed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms() -> Rooms {
        Rooms::new("conference.home", "home", MucConfig::for_domain("home"))
    }

    fn st(xml: &str) -> Stanza {
        let el = crate::xml::parse_fragment(xml).unwrap();
        Stanza::from_client(el).unwrap()
    }

    fn first_error(fx: &Effects) -> Option<String> {
        fx.out.iter().find_map(|o| {
            Some(
                o.el.get_child("error", ns::CLIENT)?
                    .children()
                    .next()?
                    .name()
                    .to_owned(),
            )
        })
    }

    #[test]
    fn the_household_room_follows_the_household() {
        let mut r = rooms();
        let b = |s: &str| BareJid::parse(s).unwrap();
        // An empty household makes no room.
        let (fx, added, _) = r.household_changed(&[], &[], &[b("root@home")]);
        assert!(fx.out.is_empty() && fx.persist.is_empty() && added.is_empty());
        assert!(r.rooms.is_empty());
        // First use: a persistent members-only room, the members and the admin in it.
        let (fx, added, _) =
            r.household_changed(&[b("ann@home"), b("bob@home")], &[], &[b("root@home")]);
        assert_eq!(fx.persist.len(), 1);
        assert_eq!(added, [b("ann@home"), b("bob@home")]);
        let room = &r.rooms[HOUSEHOLD_ROOM];
        assert!(room.config.persistent && room.config.members_only && !room.locked);
        assert_eq!(room.config.name, "Household");
        assert_eq!(room.affiliation(&b("ann@home")), Affiliation::Member);
        assert_eq!(room.affiliation(&b("root@home")), Affiliation::Owner);
        assert_eq!(room.affiliations.len(), 3, "no one else (not the service)");
        // A member joins and talks; a stranger is refused (members-only, §7.2.5).
        let bob = Jid::parse("bob@home/phone").unwrap();
        let (fx, _) = r.handle(&bob, &st("<presence to='household@conference.home/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>"), 0);
        assert_eq!(first_error(&fx), None);
        let eve = Jid::parse("eve@home/x").unwrap();
        let (fx, _) = r.handle(&eve, &st("<presence to='household@conference.home/eve'><x xmlns='http://jabber.org/protocol/muc'/></presence>"), 0);
        assert_eq!(first_error(&fx).as_deref(), Some("registration-required"));
        // bob leaves the household: no longer a member, removed from the room with 321.
        let (fx, _, removed) = r.household_changed(&[], &[b("bob@home")], &[]);
        assert_eq!(removed, [b("bob@home")]);
        let room = &r.rooms[HOUSEHOLD_ROOM];
        assert_eq!(room.affiliation(&b("bob@home")), Affiliation::None);
        assert!(room.occupant_of(&bob.to_full().unwrap()).is_none());
        assert!(
            fx.out.iter().any(|o| o.to == bob
                && o.el.attr("type") == Some("unavailable")
                && o.el.to_xml_in(ns::CLIENT).contains("code=\"321\"")),
            "{:?}",
            fx.out
        );
        // An affiliation given by hand outlives leaving the household.
        r.rooms
            .get_mut(HOUSEHOLD_ROOM)
            .unwrap()
            .affiliations
            .insert("ann@home".into(), Affiliation::Admin);
        r.household_changed(&[], &[b("ann@home")], &[]);
        assert_eq!(
            r.rooms[HOUSEHOLD_ROOM].affiliation(&b("ann@home")),
            Affiliation::Admin
        );
        // Joining again (at every start-up) changes nothing for those already in.
        r.household_changed(&[b("ann@home")], &[], &[b("root@home")]);
        assert_eq!(
            r.rooms[HOUSEHOLD_ROOM].affiliation(&b("ann@home")),
            Affiliation::Admin
        );
    }

    #[test]
    fn only_local_accounts_create_rooms() {
        let mut r = rooms();
        let from = Jid::parse("eve@elsewhere.example/x").unwrap();
        let (fx, _) = r.handle(
            &from,
            &st("<presence to='new@conference.home/eve'><x xmlns='http://jabber.org/protocol/muc'/></presence>"),
            0,
        );
        assert_eq!(first_error(&fx).as_deref(), Some("not-allowed"));
        assert!(r.rooms.is_empty());
        let from = Jid::parse("ann@home/x").unwrap();
        let (fx, _) = r.handle(
            &from,
            &st("<presence to='new@conference.home/ann'><x xmlns='http://jabber.org/protocol/muc'/></presence>"),
            0,
        );
        assert_eq!(first_error(&fx), None);
        assert_eq!(r.rooms.len(), 1);
    }

    #[test]
    fn temporary_rooms_vanish_when_empty() {
        let mut r = rooms();
        let ann = Jid::parse("ann@home/x").unwrap();
        r.handle(&ann, &st("<presence to='tmp@conference.home/ann'/>"), 0);
        assert_eq!(r.rooms.len(), 1);
        r.handle(
            &ann,
            &st("<presence type='unavailable' to='tmp@conference.home/ann'/>"),
            0,
        );
        assert!(r.rooms.is_empty());
    }

    #[test]
    fn per_user_and_total_room_limits() {
        let mut r = rooms();
        r.config.max_rooms_per_user = 1;
        let ann = Jid::parse("ann@home/x").unwrap();
        r.handle(&ann, &st("<presence to='a@conference.home/ann'/>"), 0);
        let (fx, _) = r.handle(&ann, &st("<presence to='b@conference.home/ann'/>"), 0);
        assert_eq!(first_error(&fx).as_deref(), Some("not-allowed"));
    }

    #[test]
    fn self_ping_and_missing_nick() {
        let mut r = rooms();
        let ann = Jid::parse("ann@home/x").unwrap();
        r.handle(&ann, &st("<presence to='a@conference.home/ann'/>"), 0);
        let (fx, _) = r.handle(&ann, &st("<iq type='get' id='p' to='a@conference.home/ann'><ping xmlns='urn:xmpp:ping'/></iq>"), 0);
        assert_eq!(fx.out[0].el.attr("type"), Some("result"));
        let bob = Jid::parse("bob@home/x").unwrap();
        let (fx, _) = r.handle(&bob, &st("<iq type='get' id='p' to='a@conference.home/ann'><ping xmlns='urn:xmpp:ping'/></iq>"), 0);
        assert_eq!(first_error(&fx).as_deref(), Some("not-acceptable"));
        let (fx, _) = r.handle(&bob, &st("<presence to='a@conference.home'/>"), 0);
        assert_eq!(first_error(&fx).as_deref(), Some("jid-malformed"));
    }

    /// A user of another server joins and talks like a local one (only creating is
    /// refused): the room is just a JID to the router.
    #[test]
    fn remote_occupants_join_and_talk() {
        let mut r = rooms();
        let ann = Jid::parse("ann@home/x").unwrap();
        r.handle(&ann, &st("<presence to='a@conference.home/ann'/>"), 0);
        let eve = Jid::parse("eve@elsewhere.example/x").unwrap();
        let (fx, _) = r.handle(&eve, &st("<presence to='a@conference.home/eve'><x xmlns='http://jabber.org/protocol/muc'/></presence>"), 0);
        assert_eq!(first_error(&fx), None);
        let (fx, _) = r.handle(
            &eve,
            &st("<message type='groupchat' to='a@conference.home'><body>hi</body></message>"),
            0,
        );
        let to: Vec<&str> = fx.out.iter().map(|o| o.to.as_str()).collect();
        assert_eq!(to, ["ann@home/x", "eve@elsewhere.example/x"]);
    }

    #[test]
    fn the_room_vcard_is_the_owners_to_set() {
        let mut r = rooms();
        let ann = Jid::parse("ann@home/x").unwrap();
        let bob = Jid::parse("bob@home/x").unwrap();
        r.handle(&ann, &st("<presence to='a@conference.home/ann'/>"), 0);
        let set = "<iq type='set' id='v' to='a@conference.home'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>aGk=</BINVAL></PHOTO></vCard></iq>";
        let (fx, _) = r.handle(&bob, &st(set), 0);
        assert_eq!(first_error(&fx).as_deref(), Some("forbidden"));
        let (fx, _) = r.handle(&ann, &st(set), 0);
        assert_eq!(first_error(&fx), None);
        assert!(
            fx.out
                .iter()
                .any(|o| o.el.to_string().contains("vcard-temp:x:update"))
        );
        let (fx, _) = r.handle(
            &bob,
            &st("<iq type='get' id='g' to='a@conference.home'><vCard xmlns='vcard-temp'/></iq>"),
            0,
        );
        assert!(fx.out[0].el.to_string().contains("aGk="));
    }

    #[test]
    fn iqs_between_occupants_are_relayed_and_answered() {
        let mut r = rooms();
        let ann = Jid::parse("ann@home/x").unwrap();
        let bob = Jid::parse("bob@home/y").unwrap();
        r.handle(&ann, &st("<presence to='a@conference.home/ann'/>"), 0);
        r.handle(&bob, &st("<presence to='a@conference.home/bob'/>"), 0);
        let (fx, _) = r.handle(&bob, &st("<iq type='get' id='v1' to='a@conference.home/ann'><query xmlns='jabber:iq:version'/></iq>"), 0);
        assert_eq!(fx.out.len(), 1);
        let fwd = &fx.out[0].el;
        assert_eq!(fx.out[0].to.as_str(), "ann@home/x");
        assert_eq!(fwd.attr("from"), Some("a@conference.home/bob"));
        let id = fwd.attr("id").unwrap().to_owned();
        // A stranger's answer under that id is dropped; ann's goes back to bob.
        let eve = Jid::parse("eve@home/z").unwrap();
        let answer = format!(
            "<iq type='result' id='{id}' to='a@conference.home/bob'><query xmlns='jabber:iq:version'/></iq>"
        );
        let (fx, _) = r.handle(&eve, &st(&answer), 0);
        assert!(fx.out.is_empty());
        let (fx, _) = r.handle(&ann, &st(&answer), 0);
        assert_eq!(fx.out.len(), 1);
        assert_eq!(fx.out[0].to.as_str(), "bob@home/y");
        assert_eq!(fx.out[0].el.attr("id"), Some("v1"));
        assert_eq!(fx.out[0].el.attr("from"), Some("a@conference.home/ann"));
    }

    #[test]
    fn service_disco_lists_public_rooms_only() {
        let mut r = rooms();
        let ann = Jid::parse("ann@home/x").unwrap();
        r.handle(&ann, &st("<presence to='open@conference.home/ann'/>"), 0);
        r.handle(&ann, &st("<presence to='locked@conference.home/ann'><x xmlns='http://jabber.org/protocol/muc'/></presence>"), 0);
        let (fx, _) = r.handle(&ann, &st("<iq type='get' id='d' to='conference.home'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"), 0);
        let xml = fx.out[0].el.to_string();
        assert!(
            xml.contains("open@conference.home") && !xml.contains("locked@"),
            "{xml}"
        );
    }
}
