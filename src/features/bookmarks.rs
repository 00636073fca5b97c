//! Group-chat bookmarks (XEP-0402) for old and new clients alike: new clients keep one
//! PEP item per room in `urn:xmpp:bookmarks:1` (a whitelist node of the owner's, handled by
//! the PEP module); clients that still use XEP-0048 in private XML storage (XEP-0049,
//! XEP-0411) read and write the same bookmarks through `storage:bookmarks`, which this
//! module answers from the PEP node and writes into it (XEP-0402 §3.3
//! `urn:xmpp:bookmarks:1#compat`). A bookmark set either way is seen both ways; a legacy
//! client's `<url/>` bookmarks, which XEP-0402 has no place for, are not kept.

use super::pep::{self, PepStore as _, as_owner};
use super::{Access, Announce, Doc, Hook, HookCx, HookFuture, Module, On, Spec, Status, Verdict};
use crate::jid::{FullJid, Jid};
use crate::router::im::{Im, on_pool};
use crate::stanza::{IqType, Kind, Stanza, StanzaCondition, StanzaError};
use crate::xml::{Element, parse_fragment};

/// XEP-0402's node and namespace.
pub const NS: &str = "urn:xmpp:bookmarks:1";
/// XEP-0402 §3.3: the legacy storage is kept in step.
pub const NS_COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
/// XEP-0048's namespace, inside XEP-0049 private storage.
pub const NS_LEGACY: &str = "storage:bookmarks";
const NS_PRIVATE: &str = "jabber:iq:private";

/// The most bookmarks one legacy write converts (the node keeps at most
/// `[pep] max_items_per_node` anyway).
const MAX_BOOKMARKS: usize = 256;

pub struct Bookmarks;

/// A XEP-0048 `<conference/>` as a XEP-0402 item: (room JID, `<conference/>`).
fn to_item(legacy: &Element) -> Option<(String, Element)> {
    let jid = Jid::parse(legacy.attr("jid")?).ok()?;
    let mut c = Element::new("conference", NS);
    if let Some(name) = legacy.attr("name") {
        c.set_attr("name", name);
    }
    if matches!(legacy.attr("autojoin"), Some("true" | "1")) {
        c.set_attr("autojoin", "true");
    }
    for child in ["nick", "password"] {
        if let Some(v) = legacy.get_child(child, NS_LEGACY) {
            c.push_child(Element::new(child, NS).with_text(v.text()));
        }
    }
    Some((jid.as_str().to_owned(), c))
}

/// A XEP-0402 item (its id is the room's JID) as a XEP-0048 `<conference/>`.
fn to_legacy(jid: &str, c: &Element) -> Element {
    let mut l = Element::new("conference", NS_LEGACY).with_attr("jid", jid);
    if let Some(name) = c.attr("name") {
        l.set_attr("name", name);
    }
    if matches!(c.attr("autojoin"), Some("true" | "1")) {
        l.set_attr("autojoin", "true");
    }
    for child in ["nick", "password"] {
        if let Some(v) = c.get_child(child, NS) {
            l.push_child(Element::new(child, NS_LEGACY).with_text(v.text()));
        }
    }
    l
}

/// The `<storage xmlns='storage:bookmarks'/>` of a private-storage request, if it has
/// one, and whether it is all the request asks.
fn legacy_storage(iq: &Stanza) -> Option<(&Element, bool)> {
    let q = iq.iq_payload().filter(|p| p.is("query", NS_PRIVATE))?;
    let storage = q.children().find(|s| s.is("storage", NS_LEGACY))?;
    Some((storage, q.children().count() == 1))
}

