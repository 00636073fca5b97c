//! A room's history as an archive: XEP-0313 queries to the room's JID (MUC MAM, §5 of
//! XEP-0313's "archives of MUC rooms") over the messages the room keeps (its
//! `historylength`, in memory and, for persistent rooms, in SQLite), and XEP-0425
//! moderation: a moderator retracts a message by its stanza-id, the room broadcasts the
//! retraction and keeps a tombstone in its place.
//!
//! The archive is the history: a room keeps its last `historylength` messages, not all of
//! them (a Pi's SD card is small; raise the setting for more).

use super::room::{Affiliation, Effects, HistoryItem, NS_SID, Out, Persist, Role, Room, Whois};
use crate::features::mam::query::{MAX_PAGE, parse_query};
use crate::features::mam::{NS as NS_MAM, NS_FORWARD};
use crate::jid::{FullJid, Jid};
use crate::ns;
use crate::stanza::{StanzaCondition, StanzaError};
use crate::xml::Element;

/// XEP-0425 (version 0.3).
pub const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";
/// XEP-0424, whose `<retract/>` XEP-0425 uses.
pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0425 0.2 and what it wraps (XEP-0422 fastening, XEP-0424 0.3).
pub const NS_MODERATE_0: &str = "urn:xmpp:message-moderate:0";
pub const NS_RETRACT_0: &str = "urn:xmpp:message-retract:0";
pub const NS_FASTEN: &str = "urn:xmpp:fasten:0";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";

fn err(c: StanzaCondition) -> StanzaError {
    StanzaError::new(c)
}

impl Room {
    /// Who may read the archive: anyone who may enter (XEP-0313 §5: as the room's
    /// configuration allows; a members-only room's to its members, never outcasts).
    fn may_read_archive(&self, real: &FullJid) -> bool {
        let aff = self.affiliation(&real.bare());
        if aff == Affiliation::Outcast {
            return false;
        }
        if self.config.members_only {
            return aff >= Affiliation::Member;
        }
        // A password-protected room: only those in it (or its owners).
        if self.config.password.is_some() {
            return self.occupant_of(real).is_some() || aff == Affiliation::Owner;
        }
        true
    }

    /// XEP-0313 §4 query `q` from `real`: the results go out ahead of the iq's answer
    /// (`fx`), which is the returned `<fin/>`.
    pub fn mam_query(
        &self,
        real: &FullJid,
        q: &Element,
        fx: &mut Effects,
    ) -> Result<Option<Element>, StanzaError> {
        if !self.may_read_archive(real) {
            return Err(err(StanzaCondition::Forbidden)
                .with_text("this room's archive is not yours to read"));
        }
        let query = parse_query(q)?;
        let f = &query.filter;
        let with_nick = f.with.as_ref().and_then(|w| {
            // `with` names an occupant JID (room/nick) in a room's archive.
            Jid::parse(w)
                .ok()
                .and_then(|j| j.resource().map(str::to_owned))
        });
        let id_of = |h: &HistoryItem| h.id.parse::<i64>().unwrap_or(0);
        for known in [f.after, f.before].into_iter().flatten() {
            if !self.history.iter().any(|h| id_of(h) == known) {
                return Err(err(StanzaCondition::ItemNotFound));
            }
        }
        let matching: Vec<&HistoryItem> = self
            .history
            .iter()
            .filter(|h| f.start.is_none_or(|s| h.at >= s))
            .filter(|h| f.end.is_none_or(|e| h.at <= e))
            .filter(|h| f.after.is_none_or(|a| id_of(h) > a))
            .filter(|h| f.before.is_none_or(|b| id_of(h) < b))
            .filter(|h| {
                with_nick.as_ref().is_none_or(|n| {
                    Jid::parse(&h.from)
                        .ok()
                        .is_some_and(|j| j.resource() == Some(n.as_str()))
                })
            })
            .collect();
        let max = f.max.min(MAX_PAGE);
        let (page, complete) = if f.from_end {
            let skip = matching.len().saturating_sub(max);
            (&matching[skip..], skip == 0)
        } else {
            let take = matching.len().min(max);
            (&matching[..take], take == matching.len())
        };
        let to = Jid::from(real.clone());
        let room = Jid::from(self.jid.clone());
        for h in page {
            let Some(mut original) = h.element() else {
                continue;
            };
            // Semi-anonymous rooms never show real JIDs; the stored copies carry none.
            original.remove_attr("to");
            let mut result = Element::new("result", NS_MAM).with_attr("id", h.id.clone());
            if let Some(qid) = &query.queryid {
                result.set_attr("queryid", qid.clone());
            }
            result.push_child(
                Element::new("forwarded", NS_FORWARD)
                    .with_child(Element::new("delay", ns::DELAY).with_attr(
                        "stamp",
                        crate::features::time::xep0082_utc(u64::try_from(h.at).unwrap_or(0)),
                    ))
                    .with_child(original),
            );
            let m = Element::new("message", ns::CLIENT)
                .with_attr("from", room.as_str())
                .with_attr("to", to.as_str())
                .with_child(result);
            fx.out.push(Out {
                from: room.clone(),
                to: to.clone(),
                el: m,
            });
        }
        let mut set = Element::new("set", NS_RSM);
        if let (Some(first), Some(last)) = (page.first(), page.last()) {
            set.push_child(Element::new("first", NS_RSM).with_text(first.id.clone()));
            set.push_child(Element::new("last", NS_RSM).with_text(last.id.clone()));
        }
        set.push_child(Element::new("count", NS_RSM).with_text(matching.len().to_string()));
        let mut fin = Element::new("fin", NS_MAM).with_child(set);
        if complete {
            fin.set_attr("complete", "true");
        }
        Ok(Some(fin))
    }

