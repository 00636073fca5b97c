//! Profile pictures both ways (XEP-0398): what a modern client publishes as a XEP-0084
//! avatar over PEP becomes the vCard photo (XEP-0054) that older clients and group chats
//! read, and a photo set in the vCard by an older client is published as a XEP-0084
//! avatar. Every available presence a local client sends, broadcast or directed, carries
//! the photo's hash for XEP-0153 (§4), unless the client put its own there.
//!
//! XEP-0084 avatars, XEP-0172 nicknames and XEP-0292 vCard4 profiles themselves are
//! plain PEP nodes, stored and notified by the PEP module; this module declares them.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::pep::{self, PepStore as _};
use super::vcard::{self, Request, Stored, VcardConfig, VcardStore as _};
use super::{Access, Announce, Doc, Hook, HookCx, HookFuture, Module, On, Spec, Status, Verdict};
use crate::jid::FullJid;
use crate::router::im::{Im, on_pool};
use crate::stanza::{IqType, Kind, Stanza};
use crate::xml::{Element, parse_fragment};

/// XEP-0398's disco feature.
pub const NS_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";
/// XEP-0084's nodes (and namespaces).
pub const NS_DATA: &str = "urn:xmpp:avatar:data";
pub const NS_METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0153's presence element.
pub const NS_UPDATE: &str = "vcard-temp:x:update";

/// The module: every account's current photo hash, read from storage in one query the
/// first time one is needed, then kept up to date by the conversions.
pub struct Avatar {
    vcard: VcardConfig,
    /// localpart → the vCard photo's SHA-1, for the accounts with a photo; `None` until
    /// read. One entry per account with a photo.
    hashes: Mutex<Option<HashMap<String, String>>>,
}

impl Avatar {
    pub fn new(vcard: &VcardConfig) -> Avatar {
        Avatar {
            vcard: *vcard,
            hashes: Mutex::default(),
        }
    }

    fn hashes(&self) -> std::sync::MutexGuard<'_, Option<HashMap<String, String>>> {
        self.hashes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `user`'s photo hash. Every caller has read the table first
    /// ([`Avatar::hash`]); before that there is nothing to keep up to date.
    fn remember(&self, user: &str, hash: Option<String>) {
        if let Some(map) = self.hashes().as_mut() {
            match hash {
                Some(h) => map.insert(user.to_owned(), h),
                None => map.remove(user),
            };
        }
    }

    /// The account's photo hash (XEP-0153 §4), from memory (the table read once).
    async fn hash(&self, im: &Im<'_>, user: &str) -> Option<String> {
        if let Some(map) = self.hashes().as_ref() {
            return map.get(user).cloned();
        }
        match on_pool(im.storage, |s| s.vcard_photo_hashes()).await {
            Ok(rows) => {
                let mut guard = self.hashes();
                // Another task may have read it meanwhile: the first one stays.
                let map = guard.get_or_insert_with(|| rows.into_iter().collect());
                map.get(user).cloned()
            }
            Err(e) => {
                log::error!("storage: {e}");
                None
            }
        }
    }

