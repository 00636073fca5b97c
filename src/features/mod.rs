//! The modules: everything the server itself does with a payload, one module per RFC part
//! or XEP (DESIGN.md "Modules").
//!
//! A module declares what it implements — the specifications with their versions and how
//! complete it is ([`Spec`]), the disco features it announces and on which entity
//! ([`Announce`]), the iq namespaces it answers ([`IqRoute`]), the stream features it adds
//! after login — and answers its iqs with an async handler. The [`Registry`] holds them:
//! disco#info, the stream features and the README's table of supported specifications are
//! all computed from these declarations, so what is announced is what is handled (a test
//! checks both ways). An iq addressed to the server or to an account that no module
//! routes gets `service-unavailable` (RFC 6120 §8.4).
//!
//! Adding a XEP means adding a module file (or folder) here and a line in
//! [`Registry::standard`].

pub mod adhoc;
pub mod avatar;
pub mod blocking;
pub mod bookmarks;
pub mod caps;
pub mod carbons;
pub mod core;
pub mod csi;
pub mod disco;
pub mod federation;
pub mod forms;
pub mod hints;
pub mod household;
pub mod invite;
pub mod last;
pub mod mam;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod push;
pub mod register;
pub mod roster;
pub mod sm;
pub mod subscription;
pub mod time;
pub mod version;
// Issue 19 without PEP: XEP-0049, XEP-0054, XEP-0157, XEP-0215.
pub mod contact;
pub mod extdisco;
pub mod private;
pub mod vcard;
// Issue 20: XEP-0363 photo sharing (and XEP-0156 host-meta on the same listener).
pub mod upload;
// Issue 21: device accounts, presence as telemetry.
pub mod device;
// Issue 20: group chat.
pub mod muc;

use std::future::Future;
use std::pin::Pin;

use crate::features::roster::RosterItem;
use crate::features::subscription::SubState;
use crate::jid::BareJid;
use crate::router::im::{Im, Sender};
use crate::stanza::{Stanza, StanzaCondition, StanzaError};
use crate::storage::StorageError;
use crate::xml::Element;

/// Whom an iq is addressed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The server's domain itself.
    Server,
    /// An account's bare JID; the server answers on its behalf (RFC 6121 §8.5.2.1.3).
    Account(BareJid),
}

/// A specification a module implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doc {
    /// An IETF RFC, by number and the part implemented (`"§2"`, or `""` for all of it).
    Rfc(u16, &'static str),
    /// An XMPP Extension Protocol, by number.
    Xep(u16),
    /// Something of hearth's own, with no specification of its own (e.g. the household,
    /// a shared roster group): its short name.
    Hearth(&'static str),
}

/// How much of a specification is implemented (as ejabberd's `-protocol` attributes and
/// Prosody's `doap` say it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Everything the specification asks of a server.
    Complete,
    /// The part [`Spec::note`] describes.
    Partial,
}

/// One specification and what of it a module does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub doc: Doc,
    /// Its title, for the README.
    pub title: &'static str,
    /// The version implemented (a XEP's revision; `""` for an RFC).
    pub version: &'static str,
    pub status: Status,
    /// What is left out, or how it is done; `""` when nothing needs saying.
    pub note: &'static str,
}

/// Which entity announces or answers something: the server's domain, every account's
/// bare JID (answered by the server on the account's behalf), or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    Server,
    Account,
    Both,
}

impl On {
    /// Whether `target` is covered.
    pub fn covers(self, target: &Target) -> bool {
        matches!(
            (self, target),
            (On::Both, _) | (On::Server, Target::Server) | (On::Account, Target::Account(_))
        )
    }
}

/// A disco feature (XEP-0030 `<feature var=…/>`) and the entity that announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce {
    pub var: &'static str,
    pub on: On,
}

/// An iq payload namespace a module answers, and for which entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IqRoute {
    pub ns: &'static str,
    pub on: On,
    /// Who may ask an account.
    pub access: Access,
}

/// Who may send an iq to an account's bare JID (the server answering on its behalf).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone the account has not blocked (XEP-0191 §3.5: a blocked sender gets what an
    /// unknown account would give).
    Anyone,
    /// Only the account itself; anyone else, on this server or another, gets `forbidden`
    /// (RFC 6121 §2.1.5 for the roster, XEP-0191 for the blocklist).
    Own,
    /// The module decides (e.g. XEP-0012: those allowed to see the presence).
    Module,
}