    /// XEP-0425 §4: moderator `real` retracts the message with stanza-id `m.id`
    /// (`<moderate xmlns='urn:xmpp:message-moderate:1'/>`), or with version 0.2's
    /// wrapping (`<apply-to xmlns='urn:xmpp:fasten:0'>` around a `moderate:0`), which
    /// slixmpp and older Conversations send and Prosody still accepts.
    pub fn moderate(
        &mut self,
        real: &FullJid,
        m: &Element,
        now: i64,
        fx: &mut Effects,
    ) -> Result<Option<Element>, StanzaError> {
        let Some(i) = self.occupant_of(real) else {
            return Err(
                err(StanzaCondition::Forbidden).with_text("only moderators in the room moderate")
            );
        };
        if self.occupants[i].role != Role::Moderator {
            return Err(err(StanzaCondition::Forbidden).with_text("only moderators moderate"));
        }
        let legacy = m.is("apply-to", NS_FASTEN);
        let (id, reason) = if legacy {
            let inner = m
                .get_child("moderate", NS_MODERATE_0)
                .filter(|x| x.has_child("retract", NS_RETRACT_0))
                .ok_or_else(|| {
                    err(StanzaCondition::FeatureNotImplemented)
                        .with_text("only retraction is supported")
                })?;
            (
                m.attr("id"),
                inner.get_child("reason", NS_MODERATE_0).map(|r| r.text()),
            )
        } else {
            if !m.has_child("retract", NS_RETRACT) {
                return Err(err(StanzaCondition::FeatureNotImplemented)
                    .with_text("only retraction is supported"));
            }
            (
                m.attr("id"),
                m.get_child("reason", NS_MODERATE).map(|r| r.text()),
            )
        };
        let id = id
            .ok_or_else(|| err(StanzaCondition::BadRequest).with_text("which message?"))?
            .to_owned();
        let Some(pos) = self.history.iter().position(|h| h.id == id) else {
            return Err(err(StanzaCondition::ItemNotFound)
                .with_text("no such message in this room's history"));
        };
        let by = self
            .jid
            .with_resource(&self.occupants[i].nick)
            .map(|j| j.as_str().to_owned())
            .unwrap_or_default();
        let moderated = || {
            let mut el = Element::new("moderated", NS_MODERATE).with_attr("by", by.clone());
            if self.config.whois == Whois::Anyone {
                el.set_attr("jid", real.bare().as_str());
            }
            el
        };
        // §5: the tombstone replaces the message in the archive.
        let stamp = crate::features::time::xep0082_utc(u64::try_from(now).unwrap_or(0));
        let old = &self.history[pos];
        let mut tomb = Element::new("message", ns::CLIENT).with_attr("type", "groupchat");
        if !old.from.is_empty() {
            tomb.set_attr("from", &*old.from);
        }
        let mut retracted = Element::new("retracted", NS_RETRACT)
            .with_attr("stamp", stamp)
            .with_child(moderated());
        if let Some(r) = &reason {
            retracted.push_child(Element::new("reason", NS_MODERATE).with_text(r.clone()));
        }
        tomb.push_child(retracted);
        tomb.push_child(
            Element::new("stanza-id", NS_SID)
                .with_attr("id", id.clone())
                .with_attr("by", self.jid.as_str()),
        );
        let item = HistoryItem::new(id.clone(), old.at, &tomb);
        self.history[pos] = item.clone();
        if self.config.persistent {
            fx.persist.push(Persist::Replaced(item));
        }
        // §4: the retraction to every occupant, from the room.
        let room = Jid::from(self.jid.clone());
        let retract = if legacy {
            let mut inner = Element::new("moderated", NS_MODERATE_0)
                .with_attr("by", by.clone())
                .with_child(Element::new("retract", NS_RETRACT_0));
            if let Some(r) = &reason {
                inner.push_child(Element::new("reason", NS_MODERATE_0).with_text(r.clone()));
            }
            Element::new("apply-to", NS_FASTEN)
                .with_attr("id", id)
                .with_child(inner)
        } else {
            let mut retract = Element::new("retract", NS_RETRACT)
                .with_attr("id", id)
                .with_child(moderated());
            if let Some(r) = &reason {
                retract.push_child(Element::new("reason", NS_MODERATE).with_text(r.clone()));
            }
            retract
        };
        let sid = self.next_id(now);
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", room.as_str())
            .with_attr("id", sid.clone())
            .with_child(retract)
            .with_child(
                Element::new("body", ns::CLIENT)
                    .with_text("This message was retracted by a moderator."),
            )
            .with_child(
                Element::new("fallback", "urn:xmpp:fallback:0").with_attr("for", NS_RETRACT),
            )
            .with_child(
                Element::new("stanza-id", NS_SID)
                    .with_attr("id", sid)
                    .with_attr("by", self.jid.as_str()),
            );
        for o in &self.occupants {
            for s in &o.sessions {
                let to = Jid::from(s.clone());
                let mut copy = msg.clone();
                copy.set_attr("to", to.as_str());
                fx.out.push(Out {
                    from: room.clone(),
                    to,
                    el: copy,
                });
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::muc::room::{Limits, NS_MUC};
    use crate::jid::BareJid;

    fn full(s: &str) -> FullJid {
        FullJid::parse(s).unwrap()
    }

    fn room_with_messages(n: i64) -> Room {
        let limits = Limits {
            max_occupants: 10,
            history_length: 50,
        };
        let ann = full("ann@home/a");
        let mut r = Room::new(
            BareJid::parse("r@conference.home").unwrap(),
            &ann.bare(),
            &limits,
        );
        r.locked = false;
        let join = Element::new("presence", ns::CLIENT).with_child(Element::new("x", NS_MUC));
        r.presence(&ann, "ann", &join, 0, false);
        r.presence(&full("bob@home/b"), "bob", &join, 0, false);
        for i in 0..n {
            let m = Element::new("message", ns::CLIENT)
                .with_attr("type", "groupchat")
                .with_child(Element::new("body", ns::CLIENT).with_text(format!("m{i}")));
            r.message_to_room(&ann, &m, 100 + i);
        }
        r
    }

    fn query(rsm: &str) -> Element {
        crate::xml::parse_fragment(&format!(
            "<query xmlns='urn:xmpp:mam:2' queryid='q'><set xmlns='{NS_RSM}'>{rsm}</set></query>"
        ))
        .unwrap()
    }

    #[test]
    fn pages_forward_and_from_the_end() {
        let r = room_with_messages(5);
        let mut fx = Effects::default();
        let fin = r
            .mam_query(&full("bob@home/b"), &query("<max>2</max>"), &mut fx)
            .unwrap()
            .unwrap();
        assert_eq!(fx.out.len(), 2);
        assert!(fin.attr("complete").is_none());
        let mut fx = Effects::default();
        let fin = r
            .mam_query(
                &full("bob@home/b"),
                &query("<max>2</max><before/>"),
                &mut fx,
            )
            .unwrap()
            .unwrap();
        assert_eq!(fx.out.len(), 2);
        assert!(fx.out[1].el.to_string().contains("m4"));
        assert!(fin.attr("complete").is_none());
        let mut fx = Effects::default();
        let e = r
            .mam_query(&full("bob@home/b"), &query("<after>12345</after>"), &mut fx)
            .unwrap_err();
        assert_eq!(e.condition, StanzaCondition::ItemNotFound);
    }

    #[test]
    fn moderators_retract_and_the_history_keeps_a_tombstone() {
        let mut r = room_with_messages(2);
        let id = r.history[0].id.clone();
        let m = crate::xml::parse_fragment(&format!(
            "<moderate xmlns='{NS_MODERATE}' id='{id}'><retract xmlns='{NS_RETRACT}'/><reason>spam</reason></moderate>"
        ))
        .unwrap();
        let e = r
            .moderate(&full("bob@home/b"), &m, 200, &mut Effects::default())
            .unwrap_err();
        assert_eq!(e.condition, StanzaCondition::Forbidden);
        let mut fx = Effects::default();
        r.moderate(&full("ann@home/a"), &m, 200, &mut fx).unwrap();
        assert_eq!(fx.out.len(), 2);
        assert!(r.history[0].xml.contains("retracted"));
        assert!(!r.history[0].xml.contains("m0"));
        let missing = crate::xml::parse_fragment(&format!(
            "<moderate xmlns='{NS_MODERATE}' id='nope'><retract xmlns='{NS_RETRACT}'/></moderate>"
        ))
        .unwrap();
        let e = r
            .moderate(&full("ann@home/a"), &missing, 200, &mut fx)
            .unwrap_err();
        assert_eq!(e.condition, StanzaCondition::ItemNotFound);
    }
}
