//! XEP-0401: Easy User Onboarding (invitations) and XEP-0379: Pre-Authenticated Roster
//! Subscription.
//!
//! An invitation is a random token ([`new_token`], stored as its SHA-256 only) that allows
//! a number of registrations (XEP-0077 with `<preauth/>`, `features::register`) until it
//! expires. It is handed out as an `xmpp:` URI (built by [`invite_uri`]), on paper or a
//! screen as a QR code ([`qr`]):
//!
//! - an account invitation, `xmpp:DOMAIN?register;preauth=TOKEN` (XEP-0401 §1.2
//!   "Account Creation"; the form clients such as Conversations read, as documented at
//!   docs.modernxmpp.org "Registration through invitation"), made by the owner (`hearth
//!   invite`, the admin ad-hoc command `urn:xmpp:invite#create-account`);
//! - a user invitation, `xmpp:alice@DOMAIN?roster;preauth=TOKEN;ibr=y` (XEP-0401 §1.1
//!   "User Invitation" and its invite command's `uri` field; XEP-0379 §3), made for or
//!   by a user (`hearth invite --from alice`, the ad-hoc command
//!   `urn:xmpp:invite#invite`): `ibr=y` says the token also registers an account here,
//!   and is left out when registration is closed (as XEP-0401 requires).
//!
//! What registering with a token does besides ([`welcome`]): an invitation with
//! `household` puts the account in the household (`features::household`); one with an
//! inviter makes the inviter and the new user mutual contacts (`subscription='both'` on
//! both rosters, RFC 6121 §2.1.2.5), written in storage as the subscription state machine
//! would end up after `subscribe`/`subscribed` both ways, and pushed to the inviter's
//! interested resources (§2.1.6). No presence is sent then: the new account has no
//! session yet, and its initial presence (§4.2) is broadcast to the inviter and probes
//! the inviter, as for any `both` contact.
//!
//! XEP-0379 (minimal): a `subscribe` to a local user carrying `<preauth
//! xmlns='urn:xmpp:pars:0' token='…'/>` whose token that user issued (an invitation with
//! that inviter, uses left, not expired) is approved on the user's behalf
//! ([`preapproved`]: the server treats it as pre-approved, RFC 6121 §3.4, so the
//! state machine answers `subscribed`), and the server subscribes back on the user's
//! behalf (`subscribe`, answered at once by a client that pre-approved the user as
//! XEP-0379 §4 asks, so the subscription is `both`). The token's use is not taken (it is
//! still needed to register, `ibr=y`).
//!
//! Tokens are never logged.

pub mod qr;

use crate::features::household::Household as _;
use crate::features::register::{InviteEffects, InviteStore as _, NS_PARS};
use crate::features::roster::Roster as _;
use crate::features::subscription::{SubState, Subscription};
use crate::features::{Doc, Module, Spec, Status};
use crate::jid::BareJid;
use crate::router::im::{Im, on_pool};
use crate::storage::StorageError;
use crate::xml::Element;

pub use crate::features::register::new_token;

/// Invitations as a module: only declares what it implements. Its work is done where
/// the stanzas are: at registration ([`welcome`], from the c2s connection), in the
/// subscription handling ([`preapproved`]), in the ad-hoc commands
/// (`features::adhoc::admin`), and by `hearth invite`.
pub struct Invite;

impl Module for Invite {
    fn name(&self) -> &'static str {
        "invite"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Xep(379),
                title: "Pre-Authenticated Roster Subscription",
                version: "0.3.3",
                status: Status::Partial,
                note: "a `subscribe` with a token the contact issued is approved by the \
                       server (as pre-approved, RFC 6121 §3.4), which subscribes back; \
                       the token is not used up; no token of the user's own to hand out \
                       other than an invitation",
            },
            Spec {
                doc: Doc::Xep(401),
                title: "Ad-hoc Account Invitation Generation (Easy User Onboarding)",
                version: "0.5.0",
                status: Status::Partial,
                note: "`xmpp:` account and user invitations (`hearth invite`, with a QR \
                       code; `urn:xmpp:invite#invite` for users, `#create-account` for \
                       `admins`); the `<preauth/>` token at registration; household and \
                       mutual contacts; no landing page",
            },
        ]
    }
}

