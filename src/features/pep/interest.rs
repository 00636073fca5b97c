//! Who wants which PEP notifications without subscribing (XEP-0163 §4.3.1 "filtered
//! notifications"): a client that lists `NODE+notify` among its disco features gets the
//! owner's notifications for NODE, and learns its features through the XEP-0115 hash in
//! its presence. This keeps, in memory and bounded:
//!
//! - the features behind each verified caps hash (§5.4: the server asks the first client
//!   with a hash it has not seen, checks the answer against the hash, and keeps it);
//! - for each owner, the full JIDs whose available presence reached it and what they want.
//!
//! Pure: the module sends the queries and the notifications this decides.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ns;
use crate::xml::Element;

/// Caps hashes remembered; past this the cache starts again (a stranger cannot grow it:
/// only verified hashes go in, but many clients' versions could).
pub const MAX_CAPS: usize = 4096;
/// Caps queries waiting for an answer at once.
pub const MAX_QUERIES: usize = 256;
/// An unanswered caps query is forgotten after this.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Full JIDs remembered per owner (each contact's resources that came online).
pub const MAX_SEEN: usize = 1024;
/// Features read from one disco#info answer.
const MAX_FEATURES: usize = 1024;

/// The nodes a client wants notifications for.
pub type Wants = Arc<[String]>;

/// The `<c/>` of a presence (XEP-0115 §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapsRef {
    pub hash: String,
    pub ver: String,
    pub node: String,
}

impl CapsRef {
    /// Reads the `<c/>` of a presence; `None` for none, or the legacy form without `hash`.
    pub fn of(presence: &Element) -> Option<CapsRef> {
        let c = presence.get_child("c", crate::features::caps::NS)?;
        Some(CapsRef {
            hash: c.attr("hash")?.to_owned(),
            ver: c.attr("ver")?.to_owned(),
            node: c.attr("node").unwrap_or_default().to_owned(),
        })
    }

    fn key(&self) -> String {
        format!("{}\u{0}{}", self.hash, self.ver)
    }
}

#[derive(Clone, Debug)]
enum Seen {
    Known(Wants),
    /// Waiting for the answer about this caps key.
    Waiting(String),
}

struct Query {
    key: String,
    caps: CapsRef,
    /// The full JID asked: only its answer counts.
    asked: String,
    sent: Instant,
}

/// What the module should do after a presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Nothing,
    /// Send the owner's last items of these nodes to the JID (a newly seen client).
    SendLast(Wants),
    /// Ask the JID for its features: an iq with this id, for `node#ver`.
    Ask {
        id: String,
        node_ver: String,
    },
}

#[derive(Default)]
pub struct Interest {
    caps: HashMap<String, Wants>,
    queries: HashMap<String, Query>,
    seen: HashMap<String, HashMap<String, Seen>>,
    next_id: u64,
}

impl Interest {
    /// Available presence from `jid` (a full JID) reached `owner` (a local account).
    pub fn available(&mut self, owner: &str, jid: &str, caps: Option<CapsRef>) -> Next {
        let Some(caps) = caps else {
            // No hash, no interest (XEP-0163 §4.3.1): only explicit subscriptions.
            self.unavailable(owner, jid);
            return Next::Nothing;
        };
        let key = caps.key();
        let now = Instant::now();
        let known = self.caps.get(&key).cloned();
        let seen = self.seen.entry(owner.to_owned()).or_default();
        let previous = seen.get(jid).cloned();
        if seen.len() >= MAX_SEEN && previous.is_none() {
            return Next::Nothing;
        }
        match known {
            Some(wants) => {
                let unchanged = matches!(&previous, Some(Seen::Known(w)) if Arc::ptr_eq(w, &wants));
                seen.insert(jid.to_owned(), Seen::Known(wants.clone()));
                if unchanged {
                    Next::Nothing
                } else {
                    Next::SendLast(wants)
                }
            }
            None => {
                if matches!(&previous, Some(Seen::Waiting(k)) if *k == key) {
                    return Next::Nothing;
                }
                seen.insert(jid.to_owned(), Seen::Waiting(key.clone()));
                self.queries
                    .retain(|_, q| now.duration_since(q.sent) < QUERY_TIMEOUT);
                if self.queries.values().any(|q| q.key == key) || self.queries.len() >= MAX_QUERIES
                {
                    return Next::Nothing;
                }
                self.next_id += 1;
                let id = format!("pep-caps-{}", self.next_id);
                let node_ver = format!("{}#{}", caps.node, caps.ver);
                self.queries.insert(
                    id.clone(),
                    Query {
                        key,
                        caps,
                        asked: jid.to_owned(),
                        sent: now,
                    },
                );
                Next::Ask { id, node_ver }
            }
        }
    }

    /// `jid` went unavailable for `owner`.
    pub fn unavailable(&mut self, owner: &str, jid: &str) {
        if let Some(seen) = self.seen.get_mut(owner) {
            seen.remove(jid);
            if seen.is_empty() {
                self.seen.remove(owner);
            }
        }
    }

