//! XEP-0352: Client State Indication — a client tells the server when its user is not
//! looking (`<inactive/>`) and when it is again (`<active/>`), and the server holds back
//! what can wait, so a phone's radio stays asleep.
//!
//! The rules here are sans-IO: which stanzas are urgent ([`class`]) and the bounded buffer
//! of what is held for an inactive session ([`Held`]). The c2s machine turns the two
//! nonzas into an action (§4.2); the connection driver keeps a [`Held`] only while its
//! client is inactive and consults it before writing a queued stanza.
//!
//! What is held, and what goes at once (§3.2 leaves it to the server; this follows what
//! Prosody's `mod_csi_simple` and ejabberd's `mod_client_state` do):
//! - held: presence (available and unavailable; only the latest per sender full JID is
//!   kept, as ejabberd's `queue_presence` does), standalone chat states (XEP-0085; the
//!   latest per sender), receipts, chat markers, headlines (PEP notifications) and other
//!   messages with nothing for the user to read;
//! - urgent: a message with a body or a subject (the last step of a MUC join), one that is
//!   encrypted (OMEMO, OpenPGP, XEP-0380 `<encryption/>`), a call (XEP-0353), a group chat
//!   invitation, one the sender asked to be stored (XEP-0334 `<store/>`), a carbon copy or
//!   archive result of such a message; every iq; subscription requests and answers; every
//!   error. An urgent stanza goes at once, after what its sender (bare JID) had held, in
//!   order: XMPP keeps stanzas in order between two entities (RFC 6120 §10.1), and what
//!   other contacts sent can still wait (ejabberd's rule; Prosody flushes everything,
//!   which costs an inactive phone far more bytes, see BENCHMARKS.md).
//! - Everything held goes out when the client says `<active/>` and when it sends
//!   anything: its radio is awake anyway (as Prosody does).
//! - Bounded: once [`MAX_HELD`] stanzas or [`MAX_HELD_BYTES`] bytes are held, everything
//!   held goes out, so an inactive session never holds unbounded memory.
//!
//! The state is per stream and starts `active` (§5); it is never told to anyone else (§6).

use std::sync::Arc;

use super::{Doc, Module, Spec, Status};
use crate::ns;
use crate::router::Outgoing;
use crate::xml::Element;

/// XEP-0352's namespace.
pub const NS: &str = "urn:xmpp:csi:0";

/// At most this many stanzas are held before they are all written (Prosody's default
/// queue size is 256; presence is deduplicated here, so fewer are needed).
pub const MAX_HELD: usize = 128;

/// At most about this many bytes of stanzas (as client XML) are held before they are all
/// written.
pub const MAX_HELD_BYTES: usize = 64 * 1024;

/// XEP-0085 chat states.
const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0280 message carbons.
const CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0297 forwarded stanzas (inside carbons and archive results).
const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0313 archive results (answers to a query the client made: urgent).
const MAM: &[&str] = &["urn:xmpp:mam:2", "urn:xmpp:mam:1", "urn:xmpp:mam:0"];
/// Payloads that make a message urgent however short it is: encrypted content (OMEMO old
/// and new, OpenPGP for XMPP, legacy OpenPGP, XEP-0380's marker), calls (XEP-0353),
/// group chat invitations (XEP-0249 direct; the mediated one is checked apart).
const URGENT_PAYLOADS: &[(&str, &str)] = &[
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("x", "jabber:x:encrypted"),
    ("encryption", "urn:xmpp:eme:0"),
    ("x", "jabber:x:conference"),
];
/// XEP-0353 Jingle Message Initiation: any of its elements is a call being set up.
const JINGLE_MESSAGE: &[&str] = &["urn:xmpp:jingle-message:0", "urn:xmpp:jingle-message:1"];
/// XEP-0045's user namespace, for mediated invitations.
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// A client's state (§4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Active,
    Inactive,
}

impl State {
    /// The state a CSI nonza asks for, or `None` for any other element in XEP-0352's
    /// namespace (`<csi/>` is the server's stream feature, not something a client sends).
    pub fn of(el: &Element) -> Option<State> {
        match (el.ns(), el.name()) {
            (NS, "active") => Some(State::Active),
            (NS, "inactive") => Some(State::Inactive),
            _ => None,
        }
    }
}