/// How long an invitation lasts unless told otherwise.
pub const DEFAULT_VALIDITY_SECS: u64 = 7 * 24 * 3600;
/// The longest validity accepted (a year): an invitation is for now, not forever.
pub const MAX_VALIDITY_SECS: u64 = 366 * 24 * 3600;

/// XEP-0401 §1: the URI for `token`. `inviter` (a bare JID here) makes it a user
/// invitation (`?roster;preauth=…`, XEP-0379 §3, with `;ibr=y` when `ibr`: the token
/// also registers an account), otherwise an account invitation for `domain`
/// (`?register;preauth=…`).
pub fn invite_uri(domain: &str, inviter: Option<&BareJid>, token: &str, ibr: bool) -> String {
    match inviter {
        Some(jid) => format!(
            "xmpp:{}?roster;preauth={}{}",
            uri_escape(jid.as_str(), "@"),
            uri_escape(token, ""),
            if ibr { ";ibr=y" } else { "" }
        ),
        None => format!(
            "xmpp:{}?register;preauth={}",
            uri_escape(domain, ""),
            uri_escape(token, "")
        ),
    }
}

/// RFC 5122 §2.3: percent-encodes (UTF-8) what is not an unreserved character
/// (RFC 3986 §2.3) or in `keep`. Tokens (base64url) and ASCII names pass unchanged.
fn uri_escape(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || "-._~".contains(c) || keep.contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// A validity such as `7d`, `12h`, `30m`, `90s` or `2w`, in seconds; between one second
/// and [`MAX_VALIDITY_SECS`].
pub fn parse_validity(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 7d, 12h or 30m"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        "w" => 7 * 24 * 3600,
        _ => {
            return Err(format!(
                "{s:?}: the unit must be s, m, h, d or w (as in 7d, 12h, 30m)"
            ));
        }
    };
    let secs = n.saturating_mul(unit_secs);
    if secs == 0 {
        return Err("an invitation must last at least a second".into());
    }
    if secs > MAX_VALIDITY_SECS {
        return Err(format!("{s:?} is longer than a year"));
    }
    Ok(secs)
}

/// The `<preauth xmlns='urn:xmpp:pars:0' token='…'/>` token carried by a stanza's
/// element (XEP-0379 §4), if any.
pub fn preauth_token(stanza: &Element) -> Option<&str> {
    stanza
        .get_child("preauth", NS_PARS)
        .and_then(|c| c.attr("token"))
        .filter(|t| !t.is_empty())
}

