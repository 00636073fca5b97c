//! XEP-0077: In-Band Registration — creating an account from a client, changing its
//! password and removing it, under the owner's `[registration] policy`:
//!
//! - `closed`: no `<register/>` stream feature; a registration iq before login gets
//!   `service-unavailable` (§3.1: the host does not register in band);
//! - `invite` (the default): registration is offered, but only with a valid invitation
//!   token (XEP-0401: `<preauth xmlns='urn:xmpp:pars:0' token='…'/>` sent before or inside
//!   the register set, or the form's `token` field); without one, or with an unknown, used
//!   up or expired one, `forbidden`;
//! - `open`: anyone may register, at most `per_address_per_hour` accounts per source
//!   address (an IPv6 address counts by its /64) per hour (a valid invitation token is
//!   used if sent, for its effects, and not counted); past that
//!   `resource-constraint` (type `wait`, RFC 6120 §8.3.3.18: "try again later"), as
//!   ejabberd answers too-quick registrations.
//!
//! Before login (§3.1, §8) the c2s machine answers the get with [`form`] and turns a set
//! into `Action::Register`, which the connection carries out with
//! [`Registrar::register`]: the name checked ([`check_username`]: normalized as `hearth
//! user add` does, [`RESERVED`] names and bad ones `not-acceptable`, a taken one
//! `conflict`), the password hashed on the same bounded argon2id threads as logins
//! (`crate::password`), the account stored. One registration per stream. The client then
//! logs in on the same stream as usual.
//!
//! After login the [`Register`] module answers iqs to the server or the user's own
//! account: a get says `<registered/>`; a set with username and password changes the
//! password (§3.3, argon2id hash and SCRAM keys replaced); `<remove/>` removes the account
//! (§3.2): the modules taking part in [`Hook::AccountRemoved`] tell its contacts first
//! (`unavailable`, `unsubscribe`, `unsubscribed`, local rosters lose the item), then every
//! row of the account is deleted (cascading), then each of its sessions is closed with a
//! `<not-authorized/>` stream error — the session that asked reads its iq result first.
//!
//! Logs name the account and the address; never a password or a token.

mod rules;
mod store;

pub use rules::{RESERVED, Request, check_username, form, parse_set, registered};
pub use store::{Invite, InviteEffects, InviteStore, RemovalStore, new_token, token_hash};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Access, Announce, Doc, IqCx, IqFuture, IqRoute, Module, On, Spec, Status, Target};
use crate::config::{RegistrationConfig, RegistrationPolicy};
use crate::jid::FullJid;
use crate::password::{PasswordCheckConfig, PasswordChecks, PasswordError};
use crate::router::im::on_pool;
use crate::stanza::{ErrorType, IqType, Stanza, StanzaCondition, StanzaError};
use crate::storage::{Accounts as _, Storage, StorageError};

/// The registration namespace (XEP-0077 §3).
pub const NS_REGISTER: &str = "jabber:iq:register";
/// The stream feature (XEP-0077 §8).
pub const NS_FEATURE: &str = "http://jabber.org/features/iq-register";
/// XEP-0401 pre-authenticated registration.
pub const NS_PARS: &str = "urn:xmpp:pars:0";
/// XEP-0004 data forms.
pub const NS_DATA: &str = "jabber:x:data";

/// How long a registration counts against its address under the open policy.
const WINDOW: Duration = Duration::from_secs(3600);
/// Addresses remembered at once; past that (a flood from many addresses) registration
/// waits until entries age out, rather than memory growing.
const MAX_TRACKED: usize = 4096;

