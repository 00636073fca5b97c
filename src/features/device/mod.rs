//! Device accounts (hearth issue 21): sensors that log in and report through presence.
//!
//! `hearth device add NAME [--household]` makes an account with a generated password and
//! marks it a device ([`Devices`], migrations/0013_device.sql). A device then has a
//! restricted role, enforced here for every stanza one of its sessions sends (a client
//! connection or the MQTT listener: both take `router::im`'s way, through
//! [`Hook::StanzaIn`]):
//! - **no federation**, either way: a stanza to another server is refused with
//!   `not-allowed` (RFC 6120 §8.3.3.9); one from another server to a device gets what an
//!   unknown account gives (`service-unavailable` for messages and iqs, RFC 6121
//!   §8.5.1), and its presence is dropped, but for probes: those the server answers
//!   under the usual subscription check, so a remote subscriber (one from before the
//!   account was a device) gets the last reading like a local one;
//! - **the household only**: messages, subscription requests and approvals
//!   (`subscribe`, `subscribed`) and directed available presence to an account outside
//!   the household (or from a device outside it) are refused with `forbidden` (§8.3.3.6)
//!   and a text saying so; nothing is delivered. Its own account, the server itself, and
//!   iqs to accounts' bare JIDs (answered by the server under its own rules) stay open.
//!   This server's services (group chat, upload) take its iqs, not its messages or
//!   presence (`not-allowed`);
//! - **the owner's account**: a device does not change its password or remove its
//!   account itself (XEP-0077 §3.2, §3.3: `not-allowed`); `hearth device password` and
//!   `hearth device remove` do;
//! - **a presence rate**: at most `[devices] presence_burst` broadcast presences at
//!   once, then one per `presence_interval_secs` ([`rate`]). Excess presence is
//!   answered with a presence error, `policy-violation` of type `wait`, whose text says
//!   the rule and when the next one will pass, and is not broadcast. Refusing rather than
//!   coalescing (keeping the latest and sending it when the interval ends): no timer or
//!   task per device, the device learns at once that it sends too often (its log shows
//!   it), and a contact never sees a reading later than it was taken. The cost: in a
//!   burst the refused reading is lost until the device's next one.
//!
//! Presence is the telemetry channel ([`telemetry`]: `<status/>` for people, a
//! `<telemetry xmlns='urn:hearth:telemetry:0'/>` element for programs). It reaches the
//! subscribers unchanged; only its size limits are enforced (`policy-violation`), as a
//! server passes any presence extension it does not own.
//!
//! Sleepy devices: a battery sensor wakes, connects, sends presence, disconnects. Its
//! last broadcast presence (status and telemetry) is kept in memory while it is online
//! and stored ([`Devices::set_device_presence`]) when it first reports, then at most once
//! per `[devices] store_interval_secs`, and always when it goes offline if the latest was
//! not written yet: a sensor that reports every few seconds does not wear the SD card,
//! and a sleepy one costs one write per wake. It is served:
//! - in the unavailable presence broadcast when the device's last resource goes offline
//!   ([`Hook::PresenceUnavailable`]): its status and telemetry (unless the device's own
//!   unavailable presence says something), so contact lists keep "21.5 °C" rather than
//!   a bare "offline";
//! - to probes while it is offline, so at each subscriber's login and to other
//!   servers' probes alike ([`Hook::OfflinePresence`], RFC 6121 §4.3.2): unavailable
//!   with its last status, telemetry and a XEP-0203 `<delay/>` stamped with when it was
//!   sent; it survives restarts;
//! - through XEP-0012 (`features::last`): the status recorded at logout is the one the
//!   unavailable broadcast carried, so "seconds since" and the reading's text.
//!
//! This is for devices only: a person's last presence is not kept beyond XEP-0012's
//! logout status (a phone's "away" an hour later is no news; a thermometer's last
//! reading is).