/// `xml` (serialized stanzas, as logged at trace level) with the token of every
/// `<preauth token='…'/>` (XEP-0379, XEP-0401) replaced by its length, so that no log
/// level shows a token (as `forms::redact_password_fields` does for passwords).
pub fn redact_preauth(xml: &str) -> std::borrow::Cow<'_, str> {
    if !xml.contains("<preauth") {
        return std::borrow::Cow::Borrowed(xml);
    }
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find("<preauth") {
        let tag = &rest[at..];
        let end = tag.find('>').unwrap_or(tag.len());
        let start_tag = &tag[..end];
        out.push_str(&rest[..at]);
        let Some(t) = start_tag.find(" token=").map(|t| t + " token=".len()) else {
            out.push_str(start_tag);
            rest = &tag[end..];
            continue;
        };
        // Our own serializer's output, so well formed; `get` all the same, for a tag
        // cut off anywhere.
        let quote = start_tag
            .get(t..)
            .and_then(|v| v.chars().next())
            .unwrap_or('\'');
        let value = start_tag.get(t + quote.len_utf8()..).unwrap_or("");
        let len = value.find(quote).unwrap_or(value.len());
        out.push_str(start_tag.get(..t).unwrap_or(""));
        out.push(quote);
        out.push_str(&format!("[{len} bytes redacted]"));
        out.push_str(value.get(len..).unwrap_or(""));
        rest = &tag[end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// XEP-0379 §4: whether `token` was issued by `user` (an invitation naming it as the
/// inviter, uses left, not expired), so that a subscription request to `user` carrying
/// it is approved on `user`'s behalf. No use is taken.
pub async fn preapproved(im: Im<'_>, user: &str, token: &str) -> bool {
    let token = token.to_owned();
    let now = crate::storage::unix_now();
    match on_pool(im.storage, move |s| s.find_invite(&token, now)).await {
        Ok(Some(invite)) => invite.effects.inviter.as_deref() == Some(user),
        Ok(None) => false,
        Err(e) => {
            log::error!("storage: {e}");
            false
        }
    }
}

/// What an invitation does once the account `user` exists (XEP-0401 §1.1): the household
/// ([`InviteEffects::household`]), and mutual contacts with the inviter, in storage
/// ([`befriend`]). Returns the inviter to push to (see [`welcome`]).
pub fn apply_effects(
    storage: &crate::storage::Storage,
    domain: &str,
    user: &str,
    effects: &InviteEffects,
) -> Result<Option<BareJid>, StorageError> {
    if effects.household {
        storage.add_to_household(user)?;
    }
    let Some(inviter) = effects.inviter.as_deref().filter(|i| *i != user) else {
        return Ok(None);
    };
    // The inviter's account may have been deleted since; then there is nobody to befriend.
    if !crate::storage::Accounts::account_exists(storage, inviter)? {
        log::info!("invite: inviter {inviter:?} no longer exists; no contact added");
        return Ok(None);
    }
    let (Ok(inviter_jid), Ok(user_jid)) = (
        BareJid::new(Some(inviter), domain),
        BareJid::new(Some(user), domain),
    ) else {
        return Ok(None);
    };
    befriend(storage, inviter, &user_jid)?;
    befriend(storage, user, &inviter_jid)?;
    Ok(Some(inviter_jid))
}

/// `user`'s roster gets `contact` with `subscription='both'`, nothing pending (RFC 6121
/// §2.1.2.5), in one transaction with a new roster version (§2.6).
fn befriend(
    storage: &crate::storage::Storage,
    user: &str,
    contact: &BareJid,
) -> Result<(), StorageError> {
    // Over quota only when storing a request, and none is stored here.
    let _ = storage.update_subscription(
        user,
        contact,
        &mut |_| SubState {
            subscription: Subscription::Both,
            ..SubState::default()
        },
        None,
    )?;
    Ok(())
}

/// After a registration with an invitation: [`apply_effects`], then the roster push of
/// the new contact to the inviter's interested resources (RFC 6121 §2.1.6). The household
/// watcher (`features::household::watch`) tells the household's online members. Failures
/// are logged: the account exists either way.
pub async fn welcome(im: Im<'_>, user: &str, effects: InviteEffects) {
    let (u, domain) = (user.to_owned(), im.router.domain().to_owned());
    let inviter = match on_pool(im.storage, move |s| apply_effects(s, &domain, &u, &effects)).await
    {
        Ok(inviter) => inviter,
        Err(e) => {
            log::error!("invite: storage: {e}");
            return;
        }
    };
    let Some(inviter) = inviter else {
        return;
    };
    let Ok(user_jid) = BareJid::new(Some(user), im.router.domain()) else {
        return;
    };
    if let Some(owner) = inviter.local() {
        log::info!("invite: {user_jid} and {inviter} are now contacts");
        im.push_view(owner, &user_jid).await;
    }
}

#[cfg(test)]
mod tests;