/// What registering needs, shared by the c2s connections (before login) and the module
/// (after): the policy, the bounded password hashing, and the per-address counts.
pub struct Registrar {
    config: RegistrationConfig,
    /// The same bounded argon2id threads as PLAIN logins (`Auth::passwords`).
    passwords: PasswordChecks,
    /// Open policy: when each address (an IPv6 /64) registered, within [`WINDOW`].
    recent: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

/// An account to create (a checked [`Request::Account`] from before login).
pub struct NewAccount {
    /// Normalized ([`check_username`]).
    pub username: String,
    pub password: String,
    pub token: Option<String>,
}

impl Registrar {
    pub fn new(config: RegistrationConfig, passwords: PasswordChecks) -> Registrar {
        Registrar {
            config,
            passwords,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// The policy.
    pub fn policy(&self) -> RegistrationPolicy {
        self.config.policy
    }

    /// Whether the `<register/>` stream feature is offered and registration iqs are
    /// answered before login.
    pub fn is_offered(&self) -> bool {
        self.config.policy != RegistrationPolicy::Closed
    }

    /// Open policy: whether `ip` may register now, and if so counted (before the
    /// expensive hashing, so concurrent attempts cannot all pass the check).
    fn take_slot(&self, ip: IpAddr, now: Instant) -> bool {
        let key = address_key(ip);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|_, times| {
            times.retain(|t| now.saturating_duration_since(*t) < WINDOW);
            !times.is_empty()
        });
        if !recent.contains_key(&key) && recent.len() >= MAX_TRACKED {
            return false;
        }
        let times = recent.entry(key).or_default();
        if times.len() >= self.config.per_address_per_hour as usize {
            return false;
        }
        times.push(now);
        true
    }

    /// §3.1: creates the account `new` asked for by a client at `ip` not logged in; the
    /// error to answer otherwise (see the module's documentation for which). With an
    /// invitation, what else it does (XEP-0401: household, inviter), for the caller to
    /// carry out once the account exists (`features::invite::welcome`).
    pub async fn register(
        &self,
        storage: &Storage,
        new: NewAccount,
        ip: IpAddr,
        conn: u64,
    ) -> Result<Option<InviteEffects>, StanzaError> {
        let NewAccount {
            username,
            password,
            token,
        } = new;
        let refused = |why: &str| {
            log::info!("c2s{conn}: {ip} may not register {username:?}: {why}");
        };
        match (self.config.policy, &token) {
            (RegistrationPolicy::Closed, _) => {
                return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
            }
            (RegistrationPolicy::Invite, None) => {
                refused("no invitation");
                return Err(StanzaError::new(StanzaCondition::Forbidden)
                    .with_text("this server registers accounts by invitation only"));
            }
            _ => {}
        }
        let u = username.clone();
        if on_pool(storage, move |s| s.account_exists(&u))
            .await
            .map_err(internal)?
        {
            return Err(conflict());
        }
        let mut invite = None;
        // Under the open policy a token is optional; a valid one is still used, so its
        // effects (XEP-0401: household, inviter as a contact) apply, and an invited
        // person is not counted against their address.
        let taken = match (self.config.policy, token) {
            (RegistrationPolicy::Invite | RegistrationPolicy::Open, Some(token)) => {
                let now = crate::storage::unix_now();
                on_pool(storage, move |s| s.consume_invite(&token, now))
                    .await
                    .map_err(internal)?
            }
            _ => None,
        };
        match (self.config.policy, taken) {
            (_, Some(taken)) => invite = Some((taken.id, taken.effects)),
            (RegistrationPolicy::Invite, None) => {
                refused("unknown, used up or expired invitation");
                return Err(StanzaError::new(StanzaCondition::Forbidden)
                    .with_text("the invitation is unknown, used up or expired"));
            }
            (RegistrationPolicy::Open, None) if !self.take_slot(ip, Instant::now()) => {
                refused("too many registrations from this address");
                let mut e = StanzaError::new(StanzaCondition::ResourceConstraint)
                    .with_text("too many accounts registered from this address; try later");
                e.kind = ErrorType::Wait;
                return Err(e);
            }
            _ => {}
        }
        let result = self.store_new(storage, &username, password).await;
        match (result, invite) {
            (Ok(()), Some((id, effects))) => {
                log::info!("c2s{conn}: {ip} registered {username:?} with invitation #{id}");
                Ok(Some(effects))
            }
            (Ok(()), None) => {
                log::info!("c2s{conn}: {ip} registered {username:?}");
                Ok(None)
            }
            (Err(e), Some((id, _))) => {
                // The use was not spent on an account: give it back.
                if let Err(e) = on_pool(storage, move |s| s.restore_invite(id)).await {
                    log::error!("c2s{conn}: storage: {e}");
                }
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Hashes `password` (bounded) and stores the new account.
    async fn store_new(
        &self,
        storage: &Storage,
        username: &str,
        password: String,
    ) -> Result<(), StanzaError> {
        let creds = self
            .passwords
            .derive(password, storage.scram_keys())
            .await
            .map_err(password_error)?;
        let u = username.to_owned();
        on_pool(storage, move |s| s.insert_account(&u, &creds))
            .await
            .map_err(|e| match e {
                StorageError::AlreadyExists { .. } => conflict(),
                other => internal(other),
            })
    }

    /// §3.3: a new password for the logged-in `user`: argon2id hash and SCRAM keys
    /// replaced, hashed on the bounded threads.
    pub async fn change_password(
        &self,
        storage: &Storage,
        user: &str,
        password: String,
    ) -> Result<(), StanzaError> {
        let creds = self
            .passwords
            .derive(password, storage.scram_keys())
            .await
            .map_err(password_error)?;
        let u = user.to_owned();
        on_pool(storage, move |s| s.replace_credentials(&u, &creds))
            .await
            .map_err(internal)
    }
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64 (one home network).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn conflict() -> StanzaError {
    StanzaError::new(StanzaCondition::Conflict).with_text("this user name is taken")
}

fn internal(e: StorageError) -> StanzaError {
    log::error!("storage: {e}");
    StanzaError::new(StanzaCondition::InternalServerError)
}

fn password_error(e: PasswordError) -> StanzaError {
    match e {
        PasswordError::Busy => {
            let mut e = StanzaError::new(StanzaCondition::ResourceConstraint)
                .with_text("the server is busy; try again in a moment");
            e.kind = ErrorType::Wait;
            e
        }
        PasswordError::Invalid(why) => StanzaError::new(StanzaCondition::NotAcceptable)
            .with_text(format!("this password cannot be used: {why}")),
        PasswordError::Crypto(why) => {
            log::error!("password hashing: {why}");
            StanzaError::new(StanzaCondition::InternalServerError)
        }
    }
}

/// XEP-0077 for logged-in users (password change, removal); registration before login
/// is the c2s stream's, with the same [`Registrar`].
pub struct Register {
    registrar: Arc<Registrar>,
}

impl Register {
    pub fn new(registrar: Arc<Registrar>) -> Register {
        Register { registrar }
    }

    /// With the default policy and a small hashing pool of its own: for tests and the
    /// README's table (the server shares its `Auth`'s).
    pub fn standalone() -> Register {
        Register::new(Arc::new(Registrar::new(
            RegistrationConfig::default(),
            PasswordChecks::new(PasswordCheckConfig {
                at_once: 1,
                queue: 4,
            }),
        )))
    }

    /// §3.2: tells the contacts (the hook), deletes every row, closes every session
    /// ([`crate::router::im::Im::remove_account`], the way an admin's deletion goes too).
    async fn remove(&self, cx: &IqCx<'_>, from: &FullJid) -> Result<(), StanzaError> {
        let Some(user) = from.local().map(str::to_owned) else {
            return Err(StanzaError::new(StanzaCondition::Forbidden));
        };
        log::info!("c2s{}: {} removes its account", cx.im.conn, from.bare());
        match cx.im.remove_account(cx.from, &user).await {
            Ok(_) => Ok(()),
            Err(e) => Err(internal(e)),
        }
    }
}

impl Module for Register {
    fn name(&self) -> &'static str {
        "register"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(77),
            title: "In-Band Registration",
            version: "2.4",
            status: Status::Complete,
            note: "`[registration] policy`: closed, invite (a token, XEP-0401) or open \
                       (throttled per address); password change; removal tells contacts",
        }]
    }

    fn disco(&self) -> &'static [Announce] {
        &[Announce {
            var: NS_REGISTER,
            on: On::Server,
        }]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        // To the server's domain (XEP-0077's examples) or, with no `to`, the user's own
        // account; only the account's own sessions (checked in `handle_iq`).
        &[IqRoute {
            ns: NS_REGISTER,
            on: On::Both,
            access: Access::Module,
        }]
    }

    fn handle_iq<'a>(&'a self, cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        Box::pin(async move {
            let Some(from) = cx.from.session() else {
                // Another server's user has no account here to change.
                return Err(StanzaError::new(StanzaCondition::NotAllowed));
            };
            if let Target::Account(to) = cx.target {
                if *to != from.bare() {
                    return Err(StanzaError::new(StanzaCondition::Forbidden));
                }
            }
            let user = from.local().unwrap_or_default();
            let Some(query) = iq.iq_payload() else {
                return Err(StanzaError::new(StanzaCondition::BadRequest));
            };
            match iq.iq_type() {
                Some(IqType::Get) => Ok(Some(registered(user))),
                Some(IqType::Set) => match parse_set(query)? {
                    Request::Remove => self.remove(cx, from).await.map(|()| None),
                    Request::Account {
                        username, password, ..
                    } => {
                        // §3.3: the username is the account's own.
                        if crate::jid::normalize_localpart(&username).ok().as_deref() != Some(user)
                        {
                            return Err(StanzaError::new(StanzaCondition::NotAllowed)
                                .with_text("only the account's own password can be changed"));
                        }
                        self.registrar
                            .change_password(cx.im.storage, user, password)
                            .await?;
                        log::info!("c2s{}: {} changed its password", cx.im.conn, from.bare());
                        Ok(None)
                    }
                },
                _ => Err(StanzaError::new(StanzaCondition::BadRequest)),
            }
        })
    }
}

#[cfg(test)]
mod tests;