mod rate;
mod store;
pub mod telemetry;
#[cfg(test)]
mod tests;

pub use rate::{PresenceRate, RateState};
pub use store::{DeviceRow, Devices, StoredPresence};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Access, Doc, Hook, HookCx, HookFuture, Module, Spec, Status, Verdict};
use crate::features::household::Household as _;
use crate::features::presence;
use crate::jid::Jid;
use crate::ns;
use crate::router::Domain;
use crate::router::im::{Im, Sender, on_pool};
use crate::stanza::{ErrorType, Kind, Stanza, StanzaCondition, StanzaError};
use crate::storage::unix_now;
use crate::xml::Element;

/// `[devices]`: the rules for device accounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// One broadcast presence per this, sustained (`presence_interval_secs`).
    pub presence_interval: Duration,
    /// How many may come at once after a quiet spell (`presence_burst`).
    pub presence_burst: u32,
    /// A device that stays online has its latest presence stored at most this often
    /// (`store_interval_secs`); going offline stores it at once.
    pub store_interval: Duration,
}

impl Default for DeviceConfig {
    /// One presence per 10 s after a burst of 3 (a sensor's start-up: initial presence,
    /// first reading, a correction): a sensor in a loop reaches each phone six times a
    /// minute at most. Stored at most every 5 minutes while online: about 300 small
    /// writes a day for a sensor that never sleeps.
    fn default() -> Self {
        DeviceConfig {
            presence_interval: Duration::from_secs(10),
            presence_burst: 3,
            store_interval: Duration::from_secs(300),
        }
    }
}

/// How long an answer to "is this account a device" is kept. Accounts are made devices
/// when created (`hearth device add`), so a new account's first stanza always reads it
/// afresh; this bounds how long an account deleted and made again under the same name
/// (the other kind) while the server had it in mind is taken for what it was, at the
/// cost of one small read per active account per period.
const KIND_TTL: Duration = Duration::from_secs(5);
/// Accounts whose kind is kept in memory, at most (then the stale ones are forgotten).
const MAX_KINDS: usize = 4096;

/// The device module.
pub struct Device {
    rate: PresenceRate,
    store_interval: Duration,
    /// Localpart → whether it is a device, and when that was read.
    kinds: Mutex<HashMap<String, (bool, Instant)>>,
    /// Per device account (a handful, made by the owner): its rate and its latest
    /// presence. Kept across its sessions, so reconnecting does not reset the rate.
    states: Mutex<HashMap<String, DeviceState>>,
}

#[derive(Default)]
struct DeviceState {
    rate: RateState,
    /// The latest broadcast presence while online.
    last: Option<StoredPresence>,
    /// Whether `last` is newer than what storage has.
    dirty: bool,
    /// When a presence was last written.
    written_at: Option<Instant>,
}