/// What an inactive session does with a stanza for its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Written now, after everything held.
    Urgent,
    /// Held; a later presence from the same sender replaces it.
    Presence,
    /// A standalone chat state: held; a later one from the same sender replaces it.
    ChatState,
    /// Held, in order, never replaced (receipts, markers, headlines …).
    Other,
}

/// Whether `child` is the `name` element of the stanza's own namespace (the client's, or
/// the server's on an element that came over federation).
fn is_content(child: &Element, name: &str) -> bool {
    child.name() == name && (child.ns() == ns::CLIENT || child.ns() == ns::SERVER)
}

/// How an inactive session treats `el`, a stanza on its way to the client.
pub fn class(el: &Element) -> Class {
    match el.name() {
        "presence" => match el.attr("type") {
            // Availability (RFC 6121 §4): what a contact's icon shows; only the last
            // one matters.
            None | Some("unavailable") => Class::Presence,
            // Subscription requests and answers want the user (RFC 6121 §3), errors
            // answer something the client did.
            _ => Class::Urgent,
        },
        "message" => message_class(el),
        // Iqs are requests the client must answer, or answers it waits for.
        _ => Class::Urgent,
    }
}

fn message_class(el: &Element) -> Class {
    match el.attr("type") {
        Some("error") => return Class::Urgent,
        // Headlines are ephemeral (RFC 6121 §5.2.2): PEP notifications and the like.
        Some("headline") => return Class::Other,
        _ => {}
    }
    if is_important_message(el) {
        return Class::Urgent;
    }
    // Carbon copies (XEP-0280) and archive results (XEP-0313) carry the message inside.
    for wrapper in el.children() {
        let is_carbon = wrapper.ns() == CARBONS && matches!(wrapper.name(), "sent" | "received");
        if is_carbon || (wrapper.name() == "result" && MAM.contains(&wrapper.ns())) {
            if MAM.contains(&wrapper.ns()) {
                // An answer to the client's own query, followed by the iq result.
                return Class::Urgent;
            }
            let inner = wrapper
                .get_child("forwarded", FORWARD)
                .into_iter()
                .flat_map(|f| f.children())
                .find(|m| is_content(m, "message"));
            if inner.is_some_and(is_important_message) {
                return Class::Urgent;
            }
        }
    }
    let only_chat_state = el.children().next().is_some()
        && el
            .children()
            .all(|c| c.ns() == CHATSTATES || c.ns() == super::hints::NS);
    if only_chat_state {
        Class::ChatState
    } else {
        Class::Other
    }
}

/// A message a user would want to see now: something to read, an encrypted payload, a
/// call, an invitation, or one its sender asked to be stored.
fn is_important_message(el: &Element) -> bool {
    el.children().any(|c| {
        is_content(c, "body")
            || is_content(c, "subject")
            || URGENT_PAYLOADS.iter().any(|(name, ns)| c.is(name, ns))
            || JINGLE_MESSAGE.contains(&c.ns())
            || (c.is("x", MUC_USER) && c.has_child("invite", MUC_USER))
            || c.is(super::hints::Hint::Store.name(), super::hints::NS)
    })
}

/// What became of a stanza offered to [`Held`].
#[derive(Debug)]
pub enum Offered {
    /// Held back.
    Held,
    /// Urgent: write these now, oldest first: what was held from the same sender (bare
    /// JID) and then the stanza itself. What other senders sent stays held: XMPP keeps
    /// order only between two entities (RFC 6120 §10.1), and holding it is what saves
    /// the bytes (ejabberd's `mod_client_state` does the same).
    Release(Vec<Arc<Outgoing>>),
    /// The buffer reached its bound: everything held, this stanza last, must be written
    /// now ([`Held::take`]).
    Full,
}

/// The bare JID a stanza comes from (`""` when it has no `from`: the server).
fn sender(el: &Element) -> &str {
    let from = el.attr("from").unwrap_or("");
    from.split_once('/').map_or(from, |(bare, _)| bare)
}