/// XEP-0402 §3's publish-options: the owner only, every item kept, none sent on its own.
fn publish_options() -> Element {
    let field = |var: &str, value: &str| {
        Element::new("field", "jabber:x:data")
            .with_attr("var", var)
            .with_child(Element::new("value", "jabber:x:data").with_text(value))
    };
    Element::new("publish-options", pep::NS).with_child(
        Element::new("x", "jabber:x:data")
            .with_attr("type", "submit")
            .with_child(field("FORM_TYPE", pep::node::PUBLISH_OPTIONS).with_attr("type", "hidden"))
            .with_child(field("pubsub#persist_items", "true"))
            .with_child(field("pubsub#max_items", "max"))
            .with_child(field("pubsub#send_last_published_item", "never"))
            .with_child(field("pubsub#access_model", "whitelist")),
    )
}

/// Adds `room` to `user`'s XEP-0402 bookmarks with autojoin, named `name` and with the
/// user's name as nick (or, `add` false, takes it away), as the user's own client would,
/// through PEP: their clients learn of it (a notification, and XEP-0048 clients through
/// the compatibility storage) and join the room on their own. What the household's room
/// does for someone who joins or leaves the household. An existing bookmark of the room
/// is left as the user made it. Whether it was done.
pub(crate) async fn set_room_bookmark(
    im: &Im<'_>,
    user: &str,
    room: &crate::jid::BareJid,
    name: &str,
    add: bool,
) -> bool {
    let Ok(from) = FullJid::new(Some(user), im.router.domain(), "hearth") else {
        return false;
    };
    let existing = match Bookmarks::current(im, user).await {
        Ok(e) => e,
        Err(_) => return false,
    };
    let has = existing.iter().any(|(j, _)| j == room.as_str());
    let pubsub = if add {
        if has {
            return true;
        }
        let conference = Element::new("conference", NS)
            .with_attr("name", name)
            .with_attr("autojoin", "true")
            .with_child(Element::new("nick", NS).with_text(user));
        Element::new("pubsub", pep::NS)
            .with_child(
                Element::new("publish", pep::NS)
                    .with_attr("node", NS)
                    .with_child(
                        Element::new("item", pep::NS)
                            .with_attr("id", room.as_str())
                            .with_child(conference),
                    ),
            )
            .with_child(publish_options())
    } else {
        if !has {
            return true;
        }
        Element::new("pubsub", pep::NS).with_child(
            Element::new("retract", pep::NS)
                .with_attr("node", NS)
                .with_attr("notify", "true")
                .with_child(Element::new("item", pep::NS).with_attr("id", room.as_str())),
        )
    };
    as_owner(im, &from, pubsub).await
}

impl Bookmarks {
    /// The account's XEP-0402 bookmarks: (room JID, `<conference/>`), oldest first.
    async fn current(im: &Im<'_>, user: &str) -> Result<Vec<(String, Element)>, StanzaError> {
        let u = user.to_owned();
        let items = on_pool(im.storage, move |s| s.pep_items(&u, NS, &[], None))
            .await
            .map_err(|e| {
                log::error!("storage: {e}");
                StanzaError::new(StanzaCondition::InternalServerError)
            })?;
        Ok(items
            .into_iter()
            .filter_map(|i| {
                let c = parse_fragment(&i.payload)?;
                c.is("conference", NS).then_some((i.id, c))
            })
            .collect())
    }

    /// XEP-0049 get of `storage:bookmarks`: the XEP-0402 bookmarks, as XEP-0048.
    async fn get(im: &Im<'_>, user: &str) -> Result<Element, StanzaError> {
        let mut storage = Element::new("storage", NS_LEGACY);
        for (jid, c) in Bookmarks::current(im, user).await? {
            storage.push_child(to_legacy(&jid, &c));
        }
        Ok(Element::new("query", NS_PRIVATE).with_child(storage))
    }