/// Points on a stanza's way where modules take part (DESIGN.md "Modules"), declared by
/// [`Module::hooks`]; the registry keeps, per hook, the modules that declared it, in
/// registration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Every stanza a local session sends or another server delivers, before it is
    /// routed or answered: a filter ([`Module::filter_in`]) that may stop it. Blocking
    /// (XEP-0191) is one.
    StanzaIn,
    /// A chat or normal message, from a local session or another server, for a local
    /// account with no available resource (RFC 6121 §8.5.2.2.1): the first module that
    /// declares it takes the message
    /// ([`Module::message_undelivered`]); with none, the sender gets
    /// `service-unavailable`.
    MessageUndelivered,
    /// A resource that was available went unavailable: its unavailable presence, or
    /// its session's end (RFC 6121 §4.5); [`Module::resource_unavailable`] is told
    /// whether another resource of the account is still available. XEP-0012 records
    /// "last seen" here.
    ResourceUnavailable,
    /// A user's roster as the rest of the server sees it (RFC 6121 §2 for roster gets and
    /// pushes, §4 for whom presence goes to and who may probe): the stored items, and
    /// then each module that declares this hook may add contacts or raise their
    /// subscriptions ([`Module::roster_view`], [`Module::subscription_view`]) without
    /// storing anything. The household (a shared roster group) is one, as ejabberd's
    /// `roster_get` and Prosody's `roster-load` hooks serve theirs.
    RosterView,
    /// A message from a local session, before it is routed anywhere (another account,
    /// another server, a service): [`Module::message_out`] may change it or act on it
    /// (XEP-0313 archives it for the sender, XEP-0280 copies it to the sender's other
    /// resources). Modules run in registration order.
    MessageOut,
    /// A message for a local account (its bare or a full JID), from a local session or
    /// another server, before the router delivers it or it is stored offline:
    /// [`Module::message_in`] may change it (XEP-0313 archives it for the recipient and
    /// stamps a XEP-0359 `<stanza-id/>`) or act on it (XEP-0280 copies it to the
    /// recipient's other resources). Runs after [`Hook::MessageOut`] for a message between
    /// two local accounts. Modules run in registration order.
    MessageIn,
    /// An iq result or error addressed to the server's domain or to an account's bare
    /// JID: the answer to an iq the server sent itself, on its own or on an account's
    /// behalf (a XEP-0357 push to an app server; a XEP-0115 caps query). Each module
    /// that declares it is asked in turn ([`Module::iq_response`]) until one claims the
    /// response, by the `id` it generated when it sent the request (ids should be
    /// unguessable or at least unique to the module, e.g. a prefix of its own, and the
    /// module should check `from` is whom it asked). Unclaimed responses are dropped, as
    /// RFC 6120 §8.2.3 says a response is never answered.
    IqResponse,
    /// A session's connection was lost and the session now hibernates, waiting to be
    /// resumed (XEP-0198 §5): [`Module::session_hibernated`] is given the messages it had
    /// been sent but had not acknowledged, and those waiting for it, and then, while it
    /// hibernates, the messages queued for it (its user has not seen them; XEP-0357
    /// tells the phone, as Prosody's `smacks-hibernation-start` and
    /// `smacks-hibernation-stanza-queued` do).
    SessionHibernated,
    /// A local account is being removed (XEP-0077 §3.2): [`Module::account_removed`] is
    /// called before its rows are deleted, so a module can still read them and tell
    /// others (its contacts, RFC 6121); the rows then go with the account (cascading
    /// deletes), and its sessions are closed.
    AccountRemoved,
    /// Available or unavailable broadcast presence from `cx.from` (a full JID, on this
    /// server or another) reached the local account `owner`: its own resources' presence,
    /// and its contacts' (RFC 6121 §4.2.2, §4.2.3). [`Module::presence_in`] learns who is
    /// online there and what they want (XEP-0163 §4.3: the contacts' PEP notifications).
    PresenceIn,
    /// Available presence from a local session, broadcast or directed, before it goes
    /// anywhere: [`Module::presence_out`] may add to it (XEP-0398 §4: the avatar hash of
    /// XEP-0153).
    PresenceOut,
    /// Unavailable presence from a local resource (sent, or its session's end), before
    /// it is broadcast to the contacts and directed-presence recipients (RFC 6121 §4.5.2)
    /// and before [`Hook::ResourceUnavailable`]: [`Module::presence_unavailable`] may add
    /// to it (a device's last reading, `features::device`).
    PresenceUnavailable,
    /// The unavailable presence a local account with no available resource shows a
    /// probe (RFC 6121 §4.3.2), built from its last logout (XEP-0012, XEP-0203):
    /// [`Module::offline_presence`] may change it (a device's last reading and when it
    /// was sent, `features::device`).
    OfflinePresence,
}