/// Where a device's stanza goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// Its own account, or the server itself.
    Own,
    /// Another account in the household (and the device is in it).
    Household,
    /// An account of this server outside the device's household.
    Outsider,
    /// One of this server's services.
    Service,
    /// Another server.
    Remote,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Device {
    pub fn new(config: &DeviceConfig) -> Device {
        Device {
            rate: PresenceRate {
                interval: config.presence_interval,
                burst: config.presence_burst,
            },
            store_interval: config.store_interval,
            kinds: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `user` is a device account (kept [`KIND_TTL`]). Storage failing to tell
    /// is logged and taken as no: every account's stanzas would be refused otherwise.
    async fn is_device(&self, im: Im<'_>, user: &str) -> bool {
        let now = Instant::now();
        if let Some((is, at)) = lock(&self.kinds).get(user)
            && now.saturating_duration_since(*at) < KIND_TTL
        {
            return *is;
        }
        let u = user.to_owned();
        let is = match on_pool(im.storage, move |s| s.is_device(&u)).await {
            Ok(is) => is,
            Err(e) => {
                log::error!("device: storage: {e}");
                return false;
            }
        };
        let mut kinds = lock(&self.kinds);
        if kinds.len() >= MAX_KINDS {
            kinds.retain(|_, (_, at)| now.saturating_duration_since(*at) < KIND_TTL);
            if kinds.len() >= MAX_KINDS {
                kinds.clear();
            }
        }
        kinds.insert(user.to_owned(), (is, now));
        is
    }

    /// Where `to` is, for the device `user`.
    async fn reach(&self, im: Im<'_>, user: &str, to: Option<&Jid>) -> Reach {
        let Some(to) = to else { return Reach::Own };
        match im.router.domain_kind(to.domain()) {
            Domain::Remote => Reach::Remote,
            Domain::Service(_) => Reach::Service,
            Domain::Host => match to.local() {
                None => Reach::Own,
                Some(other) if other == user => Reach::Own,
                Some(other) => {
                    let members = household(im).await;
                    let is_member =
                        |u: &str| members.binary_search_by(|m| m.as_str().cmp(u)).is_ok();
                    if is_member(user) && is_member(other) {
                        Reach::Household
                    } else {
                        Reach::Outsider
                    }
                }
            },
        }
    }

    /// The rules for a stanza from the device `user`'s session.
    async fn device_stanza(
        &self,
        cx: &HookCx<'_>,
        user: &str,
        stanza: &Stanza,
        out: &mut String,
    ) -> Verdict {
        let ty = stanza.el.attr("type");
        // RFC 6120 §8.3.1: an error is never answered, nor an iq result; where a device
        // may not send one, it is dropped.
        let is_response = ty == Some("error") || (stanza.kind == Kind::Iq && ty == Some("result"));
        let reach = self.reach(cx.im, user, stanza.to.as_ref()).await;
        let is_registration_change = stanza.kind == Kind::Iq
            && ty == Some("set")
            && stanza
                .iq_payload()
                .is_some_and(|p| p.ns() == crate::features::register::NS_REGISTER);
        let refusal = match (reach, stanza.kind) {
            // XEP-0077 §3.2, §3.3: a device does not change its password or remove its
            // account; the owner does, with `hearth device password|remove`.
            _ if is_registration_change => {
                Some(StanzaError::new(StanzaCondition::NotAllowed).with_text(
                    "a device account's password and removal are the owner's \
                     (hearth device password|remove)",
                ))
            }
            (Reach::Remote, _) => Some(
                StanzaError::new(StanzaCondition::NotAllowed)
                    .with_text("a device account does not talk to other servers"),
            ),
            (Reach::Service, Kind::Message | Kind::Presence) => Some(
                StanzaError::new(StanzaCondition::NotAllowed)
                    .with_text("a device account does not message or join this server's services"),
            ),
            (Reach::Outsider, Kind::Message) => Some(
                StanzaError::new(StanzaCondition::Forbidden)
                    .with_text("a device account may message only its household"),
            ),
            (Reach::Outsider, Kind::Presence)
                if matches!(ty, None | Some("subscribe" | "subscribed")) =>
            {
                Some(StanzaError::new(StanzaCondition::Forbidden).with_text(
                    "a device account may subscribe and send presence only inside its household",
                ))
            }
            (Reach::Outsider, Kind::Iq) if stanza.to.as_ref().is_some_and(|t| !t.is_bare()) => {
                Some(StanzaError::new(StanzaCondition::Forbidden).with_text(
                    "a device account may send iqs to others' resources only inside its household",
                ))
            }
            _ => None,
        };
        if let Some(e) = refusal {
            if !is_response {
                refuse(cx, stanza, out, e);
            }
            return Verdict::Stop;
        }
        if stanza.kind != Kind::Presence || ty.is_some() {
            return Verdict::Pass;
        }
        if let Some(t) = telemetry::find(&stanza.el)
            && let Err(e) = telemetry::check_limits(t)
        {
            let text = e.to_string();
            refuse(
                cx,
                stanza,
                out,
                StanzaError::new(StanzaCondition::PolicyViolation).with_text(text),
            );
            return Verdict::Stop;
        }
        let is_broadcast = match &stanza.to {
            None => true,
            Some(to) => to.is_bare() && reach == Reach::Own && to.local() == Some(user),
        };
        if !is_broadcast {
            return Verdict::Pass;
        }
        let now = Instant::now();
        let checked = {
            let mut states = lock(&self.states);
            let st = states.entry(user.to_owned()).or_default();
            self.rate.check(&mut st.rate, now)
        };
        if let Err(wait) = checked {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut e = StanzaError::new(StanzaCondition::PolicyViolation).with_text(format!(
                "a device may send presence {} at once, then one every {} s; the next in {secs} s",
                self.rate.burst.max(1),
                self.rate.interval.as_secs()
            ));
            e.kind = ErrorType::Wait;
            log::debug!("c2s{}: device {user}: presence over its rate", cx.im.conn);
            refuse(cx, stanza, out, e);
            return Verdict::Stop;
        }
        self.remember(cx.im, user, &stanza.el, now).await;
        Verdict::Pass
    }

    /// Keeps the device's latest broadcast presence, and stores it if it is its first
    /// or the last write is older than the store interval.
    async fn remember(&self, im: Im<'_>, user: &str, el: &Element, now: Instant) {
        let last = StoredPresence {
            sent_at: unix_now(),
            status: presence::status(el),
            telemetry: telemetry::find(el)
                .map(|t| t.to_xml_in(""))
                .unwrap_or_default(),
        };
        let write = {
            let mut states = lock(&self.states);
            let st = states.entry(user.to_owned()).or_default();
            st.last = Some(last.clone());
            let due = st
                .written_at
                .is_none_or(|w| now.saturating_duration_since(w) >= self.store_interval);
            if due {
                st.written_at = Some(now);
            }
            st.dirty = !due;
            due
        };
        if write {
            store(im, user, last).await;
        }
    }

    /// [`Hook::PresenceUnavailable`] for a device: its latest presence stored if it
    /// was not yet, and put into the unavailable broadcast.
    async fn going_offline(&self, im: Im<'_>, user: &str, el: &mut Element) {
        let (last, dirty) = {
            let mut states = lock(&self.states);
            let Some(st) = states.get_mut(user) else {
                return;
            };
            let dirty = std::mem::take(&mut st.dirty);
            if dirty {
                st.written_at = Some(Instant::now());
            }
            (st.last.take(), dirty)
        };
        let Some(last) = last else { return };
        // The device said something of its own as it left: that is its word.
        let says = el.has_child("status", ns::CLIENT) || telemetry::find(el).is_some();
        if !says {
            add_reading(el, &last);
        }
        if dirty {
            store(im, user, last).await;
        }
    }
}

/// Puts a stored presence's status and telemetry into `el`.
fn add_reading(el: &mut Element, last: &StoredPresence) {
    if !last.status.is_empty() {
        el.push_child(Element::new("status", ns::CLIENT).with_text(last.status.as_str()));
    }
    if !last.telemetry.is_empty() {
        match crate::xml::parse_fragment(&last.telemetry) {
            Some(t) => el.push_child(t),
            None => log::warn!("device: a stored telemetry element does not read back"),
        }
    }
}

async fn store(im: Im<'_>, user: &str, last: StoredPresence) {
    let u = user.to_owned();
    if let Err(e) = on_pool(im.storage, move |s| s.set_device_presence(&u, &last)).await {
        log::error!("device: storage: {e}");
    }
}

/// The household's members, sorted (as the household module reads them); none if
/// storage cannot tell (a device is then refused, not let through).
async fn household(im: Im<'_>) -> Arc<[String]> {
    if let Some(members) = im.storage.cached_household_members() {
        return members;
    }
    match on_pool(im.storage, |s| s.household_members()).await {
        Ok(m) => Arc::from(m),
        Err(e) => {
            log::error!("device: storage: {e}");
            Arc::from(Vec::new())
        }
    }
}

/// Answers `stanza` with `error` (to a local session, straight into its output).
fn refuse(cx: &HookCx<'_>, stanza: &Stanza, out: &mut String, error: StanzaError) {
    if let Some(reply) = stanza.error_reply(error) {
        cx.im.answer(cx.from, out, reply);
    }
}

impl Module for Device {
    fn name(&self) -> &'static str {
        "device"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Hearth("devices"),
            title: "Device accounts, presence as telemetry",
            version: "",
            status: Status::Complete,
            note: "`hearth device add NAME [--household]`: no federation, messages and \
                   subscriptions only inside the household, a presence rate \
                   (`policy-violation`); `<telemetry xmlns='urn:hearth:telemetry:0'/>` passed \
                   unchanged; a sleepy device's last reading kept and served to probes with \
                   `<delay/>` (XEP-0203) and by XEP-0012",
        }]
    }

    fn hooks(&self) -> &'static [Hook] {
        &[
            Hook::StanzaIn,
            Hook::PresenceUnavailable,
            Hook::OfflinePresence,
        ]
    }

    fn filter_in<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        stanza: &'a Stanza,
        _access: Option<Access>,
        out: &'a mut String,
    ) -> HookFuture<'a, Verdict> {
        Box::pin(async move {
            match cx.from {
                Sender::Local(from) => {
                    let Some(user) = from.local() else {
                        return Verdict::Pass;
                    };
                    if !self.is_device(cx.im, user).await {
                        return Verdict::Pass;
                    }
                    self.device_stanza(cx, user, stanza, out).await
                }
                Sender::Remote(_) => {
                    // The dispatcher hands over only what is for this host.
                    let Some(user) = stanza.to.as_ref().and_then(|t| t.local()) else {
                        return Verdict::Pass;
                    };
                    if !self.is_device(cx.im, user).await {
                        return Verdict::Pass;
                    }
                    match stanza.kind {
                        // §4.3.2: a probe is the server's to answer, under the usual
                        // subscription check (a subscriber from before the account was
                        // a device gets the last reading; anyone else `unsubscribed`).
                        Kind::Presence if stanza.el.attr("type") == Some("probe") => {
                            return Verdict::Pass;
                        }
                        Kind::Presence => {}
                        // RFC 6121 §8.5.1: what an account that does not exist gets.
                        Kind::Message | Kind::Iq => cx.im.router.bounce(
                            cx.from.origin(),
                            stanza,
                            StanzaCondition::ServiceUnavailable,
                        ),
                    }
                    Verdict::Stop
                }
                Sender::Service(_) => Verdict::Pass,
            }
        })
    }

    fn presence_unavailable<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        presence: &'a mut Element,
        others_available: bool,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let Some(user) = cx.from.session().and_then(|f| f.local()) else {
                return;
            };
            if others_available || !self.is_device(cx.im, user).await {
                return;
            }
            self.going_offline(cx.im, user, presence).await
        })
    }

    fn offline_presence<'a>(
        &'a self,
        im: Im<'a>,
        user: &'a str,
        presence: &'a mut Element,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            if !self.is_device(im, user).await {
                return;
            }
            let u = user.to_owned();
            let last = match on_pool(im.storage, move |s| s.device_presence(&u)).await {
                Ok(Some(last)) => last,
                Ok(None) => return,
                Err(e) => {
                    log::error!("device: storage: {e}");
                    return;
                }
            };
            // The reading and when it was sent, instead of the logout's status and time.
            presence.remove_children("status", ns::CLIENT);
            presence.remove_children("delay", ns::DELAY);
            add_reading(presence, &last);
            presence.push_child(presence::delay(im.router.domain(), last.sent_at));
        })
    }
}