    /// XEP-0049 set of `storage:bookmarks`: each conference published (or replaced) as a
    /// XEP-0402 item, and the items it no longer lists retracted.
    async fn set(
        im: &Im<'_>,
        from: &FullJid,
        user: &str,
        storage: &Element,
    ) -> Result<(), StanzaError> {
        let wanted: Vec<(String, Element)> = storage
            .children()
            .filter(|c| c.is("conference", NS_LEGACY))
            .take(MAX_BOOKMARKS)
            .filter_map(to_item)
            .collect();
        let existing = Bookmarks::current(im, user).await?;
        for (jid, c) in &wanted {
            if existing.iter().any(|(j, e)| j == jid && e == c) {
                continue;
            }
            let publish = Element::new("pubsub", pep::NS)
                .with_child(
                    Element::new("publish", pep::NS)
                        .with_attr("node", NS)
                        .with_child(
                            Element::new("item", pep::NS)
                                .with_attr("id", jid.as_str())
                                .with_child(c.clone()),
                        ),
                )
                .with_child(publish_options());
            if !as_owner(im, from, publish).await {
                return Err(StanzaError::new(StanzaCondition::ResourceConstraint)
                    .with_text("the bookmarks could not all be stored"));
            }
        }
        for (jid, _) in existing
            .iter()
            .filter(|(j, _)| !wanted.iter().any(|(w, _)| w == j))
        {
            let retract = Element::new("pubsub", pep::NS).with_child(
                Element::new("retract", pep::NS)
                    .with_attr("node", NS)
                    .with_attr("notify", "true")
                    .with_child(Element::new("item", pep::NS).with_attr("id", jid.as_str())),
            );
            as_owner(im, from, retract).await;
        }
        Ok(())
    }
}

