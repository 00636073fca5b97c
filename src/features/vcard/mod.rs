//! XEP-0054: vcard-temp (version 1.2) — each account's vCard, kept by the server as the
//! XML the account set, for anyone to read.
//!
//! §3.1: a get to the account's own bare JID (or with no `to`) returns its vCard; §3.3 a
//! get to another account's bare JID returns theirs, to anyone, local or on another
//! server (as Prosody and ejabberd do; a sender the account blocked gets nothing, by
//! XEP-0191). No vCard stored is an empty `<vCard/>` (§3.1 allows it instead of
//! `item-not-found`, and it is what clients handle best). §3.2: only the account itself
//! sets its vCard (anyone else: `forbidden`); an empty `<vCard/>` removes it. A vCard is
//! bounded in bytes (`[vcard] max_bytes`, room for a photo) and counts in
//! `limits.max_stored_bytes_per_account` (`resource-constraint` past it).
//!
//! The SHA-1 of the PHOTO's binary value is kept beside the vCard ([`photo_sha1`]): what
//! XEP-0153 puts in presence and XEP-0398 compares with a PEP avatar.

mod store;

pub use store::VcardStore;

use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::{Access, Announce, Doc, IqCx, IqFuture, IqRoute, Module, On, Spec, Status, Target};
use crate::jid::BareJid;
use crate::router::im::{Im, on_pool};
use crate::stanza::{IqType, Stanza, StanzaCondition, StanzaError};
use crate::storage::{OverQuota, StorageError};
use crate::xml::Element;

/// XEP-0054's namespace.
pub const NS: &str = "vcard-temp";

/// `[vcard]`: how large a vCard may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcardConfig {
    /// Bytes of the `<vCard/>` element as stored (its XML).
    pub max_bytes: usize,
}

impl VcardConfig {
    /// 256 KiB: a photo of a few hundred pixels a side, Base64-encoded, and the rest.
    /// `c2s.max_stanza_bytes` (256 KiB by default) bounds the iq that carries it too.
    pub const DEFAULT_MAX_BYTES: usize = 256 * 1024;
}

impl Default for VcardConfig {
    fn default() -> VcardConfig {
        VcardConfig {
            max_bytes: VcardConfig::DEFAULT_MAX_BYTES,
        }
    }
}

/// What a sender asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// §3.1, §3.3: the vCard of the account asked.
    Get,
    /// §3.2: store this vCard (its XML and photo hash), or remove it (`None`).
    Set(Option<Stored>),
}

/// A vCard as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The `<vCard/>` serialized standalone.
    pub xml: String,
    /// The lowercase hex SHA-1 of the PHOTO's decoded BINVAL, if it has one.
    pub photo_sha1: Option<String>,
}

/// The lowercase hex SHA-1 of a vCard's `PHOTO/BINVAL` (XEP-0153 §4: the hash of the
/// image data, not of its Base64); `None` without one or when it is not Base64.
pub fn photo_hash(vcard: &Element) -> Option<String> {
    let binval = vcard
        .get_child("PHOTO", NS)?
        .get_child("BINVAL", NS)?
        .text();
    let clean: String = binval
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if clean.is_empty() {
        return None;
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .ok()?;
    Some(
        Sha1::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Reads a vcard-temp get or set; every bad input gets the XEP's error.
pub fn parse(iq: &Stanza, cfg: &VcardConfig) -> Result<Request, StanzaError> {
    let Some(v) = iq.iq_payload().filter(|p| p.is("vCard", NS)) else {
        return Err(StanzaError::new(StanzaCondition::BadRequest).with_text("expected <vCard/>"));
    };
    match iq.iq_type() {
        Some(IqType::Get) => Ok(Request::Get),
        Some(IqType::Set) => {
            if v.children().next().is_none() {
                return Ok(Request::Set(None));
            }
            let xml = v.to_xml_in("");
            if xml.len() > cfg.max_bytes {
                return Err(
                    StanzaError::new(StanzaCondition::NotAcceptable).with_text(format!(
                        "the vCard is {} bytes; this server keeps at most {}",
                        xml.len(),
                        cfg.max_bytes
                    )),
                );
            }
            Ok(Request::Set(Some(Stored {
                photo_sha1: photo_hash(v),
                xml,
            })))
        }
        _ => Err(StanzaError::new(StanzaCondition::BadRequest)),
    }
}

/// The lowercase hex SHA-1 of `account`'s vCard photo (XEP-0153 §4), `None` when it has
/// no vCard, no photo, or is not a local account: for XEP-0153 `<x><photo/></x>` in
/// presence and XEP-0398. One indexed read, no XML parsed.
pub async fn photo_sha1(im: &Im<'_>, account: &BareJid) -> Result<Option<String>, StorageError> {
    let Some(user) = im.local_user(account).map(str::to_owned) else {
        return Ok(None);
    };
    on_pool(im.storage, move |s| s.vcard_photo_sha1(&user)).await
}

/// The module.
pub struct Vcard {
    cfg: VcardConfig,
}

impl Vcard {
    pub fn new(cfg: &VcardConfig) -> Vcard {
        Vcard { cfg: *cfg }
    }
}

impl Module for Vcard {
    fn name(&self) -> &'static str {
        "vcard"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(54),
            title: "vcard-temp",
            version: "1.2",
            status: Status::Complete,
            note: "anyone reads, the account writes; empty `<vCard/>` for none; size limit \
                   and the account's byte quota; the photo's SHA-1 kept for XEP-0153",
        }]
    }

    fn disco(&self) -> &'static [Announce] {
        // §2: announced by the server (and so on behalf of its accounts).
        &[Announce {
            var: NS,
            on: On::Server,
        }]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            ns: NS,
            on: On::Account,
            access: Access::Anyone,
        }]
    }

    fn handle_iq<'a>(&'a self, cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        Box::pin(async move {
            let Target::Account(to) = cx.target else {
                return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
            };
            let Some(user) = cx.im.local_user(to).map(str::to_owned) else {
                return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
            };
            let is_own = cx.from.is_local() && cx.from.bare() == *to;
            let internal = |e: StorageError| {
                log::warn!("c2s{}: vcard: {e}", cx.im.conn);
                StanzaError::new(StanzaCondition::InternalServerError)
            };
            match parse(iq, &self.cfg)? {
                Request::Get => {
                    let u = user.clone();
                    let stored = on_pool(cx.im.storage, move |s| s.vcard_get(&u))
                        .await
                        .map_err(internal)?;
                    if stored.is_none() && !is_own && !cx.im.exists(to).await {
                        // RFC 6121 §8.5.1: no such account.
                        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
                    }
                    Ok(Some(
                        stored
                            .as_deref()
                            .and_then(super::private::parse_stored)
                            .unwrap_or_else(|| Element::new("vCard", NS)),
                    ))
                }
                Request::Set(vcard) => {
                    if !is_own {
                        // §3.2: only the account's own resources update it.
                        return Err(StanzaError::new(StanzaCondition::Forbidden)
                            .with_text("a vCard is set by its own account"));
                    }
                    let quota = *cx.im.router.quota();
                    let stored = on_pool(cx.im.storage, move |s| {
                        s.vcard_set(&user, vcard.as_ref(), &quota)
                    })
                    .await
                    .map_err(internal)?;
                    match stored {
                        Ok(()) => Ok(None),
                        Err(OverQuota::Bytes | OverQuota::Items) => {
                            Err(StanzaError::new(StanzaCondition::ResourceConstraint)
                                .with_text("the account's storage is full"))
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