    /// §3.1: a `urn:xmpp:avatar:metadata` publication from the owner: the image of its
    /// first info without a URL, taken from the data node, becomes the vCard photo (when
    /// its SHA-1 is the id, as XEP-0084 §4.2 makes it); a metadata with no info at all
    /// (XEP-0084 §4.5, avatar turned off) removes the photo.
    async fn pep_to_vcard(&self, im: &Im<'_>, user: &str, metadata: &Element) {
        let infos: Vec<&Element> = metadata
            .children()
            .filter(|c| c.is("info", NS_METADATA))
            .collect();
        let photo = match infos.iter().find(|i| i.attr("url").is_none()) {
            Some(info) => {
                let (Some(id), ty) = (info.attr("id"), info.attr("type").unwrap_or("image/png"))
                else {
                    return;
                };
                let id = id.to_ascii_lowercase();
                if self.hash(im, user).await.as_deref() == Some(id.as_str()) {
                    return;
                }
                let (u, i) = (user.to_owned(), vec![id.clone()]);
                let items =
                    match on_pool(im.storage, move |s| s.pep_items(&u, NS_DATA, &i, None)).await {
                        Ok(items) => items,
                        Err(e) => return log::error!("storage: {e}"),
                    };
                let Some(data) = items.first().and_then(|i| parse_fragment(&i.payload)) else {
                    log::debug!("avatar {id} of {user}: no data item; vCard unchanged");
                    return;
                };
                let b64: String = data
                    .text()
                    .chars()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes())
                else {
                    return;
                };
                if hex_sha1(&bytes) != id {
                    log::debug!("avatar {id} of {user}: data does not match its id");
                    return;
                }
                Some((id, ty.to_owned(), b64))
            }
            None if infos.is_empty() => None,
            // Only images elsewhere (XEP-0084 §4.2.1 url): nothing to put in a vCard.
            None => return,
        };
        let u = user.to_owned();
        let old = match on_pool(im.storage, move |s| s.vcard_get(&u)).await {
            Ok(v) => v.and_then(|xml| parse_fragment(&xml)),
            Err(e) => return log::error!("storage: {e}"),
        };
        if photo.is_none()
            && old
                .as_ref()
                .is_none_or(|v| !v.has_child("PHOTO", vcard::NS))
        {
            return;
        }
        let mut card = old.unwrap_or_else(|| Element::new("vCard", vcard::NS));
        card.remove_children("PHOTO", vcard::NS);
        let hash = photo.as_ref().map(|(id, _, _)| id.clone());
        if let Some((_, ty, b64)) = photo {
            card.push_child(
                Element::new("PHOTO", vcard::NS)
                    .with_child(Element::new("TYPE", vcard::NS).with_text(ty))
                    .with_child(Element::new("BINVAL", vcard::NS).with_text(b64)),
            );
        }
        let xml = card.to_xml_in("");
        if xml.len() > self.vcard.max_bytes {
            return log::debug!("avatar of {user}: too large for the vCard");
        }
        let stored = (card.children().next().is_some()).then_some(Stored {
            xml,
            photo_sha1: hash.clone(),
        });
        let quota = *im.router.quota();
        let u = user.to_owned();
        match on_pool(im.storage, move |s| {
            s.vcard_set(&u, stored.as_ref(), &quota)
        })
        .await
        {
            Ok(Ok(())) => self.remember(user, hash),
            Ok(Err(_)) => log::debug!("avatar of {user}: the account is full; vCard unchanged"),
            Err(e) => log::error!("storage: {e}"),
        }
    }

    /// §3.2: a vCard with a photo from the owner is published as a XEP-0084 avatar (data,
    /// then metadata), as if the owner's session had published it, so contacts are
    /// notified; a vCard without one turns the avatar off.
    async fn vcard_to_pep(&self, im: &Im<'_>, from: &FullJid, user: &str, iq: &Stanza) {
        let Ok(Request::Set(stored)) = vcard::parse(iq, &self.vcard) else {
            return;
        };
        let new = stored.as_ref().and_then(|s| s.photo_sha1.clone());
        let old = self.hash(im, user).await;
        if new == old {
            return;
        }
        // Known before publishing: the metadata publication below comes back through the
        // filter and must not convert the avatar back.
        self.remember(user, new.clone());
        let metadata = match &new {
            Some(hash) => {
                let Some(photo) = iq
                    .iq_payload()
                    .and_then(|v| v.get_child("PHOTO", vcard::NS))
                else {
                    return;
                };
                let b64: String = photo
                    .get_child("BINVAL", vcard::NS)
                    .map(|b| b.text())
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_or(0, |b| b.len());
                let ty = photo
                    .get_child("TYPE", vcard::NS)
                    .map(|t| t.text())
                    .filter(|t| !t.trim().is_empty())
                    .unwrap_or_else(|| "image/png".to_owned());
                let data = Element::new("data", NS_DATA).with_text(b64);
                if !self.publish(im, from, NS_DATA, hash, data).await {
                    return;
                }
                Element::new("metadata", NS_METADATA).with_child(
                    Element::new("info", NS_METADATA)
                        .with_attr("id", hash.as_str())
                        .with_attr("bytes", bytes.to_string())
                        .with_attr("type", ty.trim()),
                )
            }
            // XEP-0084 §4.5: no info, no avatar.
            None => Element::new("metadata", NS_METADATA),
        };
        let id = new.unwrap_or_else(|| "none".to_owned());
        self.publish(im, from, NS_METADATA, &id, metadata).await;
    }

    /// Publishes `payload` as item `id` of `node` for the session `from`, through the
    /// stanza path (the PEP module, its notifications); whether it was stored.
    async fn publish(
        &self,
        im: &Im<'_>,
        from: &FullJid,
        node: &str,
        id: &str,
        payload: Element,
    ) -> bool {
        let pubsub = Element::new("pubsub", pep::NS).with_child(
            Element::new("publish", pep::NS)
                .with_attr("node", node)
                .with_child(
                    Element::new("item", pep::NS)
                        .with_attr("id", id)
                        .with_child(payload),
                ),
        );
        let ok = pep::as_owner(im, from, pubsub).await;
        if !ok {
            log::debug!("avatar of {from}: publishing to {node} refused");
        }
        ok
    }
}