/// What a filter hook decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// On to the next filter, then routing.
    Pass,
    /// Stopped here (the module told the sender what the protocol says).
    Stop,
}

/// What a hook is given.
pub struct HookCx<'a> {
    /// Storage, the router and the connection's id.
    pub im: Im<'a>,
    /// Who the stanza comes from: a local session, or (for [`Hook::StanzaIn`] and
    /// [`Hook::MessageUndelivered`]) an address on another server. Always a local session
    /// for [`Hook::ResourceUnavailable`].
    pub from: Sender<'a>,
}

/// The future of a hook.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an iq handler is given.
pub struct IqCx<'a> {
    /// Storage, the router and the connection's id, for the modules whose answers
    /// depend on them.
    pub im: Im<'a>,
    /// The sender: a local session, or an address on another server (whose iqs to an
    /// account reach only the modules that let anyone ask, [`Access`]).
    pub from: Sender<'a>,
    /// Whom the iq is addressed to.
    pub target: &'a Target,
    /// The registry, for modules that describe the others (disco).
    pub registry: &'a Registry,
    /// Stanzas for the asking session to receive before the iq's answer, serialized in
    /// `jabber:client` ([`IqCx::send_ahead`]).
    pub ahead: std::sync::Mutex<String>,
}

impl IqCx<'_> {
    /// Queues stanzas (serialized as in a `jabber:client` stream) to reach the asking
    /// session before the iq's answer does: XEP-0313 §4.2's results ahead of its `<fin/>`.
    /// Only a local session gets them; for a sender elsewhere they are dropped (no module
    /// that uses this answers remote senders).
    pub fn send_ahead(&self, xml: &str) {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        ahead.push_str(xml);
    }

    /// The server's domain.
    pub fn domain(&self) -> &str {
        self.im.router.domain()
    }
}

/// An iq answer: a result with an optional payload, or an error.
pub type IqOutcome = Result<Option<Element>, StanzaError>;

/// The future of an iq handler.
pub type IqFuture<'a> = Pin<Box<dyn Future<Output = IqOutcome> + Send + 'a>>;

/// An answer known at once, as an [`IqFuture`].
pub fn ready<'a>(outcome: IqOutcome) -> IqFuture<'a> {
    Box::pin(std::future::ready(outcome))
}

/// One feature of the server.
pub trait Module: Send + Sync {
    /// A short name, for logs and tests.
    fn name(&self) -> &'static str;

    /// The specifications it implements.
    fn specs(&self) -> &'static [Spec];