/// What an inactive session holds back from its client, in arrival order, bounded in
/// stanzas and bytes. Boxed and kept only while the client is inactive, so an active or
/// idle session pays nothing for it.
#[derive(Debug, Default)]
pub struct Held {
    /// The held stanzas, oldest first; shared with their other recipients.
    items: Vec<Arc<Outgoing>>,
    /// Their size as client XML (the same measure as the session queue's).
    bytes: usize,
}

impl Held {
    pub fn new() -> Held {
        Held::default()
    }

    /// Takes `stanza` for the client. A presence or standalone chat state replaces the
    /// one held from the same sender (the new one goes last, where it arrived).
    pub fn offer(&mut self, stanza: Arc<Outgoing>) -> Offered {
        let class = class(&stanza.el);
        if matches!(class, Class::Presence | Class::ChatState) {
            let from = stanza.el.attr("from");
            let replaced = self
                .items
                .iter()
                .position(|h| h.el.attr("from") == from && self::class(&h.el) == class);
            if let Some(i) = replaced {
                let old = self.items.remove(i);
                self.bytes -= old.len.min(self.bytes);
            }
        }
        if class == Class::Urgent {
            let from = sender(&stanza.el);
            let mut release = Vec::new();
            let mut bytes = self.bytes;
            self.items.retain(|h| {
                let is_theirs = sender(&h.el) == from;
                if is_theirs {
                    bytes -= h.len.min(bytes);
                    release.push(h.clone());
                }
                !is_theirs
            });
            self.bytes = bytes;
            if self.items.is_empty() {
                // Give the memory back.
                self.items = Vec::new();
            }
            release.push(stanza);
            return Offered::Release(release);
        }
        self.bytes = self.bytes.saturating_add(stanza.len);
        self.items.push(stanza);
        if self.items.len() >= MAX_HELD || self.bytes >= MAX_HELD_BYTES {
            Offered::Full
        } else {
            Offered::Held
        }
    }