    /// An account is gone: what it saw, and it as a contact of others.
    pub fn forget_account(&mut self, owner: &str, bare: &str) {
        self.seen.remove(owner);
        let prefix = format!("{bare}/");
        for seen in self.seen.values_mut() {
            seen.retain(|jid, _| !jid.starts_with(&prefix));
        }
    }

    /// Whether `id` is one of the caps queries sent.
    pub fn is_query(&self, id: &str) -> bool {
        self.queries.contains_key(id)
    }

    /// The answer to query `id` from `from`: `Some(query)` with a disco#info `<query/>`,
    /// `None` for an error. Returns the (owner, JID, wants) of every client waiting for
    /// this hash, to be sent the owners' last items; a wrong sender changes nothing.
    pub fn answered(
        &mut self,
        id: &str,
        from: &str,
        answer: Option<&Element>,
    ) -> Vec<(String, String, Wants)> {
        match self.queries.get(id) {
            Some(q) if q.asked == from => {}
            _ => return Vec::new(),
        }
        let Some(q) = self.queries.remove(id) else {
            return Vec::new();
        };
        let wants: Wants = match answer {
            Some(info) => notify_nodes(info).into(),
            None => Arc::from(Vec::new()),
        };
        // §5.4: only a verified hash is trusted for other clients; an unverifiable one
        // (another algorithm, a wrong hash) serves the client that sent it, this once.
        let verified = answer.is_some_and(|info| {
            q.caps.hash == "sha-1" && verification_string(info).as_deref() == Some(&q.caps.ver)
        });
        if verified {
            if self.caps.len() >= MAX_CAPS {
                self.caps.clear();
            }
            self.caps.insert(q.key.clone(), wants.clone());
        }
        let mut woken = Vec::new();
        for (owner, seen) in &mut self.seen {
            for (jid, s) in seen.iter_mut() {
                let waiting = matches!(s, Seen::Waiting(k) if *k == q.key);
                if waiting && (verified || *jid == q.asked) {
                    *s = Seen::Known(wants.clone());
                    woken.push((owner.clone(), jid.clone(), wants.clone()));
                }
            }
        }
        woken
    }