    /// Disco features it announces.
    fn disco(&self) -> &'static [Announce] {
        &[]
    }

    /// Identities it adds to disco#info (XEP-0030 §3.1) of the entities given: XEP-0163
    /// §9's `pubsub/pep` on accounts.
    fn identities(&self) -> &'static [(On, disco::Identity)] {
        &[]
    }

    /// Items it adds to disco#items (XEP-0030 §4) of the entity `cx.target`, for the asker
    /// `cx.from` (XEP-0060 §5.2: an account's PEP nodes the asker may see).
    fn disco_items<'a>(&'a self, _cx: &'a IqCx<'a>) -> HookFuture<'a, Vec<Element>> {
        Box::pin(std::future::ready(Vec::new()))
    }

    /// Iq payload namespaces it answers ([`Module::handle_iq`] gets them).
    fn iqs(&self) -> &'static [IqRoute] {
        &[]
    }

    /// Stream features it adds once the client has logged in (RFC 6120 §4.3.2), e.g.
    /// roster versioning.
    fn stream_features(&self) -> Vec<Element> {
        Vec::new()
    }

    /// [`Module::stream_features`] for a module whose features depend on what the
    /// other modules declare (XEP-0115's hash of the server's disco#info).
    fn stream_features_in(&self, _registry: &Registry) -> Vec<Element> {
        self.stream_features()
    }

    /// The hooks it takes part in ([`Module::filter_in`] and the others are called only
    /// for these).
    fn hooks(&self) -> &'static [Hook] {
        &[]
    }

    /// [`Hook::StanzaIn`]: looks at a stanza before it goes on. `access` is who may ask,
    /// when it is an iq a module answers. Answers to the sender go through
    /// `Im::answer` (into `out` for a local session, routed for a remote sender) or the
    /// router's bounces.
    fn filter_in<'a>(
        &'a self,
        _cx: &'a HookCx<'a>,
        _stanza: &'a Stanza,
        _access: Option<Access>,
        _out: &'a mut String,
    ) -> HookFuture<'a, Verdict> {
        Box::pin(std::future::ready(Verdict::Pass))
    }

    /// [`Hook::MessageUndelivered`]: takes a message nobody online could receive.
    fn message_undelivered<'a>(&'a self, cx: &'a HookCx<'a>, stanza: Stanza) -> HookFuture<'a, ()> {
        Box::pin(async move {
            cx.im.router.bounce(
                cx.from.origin(),
                &stanza,
                StanzaCondition::ServiceUnavailable,
            )
        })
    }

    /// [`Hook::ResourceUnavailable`]: `cx.from` went unavailable with `presence` (its
    /// `<status/>` is what the user said last); `others_available` when the account is
    /// still online elsewhere.
    fn resource_unavailable<'a>(
        &'a self,
        _cx: &'a HookCx<'a>,
        _presence: &'a Element,
        _others_available: bool,
    ) -> HookFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// [`Hook::RosterView`]: `user`'s roster, `items` sorted by JID as stored (and as
    /// earlier modules left them); the module may add items (keeping the order) or
    /// change them. An error leaves the roster unread: a roster get fails rather than
    /// hand a client a partial roster under a version it would cache.
    fn roster_view<'a>(
        &'a self,
        _im: Im<'a>,
        _user: &'a str,
        _items: &'a mut Vec<RosterItem>,
    ) -> HookFuture<'a, Result<(), StorageError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// [`Hook::RosterView`] for one contact: `state` is `user`'s subscription with
    /// `contact` as stored; the module may raise it as its [`Module::roster_view`] does.
    fn subscription_view<'a>(
        &'a self,
        _im: Im<'a>,
        _user: &'a str,
        _contact: &'a BareJid,
        _state: &'a mut SubState,
    ) -> HookFuture<'a, Result<(), StorageError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// [`Hook::MessageOut`]: `stanza` (a message, `from` the local session `cx.from`) is
    /// about to be routed.
    fn message_out<'a>(
        &'a self,
        _cx: &'a HookCx<'a>,
        _stanza: &'a mut Stanza,
    ) -> HookFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// [`Hook::MessageIn`]: `stanza` (a message whose `to` is the local account `to`) is
    /// about to be delivered or stored offline.
    fn message_in<'a>(
        &'a self,
        _cx: &'a HookCx<'a>,
        _to: &'a BareJid,
        _stanza: &'a mut Stanza,
    ) -> HookFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// [`Hook::IqResponse`]: `stanza` is an iq `result` or `error` for the server or the
    /// account `cx` names as target (its `to`); true when it answers a request this module
    /// sent (it is then the module's alone), false to let the next module look.
    fn iq_response<'a>(&'a self, _cx: &'a HookCx<'a>, _stanza: &'a Stanza) -> HookFuture<'a, bool> {
        Box::pin(std::future::ready(false))
    }

    /// [`Hook::SessionHibernated`]: the session `cx.from` hibernates; `waiting` are the
    /// messages it had not acknowledged or not yet been written when its connection went
    /// (`queued` false), or those queued for it since (`queued` true), oldest first.
    fn session_hibernated<'a>(
        &'a self,
        _cx: &'a HookCx<'a>,
        _waiting: &'a [Element],
        _queued: bool,
    ) -> HookFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// XEP-0030 §3.2, §4.2: the disco#info (`is_info`) or disco#items answer for a
    /// `node` of the entity asked, when the node is this module's (the ad-hoc commands
    /// list, a command); `None` otherwise. The disco module asks each module in turn.
    fn disco_node(&self, _cx: &IqCx<'_>, _node: &str, _is_info: bool) -> Option<IqOutcome> {
        None
    }

    /// XEP-0128: data forms the server's disco#info carries (a `type='result'` form with a
    /// hidden `FORM_TYPE`, XEP-0157's contact addresses), computed when the registry is
    /// built; XEP-0115's hash covers them.
    fn disco_forms(&self) -> Vec<Element> {
        Vec::new()
    }

    /// [`Hook::AccountRemoved`]: `account` (a local bare JID) is about to be deleted;
    /// `cx.from` is the session that asked.
    fn account_removed<'a>(
        &'a self,
        _cx: &'a HookCx<'a>,
        _account: &'a BareJid,
    ) -> HookFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// [`Hook::PresenceIn`]: `presence` from `cx.from` reached the local accounts
    /// `owners` (one call for all of them: a broadcast reaches many).
    fn presence_in<'a>(
        &'a self,
        _cx: &'a HookCx<'a>,
        _owners: &'a [BareJid],
        _presence: &'a Element,
    ) -> HookFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// [`Hook::PresenceOut`]: `stanza` (available presence from the local session
    /// `cx.from`) is about to be broadcast or sent.
    fn presence_out<'a>(
        &'a self,
        _cx: &'a HookCx<'a>,
        _stanza: &'a mut Stanza,
    ) -> HookFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// [`Hook::PresenceUnavailable`]: `presence` (unavailable, from the local session
    /// `cx.from`) is about to be broadcast; `others_available` when the account is still
    /// online elsewhere.
    fn presence_unavailable<'a>(
        &'a self,
        _cx: &'a HookCx<'a>,
        _presence: &'a mut Element,
        _others_available: bool,
    ) -> HookFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// [`Hook::OfflinePresence`]: `presence` is what the local account `user`, offline,
    /// is about to show a prober.
    fn offline_presence<'a>(
        &'a self,
        _im: Im<'a>,
        _user: &'a str,
        _presence: &'a mut Element,
    ) -> HookFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Answers an iq get or set whose payload is in one of its [`Module::iqs`]
    /// namespaces, addressed to an entity the route covers.
    fn handle_iq<'a>(&'a self, _cx: &'a IqCx<'a>, _iq: &'a Stanza) -> IqFuture<'a> {
        ready(Err(StanzaError::new(StanzaCondition::ServiceUnavailable)))
    }
}