    /// Everything held, oldest first; the buffer is left empty (and its memory freed).
    pub fn take(&mut self) -> Vec<Arc<Outgoing>> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Stanzas held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Bytes held (as client XML).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The module: the stream feature (§4.1) and the table row; the connection does the rest.
pub struct Csi;

impl Module for Csi {
    fn name(&self) -> &'static str {
        "csi"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(352),
            title: "Client State Indication",
            version: "1.0.0",
            status: Status::Complete,
            note: "while inactive: presence (latest per contact), chat states, receipts \
                   held; bodies, encrypted messages, calls, iqs, subscriptions and errors \
                   at once, after what their sender had held; all on active",
        }]
    }

    /// §4.1: advertised once the client has authenticated.
    fn stream_features(&self) -> Vec<Element> {
        vec![Element::new("csi", NS)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One element, read as a client stream's child.
    fn parse_one(xml: &str) -> Element {
        let mut f = crate::xml::Framer::default();
        f.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
            .unwrap();
        f.feed(xml.as_bytes()).unwrap();
        assert!(matches!(
            f.next_event(),
            Ok(Some(crate::xml::Event::Open(_)))
        ));
        match f.next_event() {
            Ok(Some(crate::xml::Event::Stanza(el))) => el,
            other => panic!("{other:?}"),
        }
    }

    fn out(xml: &str) -> Arc<Outgoing> {
        Outgoing::new(parse_one(xml))
    }

    fn presence(from: &str, show: Option<&str>) -> Arc<Outgoing> {
        match show {
            Some("unavailable") => out(&format!(
                "<presence xmlns='jabber:client' from='{from}' type='unavailable'/>"
            )),
            Some(s) => out(&format!(
                "<presence xmlns='jabber:client' from='{from}'><show>{s}</show></presence>"
            )),
            None => out(&format!("<presence xmlns='jabber:client' from='{from}'/>")),
        }
    }

    fn chat_state(from: &str, state: &str) -> Arc<Outgoing> {
        out(&format!(
            "<message xmlns='jabber:client' from='{from}' type='chat'>\
             <{state} xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ))
    }

    fn body(from: &str) -> Arc<Outgoing> {
        out(&format!(
            "<message xmlns='jabber:client' from='{from}' type='chat'><body>hi</body>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ))
    }

    fn xml_of(items: &[Arc<Outgoing>]) -> Vec<String> {
        items.iter().map(|o| o.el.to_xml_in(ns::CLIENT)).collect()
    }

    #[test]
    fn reads_the_nonzas() {
        let el = |x: &str| parse_one(x);
        assert_eq!(
            State::of(&el("<inactive xmlns='urn:xmpp:csi:0'/>")),
            Some(State::Inactive)
        );
        assert_eq!(
            State::of(&el("<active xmlns='urn:xmpp:csi:0'/>")),
            Some(State::Active)
        );
        assert_eq!(State::of(&el("<csi xmlns='urn:xmpp:csi:0'/>")), None);
        assert_eq!(State::of(&el("<active xmlns='urn:example'/>")), None);
    }

    #[test]
    fn classes() {
        let c = |x: &str| class(&parse_one(x));
        assert_eq!(c("<presence xmlns='jabber:client'/>"), Class::Presence);
        assert_eq!(
            c("<presence xmlns='jabber:client' type='unavailable'/>"),
            Class::Presence
        );
        for t in [
            "subscribe",
            "subscribed",
            "unsubscribe",
            "unsubscribed",
            "error",
        ] {
            assert_eq!(
                c(&format!("<presence xmlns='jabber:client' type='{t}'/>")),
                Class::Urgent,
                "{t}"
            );
        }
        assert_eq!(
            c("<iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"),
            Class::Urgent
        );
        assert_eq!(
            c("<message xmlns='jabber:client'><body>x</body></message>"),
            Class::Urgent
        );
        assert_eq!(
            c("<message xmlns='jabber:server' type='groupchat'><subject/></message>"),
            Class::Urgent
        );
        assert_eq!(
            c("<message xmlns='jabber:client' type='error'><error/></message>"),
            Class::Urgent
        );
        assert_eq!(
            c(
                "<message xmlns='jabber:client'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"
            ),
            Class::Urgent
        );
        assert_eq!(
            c(
                "<message xmlns='jabber:client'><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>"
            ),
            Class::Urgent
        );
        assert_eq!(
            c(
                "<message xmlns='jabber:client'><x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@b'/></x></message>"
            ),
            Class::Urgent
        );
        assert_eq!(
            c(
                "<message xmlns='jabber:client'><store xmlns='urn:xmpp:hints'/><received xmlns='urn:xmpp:receipts' id='1'/></message>"
            ),
            Class::Urgent
        );
        assert_eq!(
            c(
                "<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/><no-store xmlns='urn:xmpp:hints'/></message>"
            ),
            Class::ChatState
        );
        assert_eq!(
            c(
                "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='1'/></message>"
            ),
            Class::Other
        );
        assert_eq!(
            c(
                "<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
            ),
            Class::Other
        );
        // Headline (PEP) with a body is still ephemeral.
        assert_eq!(
            c(
                "<message xmlns='jabber:client' type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'/></message>"
            ),
            Class::Other
        );
        assert_eq!(c("<message xmlns='jabber:client'/>"), Class::Other);
    }

    #[test]
    fn carbons_and_archive_results_are_judged_by_what_they_carry() {
        let c = |x: &str| class(&parse_one(x));
        let carbon = |inner: &str| {
            format!(
                "<message xmlns='jabber:client'><received xmlns='urn:xmpp:carbons:2'>\
                 <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'>{inner}\
                 </message></forwarded></received></message>"
            )
        };
        assert_eq!(c(&carbon("<body>x</body>")), Class::Urgent);
        assert_eq!(
            c(&carbon(
                "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
            )),
            Class::Other
        );
        assert_eq!(
            c("<message xmlns='jabber:client'><result xmlns='urn:xmpp:mam:2' id='1'/></message>"),
            Class::Urgent
        );
    }

    #[test]
    fn keeps_the_latest_presence_per_sender_in_arrival_order() {
        let mut h = Held::new();
        assert!(matches!(
            h.offer(presence("a@h/1", Some("away"))),
            Offered::Held
        ));
        assert!(matches!(h.offer(presence("b@h/1", None)), Offered::Held));
        assert!(matches!(
            h.offer(presence("a@h/2", Some("xa"))),
            Offered::Held
        ));
        assert!(matches!(
            h.offer(presence("a@h/1", Some("dnd"))),
            Offered::Held
        ));
        assert!(matches!(
            h.offer(presence("b@h/1", Some("unavailable"))),
            Offered::Held
        ));
        assert_eq!(h.len(), 3);
        let bytes: usize = h.items.iter().map(|o| o.len).sum();
        assert_eq!(h.bytes(), bytes);
        let got = xml_of(&h.take());
        assert!(got[0].contains("a@h/2") && got[0].contains("xa"), "{got:?}");
        assert!(
            got[1].contains("a@h/1") && got[1].contains("dnd"),
            "{got:?}"
        );
        assert!(
            got[2].contains("b@h/1") && got[2].contains("unavailable"),
            "{got:?}"
        );
        assert!(h.is_empty() && h.bytes() == 0);
    }

    #[test]
    fn chat_states_replace_each_other_but_not_presence() {
        let mut h = Held::new();
        h.offer(presence("a@h/1", None));
        h.offer(chat_state("a@h/1", "composing"));
        h.offer(chat_state("a@h/1", "paused"));
        h.offer(out(
            "<message xmlns='jabber:client' from='a@h/1'><received xmlns='urn:xmpp:receipts' id='1'/></message>",
        ));
        h.offer(out(
            "<message xmlns='jabber:client' from='a@h/1'><received xmlns='urn:xmpp:receipts' id='2'/></message>",
        ));
        let got = xml_of(&h.take());
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].starts_with("<presence"));
        assert!(got[1].contains("<paused"));
        assert!(got[2].contains("id=\"1\"") && got[3].contains("id=\"2\""));
    }

    fn released(o: Offered) -> Vec<String> {
        match o {
            Offered::Release(v) => xml_of(&v),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_urgent_stanza_releases_what_its_sender_had_held_before_it() {
        let mut h = Held::new();
        h.offer(presence("a@h/1", None));
        h.offer(presence("b@h/1", None));
        h.offer(chat_state("a@h/1", "composing"));
        h.offer(presence("a@h/2", Some("away")));
        let before = h.bytes();
        let got = released(h.offer(body("a@h/1")));
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].starts_with("<presence") && got[0].contains("a@h/1"));
        assert!(got[1].contains("<composing"));
        // Another resource of the same account: the same sender (bare JID).
        assert!(got[2].contains("a@h/2"));
        assert!(got[3].contains("<body>hi</body>"));
        // b's presence stays held, and the bytes count only it.
        assert_eq!(h.len(), 1);
        assert!(h.bytes() < before && h.bytes() > 0);
        assert_eq!(h.bytes(), h.items[0].len);
        let got = released(h.offer(body("a@h/1")));
        assert_eq!(got.len(), 1);
        let rest = xml_of(&h.take());
        assert!(rest[0].contains("b@h/1"), "{rest:?}");
        // From the server (no 'from'): what the server sent is released with it.
        h.offer(out(
            "<message xmlns='jabber:client' type='headline'><x xmlns='urn:example'/></message>",
        ));
        h.offer(presence("c@h/1", None));
        let got = released(h.offer(out(
            "<iq xmlns='jabber:client' type='set' id='p'><query xmlns='jabber:iq:roster'/></iq>",
        )));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn is_bounded_in_stanzas_and_bytes() {
        let mut h = Held::new();
        for i in 0..MAX_HELD - 1 {
            assert!(matches!(
                h.offer(presence(&format!("c{i}@h/r"), None)),
                Offered::Held
            ));
        }
        assert!(matches!(h.offer(presence("last@h/r", None)), Offered::Full));
        assert_eq!(h.take().len(), MAX_HELD);

        let big = "x".repeat(MAX_HELD_BYTES / 4);
        let mut flushed = false;
        for i in 0..8 {
            let s = out(&format!(
                "<message xmlns='jabber:client' from='c{i}@h' type='headline'><event xmlns='urn:example'>{big}</event></message>"
            ));
            if matches!(h.offer(s), Offered::Full) {
                flushed = true;
                assert!(h.bytes() >= MAX_HELD_BYTES);
                assert!(h.len() <= 4, "{}", h.len());
                break;
            }
        }
        assert!(flushed);
    }

    #[test]
    fn announces_the_stream_feature() {
        let f = Csi.stream_features();
        assert_eq!(f.len(), 1);
        assert!(f[0].is("csi", NS));
    }
}