    /// The full JIDs seen by `owner` that want notifications for `node`.
    pub fn interested(&self, owner: &str, node: &str) -> Vec<String> {
        self.seen
            .get(owner)
            .map(|seen| {
                seen.iter()
                    .filter(|(_, s)| matches!(s, Seen::Known(w) if w.iter().any(|n| n == node)))
                    .map(|(jid, _)| jid.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The nodes a disco#info answer asks notifications for (`NODE+notify`, XEP-0163 §4.3.1).
pub fn notify_nodes(info: &Element) -> Vec<String> {
    let mut nodes: Vec<String> = info
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .take(MAX_FEATURES)
        .filter_map(|f| f.attr("var")?.strip_suffix("+notify").map(str::to_owned))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// XEP-0115 §5.1's verification string of a disco#info answer (hashed by
/// [`crate::features::caps::ver_with_forms`]), with §5.4's checks first: `None` when it
/// has two identical identities or features, too many features, or an extended form
/// whose FORM_TYPE is not one hidden value (such an answer cannot be trusted for others).
pub fn verification_string(info: &Element) -> Option<String> {
    let identities: Vec<(&str, &str, &str, &str)> = info
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|i| {
            let a = |k| i.attr(k).unwrap_or_default();
            (a("category"), a("type"), a("xml:lang"), a("name"))
        })
        .collect();
    let features: Vec<&str> = info
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    let distinct = |n: usize, mut v: Vec<String>| {
        v.sort_unstable();
        v.dedup();
        v.len() == n
    };
    let id_keys = identities.iter().map(|i| format!("{i:?}")).collect();
    let feature_keys = features.iter().map(|f| (*f).to_owned()).collect();
    if features.len() > MAX_FEATURES
        || !distinct(identities.len(), id_keys)
        || !distinct(features.len(), feature_keys)
    {
        return None;
    }
    let forms: Vec<Element> = info
        .children()
        .filter(|c| c.is("x", "jabber:x:data"))
        .cloned()
        .collect();
    for x in &forms {
        let form_types: Vec<&Element> = x
            .children()
            .filter(|f| f.is("field", "jabber:x:data") && f.attr("var") == Some("FORM_TYPE"))
            .collect();
        let ok = matches!(form_types.as_slice(), [f] if f.attr("type") == Some("hidden")
            && f.children().filter(|v| v.is("value", "jabber:x:data")).count() == 1);
        if !ok {
            return None;
        }
    }
    Some(crate::features::caps::ver_with_forms(
        &identities,
        &features,
        &forms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(features: &[&str]) -> Element {
        let mut q = Element::new("query", ns::DISCO_INFO);
        q.push_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "client")
                .with_attr("type", "pc")
                .with_attr("name", "Exodus 0.9.1"),
        );
        for f in features {
            q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
        }
        q
    }

    /// XEP-0115 §5.2's simple example.
    fn example() -> Element {
        info(&[
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "http://jabber.org/protocol/muc",
        ])
    }

    fn caps(ver: &str) -> Option<CapsRef> {
        Some(CapsRef {
            hash: "sha-1".into(),
            ver: ver.into(),
            node: "http://code.google.com/p/exodus".into(),
        })
    }

    #[test]
    fn section_5_2s_example_verifies() {
        assert_eq!(
            verification_string(&example()).as_deref(),
            Some("QgayPKawpkPSDYmwT/WM94uAlu0=")
        );
    }

    #[test]
    fn section_5_3s_complex_example_with_a_form_verifies() {
        let mut q = Element::new("query", ns::DISCO_INFO);
        for (lang, name) in [("en", "Psi 0.11"), ("el", "Ψ 0.11")] {
            q.push_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "client")
                    .with_attr("type", "pc")
                    .with_attr("xml:lang", lang)
                    .with_attr("name", name),
            );
        }
        for f in [
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "http://jabber.org/protocol/muc",
        ] {
            q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
        }
        let field = |var: &str, ty: Option<&str>, values: &[&str]| {
            let mut f = Element::new("field", "jabber:x:data").with_attr("var", var);
            if let Some(t) = ty {
                f.set_attr("type", t);
            }
            for v in values {
                f.push_child(Element::new("value", "jabber:x:data").with_text(*v));
            }
            f
        };
        let mut x = Element::new("x", "jabber:x:data").with_attr("type", "result");
        x.push_child(field(
            "FORM_TYPE",
            Some("hidden"),
            &["urn:xmpp:dataforms:softwareinfo"],
        ));
        x.push_child(field("ip_version", None, &["ipv4", "ipv6"]));
        x.push_child(field("os", None, &["Mac"]));
        x.push_child(field("os_version", None, &["10.5.1"]));
        x.push_child(field("software", None, &["Psi"]));
        x.push_child(field("software_version", None, &["0.11"]));
        q.push_child(x);
        assert_eq!(
            verification_string(&q).as_deref(),
            Some("q07IKJEyjvHSyhy//CH0CxmKi8w=")
        );
    }

    #[test]
    fn duplicate_features_are_not_trusted() {
        let q = info(&["a", "a"]);
        assert_eq!(verification_string(&q), None);
    }

    #[test]
    fn an_unknown_hash_is_asked_once_and_answers_everyone_waiting() {
        let mut i = Interest::default();
        let ver = "QgayPKawpkPSDYmwT/WM94uAlu0=";
        let Next::Ask { id, node_ver } = i.available("juliet", "romeo@x/a", caps(ver)) else {
            panic!("not asked");
        };
        assert_eq!(node_ver, format!("http://code.google.com/p/exodus#{ver}"));
        // A second client with the same hash waits for the same answer.
        assert_eq!(i.available("juliet", "nurse@x/b", caps(ver)), Next::Nothing);
        assert!(
            i.interested("juliet", "urn:xmpp:avatar:metadata")
                .is_empty()
        );
        // Someone else answering is ignored.
        assert!(i.answered(&id, "mallory@x/m", Some(&example())).is_empty());
        let mut with_notify = example();
        with_notify.push_child(
            Element::new("feature", ns::DISCO_INFO)
                .with_attr("var", "urn:xmpp:avatar:metadata+notify"),
        );
        // The answer does not match the hash: only the asked client is served.
        let woken = i.answered(&id, "romeo@x/a", Some(&with_notify));
        assert_eq!(woken.len(), 1);
        assert_eq!(woken[0].1, "romeo@x/a");
        assert_eq!(
            i.interested("juliet", "urn:xmpp:avatar:metadata"),
            vec!["romeo@x/a".to_owned()]
        );
    }

    #[test]
    fn a_verified_hash_is_kept_for_the_next_client() {
        let mut i = Interest::default();
        let ver = "QgayPKawpkPSDYmwT/WM94uAlu0=";
        let Next::Ask { id, .. } = i.available("juliet", "romeo@x/a", caps(ver)) else {
            panic!("not asked");
        };
        let woken = i.answered(&id, "romeo@x/a", Some(&example()));
        assert_eq!(woken.len(), 1);
        // Known now: no query, the last items are sent at once.
        assert!(matches!(
            i.available("juliet", "nurse@x/b", caps(ver)),
            Next::SendLast(_)
        ));
        // The same presence again (a status change) sends nothing new.
        assert_eq!(i.available("juliet", "nurse@x/b", caps(ver)), Next::Nothing);
        i.unavailable("juliet", "nurse@x/b");
        assert!(matches!(
            i.available("juliet", "nurse@x/b", caps(ver)),
            Next::SendLast(_)
        ));
    }

    #[test]
    fn queries_and_seen_jids_are_bounded() {
        let mut i = Interest::default();
        for n in 0..(MAX_QUERIES + 10) {
            let _ = i.available("juliet", &format!("c{n}@x/r"), caps(&format!("v{n}")));
        }
        assert_eq!(i.queries.len(), MAX_QUERIES);
        for n in 0..(MAX_SEEN + 10) {
            let _ = i.available("romeo", &format!("c{n}@x/r"), caps("v"));
        }
        assert!(i.seen.get("romeo").map_or(0, HashMap::len) <= MAX_SEEN);
    }
}