/// The settings of the modules that keep an account's data and describe the server
/// (`[private_storage]`, `[vcard]`, `[contact]`, `[[external_services]]`, `[pep]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleSettings {
    pub private_storage: private::PrivateConfig,
    pub vcard: vcard::VcardConfig,
    pub contact: contact::ContactAddresses,
    pub external_services: Vec<extdisco::ExternalService>,
    /// `[pep]` (XEP-0163).
    pub pep: pep::PepConfig,
    /// `[push]` (XEP-0357).
    pub push: push::PushConfig,
    /// `[upload]` (XEP-0363).
    pub upload: upload::UploadConfig,
    /// `[devices]` (device accounts, presence as telemetry).
    pub devices: device::DeviceConfig,
    /// `[muc]` (XEP-0045).
    pub muc: muc::MucConfig,
}

/// The registered modules and what they declare, computed once.
pub struct Registry {
    modules: Vec<Box<dyn Module>>,
    /// Per hook, the indexes of the modules that declared it, in order.
    hooked: Vec<(Hook, Vec<usize>)>,
    /// Iq namespace → (module index, the entities it answers for).
    routes: Vec<(&'static str, usize, IqRoute)>,
    server_disco: Vec<&'static str>,
    account_disco: Vec<&'static str>,
    /// The modules' XEP-0128 forms for the server's disco#info, in module order.
    server_forms: Vec<Element>,
}

impl Registry {
    /// A registry of `modules`. Panics if two modules route the same namespace: that is a
    /// bug in [`Registry::standard`], caught by its unit test.
    pub fn new(modules: Vec<Box<dyn Module>>) -> Registry {
        let mut routes = Vec::new();
        for (i, m) in modules.iter().enumerate() {
            for r in m.iqs() {
                assert!(
                    routes.iter().all(|(ns, _, _)| *ns != r.ns),
                    "two modules answer {}",
                    r.ns
                );
                routes.push((r.ns, i, *r));
            }
        }
        let disco = |on_server: bool| {
            let mut v: Vec<&'static str> = modules
                .iter()
                .flat_map(|m| m.disco())
                .filter(|a| match a.on {
                    On::Both => true,
                    On::Server => on_server,
                    On::Account => !on_server,
                })
                .map(|a| a.var)
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let server_disco = disco(true);
        let account_disco = disco(false);
        let mut hooked: Vec<(Hook, Vec<usize>)> = Vec::new();
        for (i, m) in modules.iter().enumerate() {
            for h in m.hooks() {
                match hooked.iter_mut().find(|(k, _)| k == h) {
                    Some((_, list)) => list.push(i),
                    None => hooked.push((*h, vec![i])),
                }
            }
        }
        let server_forms = modules.iter().flat_map(|m| m.disco_forms()).collect();
        Registry {
            modules,
            hooked,
            routes,
            server_disco,
            account_disco,
            server_forms,
        }
    }

    /// Everything hearth does today, with the default settings: the household's default
    /// group, no admins, registration (XEP-0077) with the default policy, and password
    /// hashing on small pools of their own (tests, the README's table).
    pub fn standard() -> Registry {
        let passwords =
            crate::password::PasswordChecks::new(crate::password::PasswordCheckConfig {
                at_once: 1,
                queue: 4,
            });
        Registry::configured(
            &household::HouseholdConfig::default(),
            adhoc::Adhoc::new(Vec::new(), passwords),
            register::Register::standalone(),
            &mam::ArchiveConfig::default(),
            &ModuleSettings::default(),
        )
    }

    /// Everything hearth does, with the modules' settings from the configuration: the
    /// household's group, the ad-hoc commands' admins, registration, and the server's
    /// bounded password threads, the archive's and push notifications' (XEP-0357)
    /// settings. The archive comes before the modules that copy messages (XEP-0280
    /// carbons), so copies carry its `<stanza-id/>`.
    pub fn configured(
        household: &household::HouseholdConfig,
        adhoc: adhoc::Adhoc,
        register: register::Register,
        archive: &mam::ArchiveConfig,
        settings: &ModuleSettings,
    ) -> Registry {
        Registry::new(vec![
            Box::new(core::Core),
            Box::new(disco::Disco),
            Box::new(caps::Caps),
            Box::new(ping::Ping),
            Box::new(version::Version),
            Box::new(time::Time),
            Box::new(roster::RosterModule),
            Box::new(subscription::Subscriptions),
            Box::new(presence::Presence),
            Box::new(offline::Offline),
            Box::new(blocking::Blocking),
            Box::new(last::Last),
            Box::new(federation::Federation),
            Box::new(household::HouseholdModule::new(household)),
            Box::new(adhoc),
            Box::new(register),
            Box::new(invite::Invite),
            Box::new(hints::Hints),
            Box::new(sm::StreamManagement),
            // Before carbons: the archive stamps its <stanza-id/> on the original.
            Box::new(mam::Mam::new(archive)),
            // Last among the message modules: a received copy carries what the others
            // (the archive's <stanza-id/>) put on the original.
            Box::new(carbons::Carbons),
            Box::new(csi::Csi),
            Box::new(private::Private::new(&settings.private_storage)),
            Box::new(vcard::Vcard::new(&settings.vcard)),
            Box::new(contact::Contact::new(&settings.contact)),
            Box::new(extdisco::ExtDisco::new(&settings.external_services)),
            Box::new(pep::Pep::new(&settings.pep)),
            // After PEP and vCards: converts between the two (XEP-0398).
            Box::new(avatar::Avatar::new(&settings.vcard)),
            // Before private storage answers: storage:bookmarks is served from PEP.
            Box::new(bookmarks::Bookmarks),
            // Last: it looks at a message once the others (the archive, carbons) have.
            Box::new(push::Push::new(&settings.push)),
            Box::new(upload::Upload::new(&settings.upload)),
            Box::new(device::Device::new(&settings.devices)),
            Box::new(muc::Muc::new(&settings.muc)),
        ])
    }

    /// The module that answers an iq with this payload for `target`, if any.
    pub fn iq_module(&self, payload: &Element, target: &Target) -> Option<&dyn Module> {
        Registry::answering(self.iq_route(payload), target)
    }

    /// Of a route found by [`Registry::iq_route`], the module if it answers for `target`.
    pub fn answering<'a>(
        route: Option<(&'a dyn Module, IqRoute)>,
        target: &Target,
    ) -> Option<&'a dyn Module> {
        route
            .filter(|(_, route)| route.on.covers(target))
            .map(|(m, _)| m)
    }