/// The lowercase hex SHA-1 of `bytes` (XEP-0084 §4.2's item id).
fn hex_sha1(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The XEP-0084 metadata a publish iq carries, if that is what it is.
fn published_metadata(iq: &Stanza) -> Option<&Element> {
    let publish = iq
        .iq_payload()
        .filter(|p| p.is("pubsub", pep::NS))?
        .get_child("publish", pep::NS)?;
    if publish.attr("node") != Some(NS_METADATA) {
        return None;
    }
    publish
        .get_child("item", pep::NS)?
        .get_child("metadata", NS_METADATA)
}

impl Module for Avatar {
    fn name(&self) -> &'static str {
        "avatar"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Xep(84),
                title: "User Avatar",
                version: "1.1.4",
                status: Status::Complete,
                note: "data and metadata nodes kept and notified by PEP",
            },
            Spec {
                doc: Doc::Xep(153),
                title: "vCard-Based Avatars",
                version: "1.1.1",
                status: Status::Complete,
                note: "the server puts the photo hash in its users' presence (XEP-0398)",
            },
            Spec {
                doc: Doc::Xep(172),
                title: "User Nickname",
                version: "1.1",
                status: Status::Complete,
                note: "a PEP node",
            },
            Spec {
                doc: Doc::Xep(292),
                title: "vCard4 Over XMPP",
                version: "0.12.0",
                status: Status::Partial,
                note: "kept and notified as a PEP node; not converted to or from vcard-temp",
            },
            Spec {
                doc: Doc::Xep(398),
                title: "User Avatar to vCard-Based Avatars Conversion",
                version: "1.0.0",
                status: Status::Complete,
                note: "both ways; the hash in broadcast and directed presence",
            },
        ]
    }

    fn disco(&self) -> &'static [Announce] {
        &[Announce {
            var: NS_CONVERSION,
            on: On::Account,
        }]
    }

    fn hooks(&self) -> &'static [Hook] {
        &[Hook::StanzaIn, Hook::PresenceOut]
    }

    fn filter_in<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        stanza: &'a Stanza,
        _access: Option<Access>,
        _out: &'a mut String,
    ) -> HookFuture<'a, Verdict> {
        Box::pin(async move {
            let Some(from) = cx.from.session() else {
                return Verdict::Pass;
            };
            let own = stanza
                .to
                .as_ref()
                .is_none_or(|t| t.is_bare() && t.bare() == from.bare());
            if stanza.kind != Kind::Iq || stanza.iq_type() != Some(IqType::Set) || !own {
                return Verdict::Pass;
            }
            let Some(user) = from.local() else {
                return Verdict::Pass;
            };
            if let Some(metadata) = published_metadata(stanza) {
                self.pep_to_vcard(&cx.im, user, metadata).await;
            } else if stanza
                .iq_payload()
                .is_some_and(|p| p.is("vCard", vcard::NS))
            {
                self.vcard_to_pep(&cx.im, from, user, stanza).await;
            }
            Verdict::Pass
        })
    }

    fn presence_out<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        stanza: &'a mut Stanza,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let Some(user) = cx.from.session().and_then(|f| f.local()) else {
                return;
            };
            // §4: a client's own <photo/> (empty: "not ready"; or a hash) is left alone;
            // an <x/> without one is replaced.
            if let Some(x) = stanza.el.get_child("x", NS_UPDATE) {
                if x.has_child("photo", NS_UPDATE) {
                    return;
                }
            }
            let Some(hash) = self.hash(&cx.im, user).await else {
                return;
            };
            stanza.el.remove_children("x", NS_UPDATE);
            stanza.el.push_child(
                Element::new("x", NS_UPDATE)
                    .with_child(Element::new("photo", NS_UPDATE).with_text(hash)),
            );
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::router::im::tests::{World, befriend, queued};

    const PNG: &[u8] = b"\x89PNG not really an image";

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn a_pep_avatar_becomes_the_vcard_photo_and_the_presence_hash() {
        let w = World::new(&["alice", "bob"]);
        let a = w.bind("alice", "phone");
        let b = w.bind("bob", "pc");
        befriend(&w, &a, &b);
        let id = super::hex_sha1(PNG);
        let data = b64(PNG);
        let (out, _) = w.send(
            &a,
            &format!(
                "<iq type='set' id='d'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
                 <publish node='urn:xmpp:avatar:data'><item id='{id}'>\
                 <data xmlns='urn:xmpp:avatar:data'>{data}</data></item></publish></pubsub></iq>"
            ),
        );
        assert!(out.contains("type='result'"), "{out}");
        let (out, _) = w.send(
            &a,
            &format!(
                "<iq type='set' id='m'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
                 <publish node='urn:xmpp:avatar:metadata'><item id='{id}'>\
                 <metadata xmlns='urn:xmpp:avatar:metadata'><info id='{id}' bytes='24' type='image/png'/>\
                 </metadata></item></publish></pubsub></iq>"
            ),
        );
        assert!(out.contains("type='result'"), "{out}");
        // Anyone reads the photo in the vCard.
        let (out, _) = w.send(
            &b,
            "<iq type='get' id='v' to='alice@home.example'><vCard xmlns='vcard-temp'/></iq>",
        );
        assert!(out.contains(&format!("<BINVAL>{data}</BINVAL>")), "{out}");
        assert!(out.contains("<TYPE>image/png</TYPE>"), "{out}");
        // Alice's presence carries the hash for bob.
        w.send(&b, "<presence/>");
        queued(&b);
        w.send(&a, "<presence/>");
        let got = queued(&b);
        assert!(
            got.iter()
                .any(|p| p.contains(&format!("<photo>{id}</photo>"))),
            "{got:?}"
        );
        // A client's own empty <photo/> ("not ready") is left as it is.
        w.send(
            &a,
            "<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>",
        );
        let got = queued(&b);
        assert!(got.iter().any(|p| p.contains("<photo/>")), "{got:?}");
    }

    #[test]
    fn a_vcard_photo_is_published_as_a_pep_avatar() {
        let w = World::new(&["alice", "bob"]);
        let a = w.bind("alice", "phone");
        let b = w.bind("bob", "pc");
        befriend(&w, &a, &b);
        let id = super::hex_sha1(PNG);
        let (out, _) = w.send(
            &a,
            &format!(
                "<iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>Alice</FN>\
                 <PHOTO><TYPE>image/png</TYPE><BINVAL>{}</BINVAL></PHOTO></vCard></iq>",
                b64(PNG)
            ),
        );
        assert!(out.contains("type='result'"), "{out}");
        let (out, _) = w.send(
            &b,
            "<iq type='get' id='i' to='alice@home.example'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <items node='urn:xmpp:avatar:metadata'/></pubsub></iq>",
        );
        assert!(
            out.contains(&format!("<info id='{id}' bytes='24' type='image/png'/>")),
            "{out}"
        );
        let (out, _) = w.send(
            &b,
            &format!(
                "<iq type='get' id='i' to='alice@home.example'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
                 <items node='urn:xmpp:avatar:data'><item id='{id}'/></items></pubsub></iq>"
            ),
        );
        assert!(out.contains(&b64(PNG)), "{out}");
        // The vCard keeps the other fields.
        let (out, _) = w.send(&a, "<iq type='get' id='v'><vCard xmlns='vcard-temp'/></iq>");
        assert!(out.contains("<FN>Alice</FN>"), "{out}");
        // A vCard without a photo turns the avatar off (XEP-0084 §4.5).
        w.send(
            &a,
            "<iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>",
        );
        let (out, _) = w.send(
            &b,
            "<iq type='get' id='i' to='alice@home.example'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <items node='urn:xmpp:avatar:metadata'/></pubsub></iq>",
        );
        assert!(
            out.contains("<metadata xmlns='urn:xmpp:avatar:metadata'/>"),
            "{out}"
        );
        w.send(&b, "<presence/>");
        queued(&b);
        w.send(&a, "<presence/>");
        let got = queued(&b);
        assert!(got.iter().any(|p| p.contains("<presence")), "{got:?}");
        assert!(got.iter().all(|p| !p.contains("<photo>")), "{got:?}");
    }

    #[test]
    fn metadata_whose_data_does_not_match_changes_no_vcard() {
        let w = World::new(&["alice"]);
        let a = w.bind("alice", "phone");
        let wrong = "0000000000000000000000000000000000000000";
        w.send(
            &a,
            &format!(
                "<iq type='set' id='d'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
                 <publish node='urn:xmpp:avatar:data'><item id='{wrong}'>\
                 <data xmlns='urn:xmpp:avatar:data'>{}</data></item></publish></pubsub></iq>",
                b64(PNG)
            ),
        );
        w.send(
            &a,
            &format!(
                "<iq type='set' id='m'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
                 <publish node='urn:xmpp:avatar:metadata'><item id='{wrong}'>\
                 <metadata xmlns='urn:xmpp:avatar:metadata'><info id='{wrong}' bytes='24' type='image/png'/>\
                 </metadata></item></publish></pubsub></iq>"
            ),
        );
        let (out, _) = w.send(&a, "<iq type='get' id='v'><vCard xmlns='vcard-temp'/></iq>");
        assert!(!out.contains("PHOTO"), "{out}");
    }
}