impl Module for Bookmarks {
    fn name(&self) -> &'static str {
        "bookmarks"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Xep(402),
                title: "PEP Native Bookmarks",
                version: "1.2.0",
                status: Status::Complete,
                note: "the node is kept by PEP; #compat with XEP-0048 in private storage",
            },
            Spec {
                doc: Doc::Xep(48),
                title: "Bookmarks",
                version: "1.2",
                status: Status::Partial,
                note: "in private storage, kept in step with XEP-0402; URL bookmarks dropped",
            },
            Spec {
                doc: Doc::Xep(411),
                title: "Bookmarks Conversion",
                version: "1.1.0",
                status: Status::Partial,
                note: "private storage (XEP-0049) both ways; not the XEP-0048 PEP node",
            },
        ]
    }

    fn disco(&self) -> &'static [Announce] {
        &[Announce {
            var: NS_COMPAT,
            on: On::Account,
        }]
    }

    fn hooks(&self) -> &'static [Hook] {
        &[Hook::StanzaIn]
    }

    fn filter_in<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        stanza: &'a Stanza,
        _access: Option<Access>,
        out: &'a mut String,
    ) -> HookFuture<'a, Verdict> {
        Box::pin(async move {
            let Some(from) = cx.from.session() else {
                return Verdict::Pass;
            };
            if stanza.kind != Kind::Iq {
                return Verdict::Pass;
            }
            let own = stanza
                .to
                .as_ref()
                .is_none_or(|t| t.is_bare() && t.bare() == from.bare());
            let (Some((storage, alone)), Some(user), true) =
                (legacy_storage(stanza), from.local(), own)
            else {
                return Verdict::Pass;
            };
            let outcome = match stanza.iq_type() {
                // Answered from PEP; a get of several elements at once is the private
                // storage module's (its copy of the bookmarks is kept by the sets).
                Some(IqType::Get) if alone => Bookmarks::get(&cx.im, user).await.map(Some),
                // Converted, then stored as private storage stores anything (which keeps
                // the URL bookmarks XEP-0402 has no place for).
                Some(IqType::Set) => match Bookmarks::set(&cx.im, from, user, storage).await {
                    Ok(()) => return Verdict::Pass,
                    Err(e) => Err(e),
                },
                _ => return Verdict::Pass,
            };
            let reply = match outcome {
                Ok(payload) => Some(stanza.iq_result(payload)),
                Err(e) => stanza.error_reply(e),
            };
            if let Some(r) = reply {
                cx.im.answer(cx.from, out, r);
            }
            Verdict::Stop
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::router::im::tests::{World, queued};

    #[test]
    fn legacy_and_pep_bookmarks_are_the_same_list() {
        let w = World::new(&["alice"]);
        let a = w.bind("alice", "phone");
        // An old client stores two rooms in private storage…
        let (out, _) = w.send(
            &a,
            "<iq type='set' id='s'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>\
             <conference jid='family@conference.home.example' name='Family' autojoin='true'><nick>Al</nick></conference>\
             <conference jid='cousins@conference.home.example' name='Cousins'/>\
             <url name='web' url='https://example.org'/>\
             </storage></query></iq>",
        );
        assert!(out.contains("type='result'"), "{out}");
        // …a new one reads them from PEP…
        let (out, _) = w.send(
            &a,
            "<iq type='get' id='i'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <items node='urn:xmpp:bookmarks:1'/></pubsub></iq>",
        );
        assert!(
            out.contains("<item id='family@conference.home.example'><conference xmlns='urn:xmpp:bookmarks:1' name='Family' autojoin='true'><nick>Al</nick></conference></item>"),
            "{out}"
        );
        assert!(out.contains("cousins@conference.home.example"), "{out}");
        // …which is private (XEP-0402 §3: whitelist).
        let (out, _) = w.send(
            &a,
            "<iq type='get' id='c'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>\
             <configure node='urn:xmpp:bookmarks:1'/></pubsub></iq>",
        );
        assert!(out.contains("<value>whitelist</value>"), "{out}");
        // The new client adds one; the old one sees three.
        w.send(
            &a,
            "<iq type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <publish node='urn:xmpp:bookmarks:1'><item id='holiday@conference.home.example'>\
             <conference xmlns='urn:xmpp:bookmarks:1' name='Holiday'/></item></publish>\
             <publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='pubsub#persist_items'><value>true</value></field>\
             <field var='pubsub#max_items'><value>max</value></field>\
             <field var='pubsub#send_last_published_item'><value>never</value></field>\
             <field var='pubsub#access_model'><value>whitelist</value></field>\
             </x></publish-options></pubsub></iq>",
        );
        let get = "<iq type='get' id='g'><query xmlns='jabber:iq:private'>\
                   <storage xmlns='storage:bookmarks'/></query></iq>";
        let (out, _) = w.send(&a, get);
        assert_eq!(out.matches("<conference ").count(), 3, "{out}");
        assert!(
            out.contains("<conference jid='family@conference.home.example' name='Family' autojoin='true'><nick>Al</nick></conference>"),
            "{out}"
        );
        // The old client removes all but one: the others are retracted.
        w.send(
            &a,
            "<iq type='set' id='s'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>\
             <conference jid='holiday@conference.home.example' name='Holiday'/>\
             </storage></query></iq>",
        );
        let (out, _) = w.send(
            &a,
            "<iq type='get' id='i'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <items node='urn:xmpp:bookmarks:1'/></pubsub></iq>",
        );
        assert_eq!(out.matches("<item ").count(), 1, "{out}");
        assert!(out.contains("holiday@"), "{out}");
    }

    #[test]
    fn another_account_cannot_read_the_bookmarks() {
        let w = World::new(&["alice", "bob"]);
        let a = w.bind("alice", "phone");
        let b = w.bind("bob", "pc");
        w.send(
            &a,
            "<iq type='set' id='s'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>\
             <conference jid='family@conference.home.example'/></storage></query></iq>",
        );
        let (out, _) = w.send(
            &b,
            "<iq type='get' id='g' to='alice@home.example'><query xmlns='jabber:iq:private'>\
             <storage xmlns='storage:bookmarks'/></query></iq>",
        );
        // Refused before any module (XEP-0049 §3: the account's own).
        let out = format!("{out}{}", queued(&b).join(""));
        assert!(out.contains("<forbidden"), "{out}");
        assert!(!out.contains("family@"), "{out}");
        let (out, _) = w.send(
            &b,
            "<iq type='get' id='i' to='alice@home.example'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <items node='urn:xmpp:bookmarks:1'/></pubsub></iq>",
        );
        assert!(out.contains("type='error'"), "{out}");
    }
}