    /// The module whose namespace `payload` is in, and its route, whatever the target.
    pub fn iq_route(&self, payload: &Element) -> Option<(&dyn Module, IqRoute)> {
        self.routes
            .iter()
            .find(|(ns, _, _)| *ns == payload.ns())
            .and_then(|(_, i, route)| Some((&**self.modules.get(*i)?, *route)))
    }

    /// The modules that take part in `hook`, in order.
    pub fn hooked(&self, hook: Hook) -> impl Iterator<Item = &dyn Module> {
        self.hooked
            .iter()
            .filter(move |(h, _)| *h == hook)
            .flat_map(|(_, list)| list.iter())
            .filter_map(|i| self.modules.get(*i))
            .map(|m| &**m)
    }

    /// The disco features `target` announces, sorted.
    pub fn disco_features(&self, target: &Target) -> &[&'static str] {
        match target {
            Target::Server => &self.server_disco,
            Target::Account(_) => &self.account_disco,
        }
    }

    /// The XEP-0128 forms `target`'s disco#info carries (only the server has any).
    pub fn disco_forms(&self, target: &Target) -> &[Element] {
        match target {
            Target::Server => &self.server_forms,
            Target::Account(_) => &[],
        }
    }

    /// The stream features after login, in module order.
    pub fn stream_features(&self) -> Vec<Element> {
        self.modules
            .iter()
            .flat_map(|m| m.stream_features_in(self))
            .collect()
    }

    /// The modules, in order.
    pub fn modules(&self) -> impl Iterator<Item = &dyn Module> {
        self.modules.iter().map(|m| &**m)
    }

    /// The README's table of supported specifications: one row per specification,
    /// RFCs first, then XEPs by number, then hearth's own features.
    pub fn spec_table(&self) -> String {
        let mut specs: Vec<(Spec, &'static str)> = self
            .modules
            .iter()
            .flat_map(|m| m.specs().iter().map(move |s| (*s, m.name())))
            .collect();
        let key = |d: &Doc| match d {
            Doc::Rfc(n, part) => (0, *n, *part),
            Doc::Xep(n) => (1, *n, ""),
            Doc::Hearth(name) => (2, 0, *name),
        };
        specs.sort_by_key(|(s, _)| key(&s.doc));
        let mut t = String::from(
            "| specification | title | version | status | module | notes |\n\
             | --- | --- | --- | --- | --- | --- |\n",
        );
        for (s, module) in specs {
            let doc = match s.doc {
                Doc::Rfc(n, "") => format!("RFC {n}"),
                Doc::Rfc(n, part) => format!("RFC {n} {part}"),
                Doc::Xep(n) => format!("XEP-{n:04}"),
                Doc::Hearth(name) => format!("hearth: {name}"),
            };
            let status = match s.status {
                Status::Complete => "complete",
                Status::Partial => "partial",
            };
            let version = if s.version.is_empty() {
                "—"
            } else {
                s.version
            };
            t.push_str(&format!(
                "| {doc} | {} | {version} | {status} | `{module}` | {} |\n",
                s.title, s.note
            ));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns;

    fn account() -> Target {
        Target::Account(BareJid::new(Some("alice"), "home.example").unwrap())
    }

    #[test]
    fn every_module_names_what_it_implements() {
        let r = Registry::standard();
        for m in r.modules() {
            assert!(
                !m.specs().is_empty(),
                "{} declares no specification",
                m.name()
            );
        }
    }

    /// Disco is computed from what modules route: every namespace a module answers is
    /// announced (on the entity it answers for, or on the server for what a client sends to
    /// its own account, as XEP-0191 §2 has it), and every announced feature belongs to a
    /// module that handles it (an iq route, or a behaviour with no iq of its own, declared
    /// as such).
    #[test]
    fn disco_announces_exactly_what_is_handled() {
        let r = Registry::standard();
        let server = r.disco_features(&Target::Server);
        let accounts = r.disco_features(&account());
        for (ns, _, route) in &r.routes {
            if NOT_ANNOUNCED.contains(ns) {
                continue;
            }
            if route.on.covers(&Target::Server) {
                assert!(server.contains(ns), "{ns} is answered but not announced");
            }
            if route.on.covers(&account()) {
                assert!(
                    accounts.contains(ns) || server.contains(ns),
                    "{ns} is answered for accounts but not announced"
                );
            }
        }
        for var in server.iter().chain(accounts) {
            let routed = r.routes.iter().any(|(ns, _, _)| {
                ns == var
                    || var
                        .strip_prefix(ns)
                        .is_some_and(|rest| rest.starts_with('#'))
            });
            assert!(
                routed || WITHOUT_IQ.contains(var),
                "{var} is announced but no module answers it"
            );
        }
        for var in accounts {
            // XEP-0060 §10: `pubsub#publish` and the like name parts of a routed
            // namespace.
            let routed = r.routes.iter().any(|(ns, _, route)| {
                let part = var
                    .strip_prefix(ns)
                    .is_some_and(|rest| rest.starts_with('#'));
                (ns == var || part) && route.on.covers(&account())
            });
            assert!(
                routed || WITHOUT_IQ.contains(var),
                "{var} is announced on accounts, which do not answer it"
            );
        }
    }

    /// Namespaces answered but not announced: RFC 6121's roster is a core protocol,
    /// advertised as stream features (`ver`, `sub`), not in disco; XEP-0060's owner
    /// namespace is announced through its parts (`pubsub#config-node`, …, §10).
    const NOT_ANNOUNCED: &[&str] = &[roster::NS_ROSTER, pep::NS_OWNER];

    /// Features announced for behaviour that has no iq: offline storage (XEP-0160), the
    /// archive's stanza ids (XEP-0359) and extended query fields (XEP-0313 §7.1).
    /// XEP-0398's conversion and XEP-0402's bookmarks compatibility are behaviour of
    /// other modules' iqs (PEP, vCards, private storage).
    const WITHOUT_IQ: &[&str] = &[
        offline::MSGOFFLINE,
        mam::NS_SID,
        mam::NS_EXTENDED,
        avatar::NS_CONVERSION,
        bookmarks::NS_COMPAT,
    ];

    #[test]
    fn routes_follow_the_target() {
        let r = Registry::standard();
        let version = Element::new("query", ns::VERSION);
        assert_eq!(
            r.iq_module(&version, &Target::Server).map(|m| m.name()),
            Some("version")
        );
        // An account's software is its client's to tell.
        assert!(r.iq_module(&version, &account()).is_none());
        let ping = Element::new("ping", ns::PING);
        assert!(r.iq_module(&ping, &account()).is_some());
        assert!(
            r.iq_module(&Element::new("query", "urn:example:none"), &Target::Server)
                .is_none()
        );
    }

    #[test]
    fn spec_table_lists_rfcs_then_xeps() {
        let t = Registry::standard().spec_table();
        let rfc = t.find("| RFC 6121").unwrap();
        let xep = t.find("| XEP-0030").unwrap();
        assert!(rfc < xep, "{t}");
        assert!(t.contains("| XEP-0199 | XMPP Ping |"), "{t}");
    }

    /// The README carries the table `spec_table` makes, between its markers. Run with
    /// `HEARTH_UPDATE_README=1` to rewrite it after changing a module's declarations.
    #[test]
    fn readme_table_matches_the_modules() {
        const BEGIN: &str = "<!-- specs: generated from the modules (src/features) -->\n";
        const END: &str = "<!-- /specs -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let table = Registry::standard().spec_table();
        let (Some(b), Some(e)) = (readme.find(BEGIN), readme.find(END)) else {
            panic!("README.md has no {BEGIN:?} … {END:?} section");
        };
        let current = &readme[b + BEGIN.len()..e];
        if current != table {
            if std::env::var_os("HEARTH_UPDATE_README").is_some() {
                let updated = format!("{}{table}{}", &readme[..b + BEGIN.len()], &readme[e..]);
                std::fs::write(path, updated).unwrap();
            } else {
                panic!(
                    "README.md's table of specifications is out of date; rerun with \
                     HEARTH_UPDATE_README=1. It should read:\n{table}"
                );
            }
        }
    }
}
