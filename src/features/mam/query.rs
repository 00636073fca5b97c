//! XEP-0313 §4 queries and §6 preferences as clients send them, read into bounded values;
//! and XEP-0082 date-times. Pure functions: no storage, no session.

use super::store::Filter;
use super::{NS, Policy, Prefs};
use crate::features::forms::{FormType, NS_DATA, Submitted};
use crate::jid::Jid;
use crate::stanza::{StanzaCondition, StanzaError};
use crate::xml::Element;

/// XEP-0059's namespace.
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";

/// Results per page when the client does not say (XEP-0059 §2.1 leaves it to the server).
pub const DEFAULT_PAGE: usize = 50;
/// Results per page at most: a larger `<max/>` is clamped (XEP-0313 §4.1.3 lets the
/// server return fewer than asked).
pub const MAX_PAGE: usize = 250;
/// Bytes of messages in one page at most, so a page of large messages stays bounded in
/// memory; the page then ends early and is not `complete`.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// JIDs in each of the `<always/>` and `<never/>` lists (§6.1) at most.
pub const MAX_PREF_JIDS: usize = 128;
/// The longest `queryid` echoed back.
const MAX_QUERYID: usize = 256;

/// A query, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Echoed in each result (§4.2).
    pub queryid: Option<String>,
    pub filter: Filter,
}

fn bad(why: &str) -> StanzaError {
    StanzaError::new(StanzaCondition::BadRequest).with_text(why)
}

/// Reads `<query xmlns='urn:xmpp:mam:2'/>` from an iq set (§4.1): its form (`with`,
/// `start`, `end`, and of `#extended` `after-id`, `before-id`) and its XEP-0059 `<set/>`.
/// A form that is not one, a field the server does not know or a value it cannot read is
/// `bad-request` (§4.1.5); a `node` (a pubsub node's archive) or RSM `<index/>` is
/// `feature-not-implemented`.
pub fn parse_query(q: &Element) -> Result<Query, StanzaError> {
    if q.attr("node").is_some() {
        return Err(StanzaError::new(StanzaCondition::FeatureNotImplemented)
            .with_text("this server archives accounts' messages, not nodes"));
    }
    let queryid = q.attr("queryid").map(str::to_owned);
    if queryid.as_ref().is_some_and(|id| id.len() > MAX_QUERYID) {
        return Err(bad("queryid is too long"));
    }
    let mut filter = Filter {
        max: DEFAULT_PAGE,
        max_bytes: MAX_PAGE_BYTES,
        ..Filter::default()
    };
    if let Some(x) = q.get_child("x", NS_DATA) {
        let form = Submitted::parse(x).map_err(|e| bad(&format!("the form: {e}")))?;
        if form.kind != FormType::Submit {
            return Err(bad("the form must be of type 'submit'"));
        }
        if form.form_type().is_some_and(|t| t != NS) {
            return Err(bad("the form's FORM_TYPE is not urn:xmpp:mam:2"));
        }
        for var in form.vars() {
            if !matches!(
                var,
                "FORM_TYPE" | "with" | "start" | "end" | "after-id" | "before-id"
            ) {
                return Err(bad(&format!("field {var:?} is not supported")));
            }
        }
        if let Some(w) = form.text("with") {
            let jid = Jid::parse(w).map_err(|_| bad("'with' is not a JID"))?;
            // §4.1.1 matches a full JID against the resource too; the archive keeps bare
            // JIDs only, so a full JID matches its bare JID (a superset).
            filter.with = Some(jid.bare().as_str().to_owned());
        }
        if let Some(s) = form.text("start") {
            filter.start = Some(parse_datetime(s).ok_or_else(|| bad("'start' is not a date"))?);
        }
        if let Some(s) = form.text("end") {
            filter.end = Some(parse_datetime(s).ok_or_else(|| bad("'end' is not a date"))?);
        }
        if let Some(id) = form.text("after-id") {
            filter.after = Some(archive_id(id)?);
        }
        if let Some(id) = form.text("before-id") {
            filter.before = Some(archive_id(id)?);
            filter.from_end = true;
        }
    }
    if let Some(set) = q.get_child("set", NS_RSM) {
        if set.has_child("index", NS_RSM) {
            return Err(StanzaError::new(StanzaCondition::FeatureNotImplemented)
                .with_text("paging by index is not supported; use after/before"));
        }
        if let Some(max) = set.get_child("max", NS_RSM) {
            let n: usize = max
                .text()
                .trim()
                .parse()
                .map_err(|_| bad("<max/> is not a number"))?;
            filter.max = n.min(MAX_PAGE);
        }
        if let Some(after) = set.get_child("after", NS_RSM) {
            filter.after = Some(archive_id(after.text().trim())?);
        }
        if let Some(before) = set.get_child("before", NS_RSM) {
            // XEP-0059 §2.5: an empty <before/> asks for the last page.
            filter.from_end = true;
            let t = before.text();
            if !t.trim().is_empty() {
                filter.before = Some(archive_id(t.trim())?);
            }
        }
    }
    Ok(Query { queryid, filter })
}

/// An archive id as the client quotes it: ours are numbers, so anything else is not in
/// the archive (§4.1.4: `item-not-found`).
fn archive_id(s: &str) -> Result<i64, StanzaError> {
    s.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| StanzaError::new(StanzaCondition::ItemNotFound))
}

/// Reads `<prefs/>` from an iq set (§6.1): the default policy and the two bounded lists of
/// bare JIDs.
pub fn parse_prefs(p: &Element) -> Result<Prefs, StanzaError> {
    let default = p
        .attr("default")
        .and_then(Policy::parse)
        .ok_or_else(|| bad("'default' must be always, never or roster"))?;
    let list = |name: &str| -> Result<Vec<String>, StanzaError> {
        let mut v = Vec::new();
        for j in p
            .get_child(name, NS)
            .into_iter()
            .flat_map(|l| l.children())
            .filter(|c| c.is("jid", NS))
        {
            if v.len() >= MAX_PREF_JIDS {
                return Err(StanzaError::new(StanzaCondition::NotAcceptable)
                    .with_text(format!("at most {MAX_PREF_JIDS} JIDs in <{name}/>")));
            }
            let jid = Jid::parse(j.text().trim()).map_err(|_| {
                StanzaError::new(StanzaCondition::JidMalformed)
                    .with_text(format!("a JID in <{name}/> is not valid"))
            })?;
            let bare = jid.bare().as_str().to_owned();
            if !v.contains(&bare) {
                v.push(bare);
            }
        }
        Ok(v)
    };
    Ok(Prefs {
        default,
        always: list("always")?,
        never: list("never")?,
    })
}

/// `<prefs/>` as the server answers a get or set (§6.1).
pub fn prefs_element(p: &Prefs) -> Element {
    let list = |name: &str, jids: &[String]| {
        let mut l = Element::new(name, NS);
        for j in jids {
            l.push_child(Element::new("jid", NS).with_text(j.clone()));
        }
        l
    };
    Element::new("prefs", NS)
        .with_attr("default", p.default.as_str())
        .with_child(list("always", &p.always))
        .with_child(list("never", &p.never))
}

/// A XEP-0082 date-time (`1969-07-21T02:56:15Z`, fractions and `±hh:mm` allowed) as Unix
/// seconds; `None` if it is not one.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if b.get(10) != Some(&b'T') || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = frac.get(digits..)?;
    }
    let offset = match rest {
        "Z" => 0,
        tz if tz.len() == 6 && tz.as_bytes().get(3) == Some(&b':') => {
            let sign = match tz.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let (oh, om) = (num(s.len() - 5, 2)?, num(s.len() - 2, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(var: &str, value: &str) -> Element {
        Element::new("field", NS_DATA)
            .with_attr("var", var)
            .with_child(Element::new("value", NS_DATA).with_text(value))
    }

    fn query(fields: &[(&str, &str)], set: Option<Element>) -> Element {
        let mut x = Element::new("x", NS_DATA)
            .with_attr("type", "submit")
            .with_child(field("FORM_TYPE", NS));
        for (k, v) in fields {
            x.push_child(field(k, v));
        }
        let mut q = Element::new("query", NS)
            .with_attr("queryid", "q1")
            .with_child(x);
        if let Some(s) = set {
            q.push_child(s);
        }
        q
    }

    fn rsm(children: &[(&str, &str)]) -> Element {
        let mut s = Element::new("set", NS_RSM);
        for (k, v) in children {
            s.push_child(Element::new(*k, NS_RSM).with_text(*v));
        }
        s
    }

    fn condition(r: Result<Query, StanzaError>) -> StanzaCondition {
        r.unwrap_err().condition
    }

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_datetime("1969-07-21T02:56:15Z"), Some(-14_159_025));
        assert_eq!(
            parse_datetime("2010-06-07T00:00:00.123Z"),
            Some(1_275_868_800)
        );
        assert_eq!(
            parse_datetime("2010-06-07T02:00:00+02:00"),
            Some(1_275_868_800)
        );
        for bad in [
            "",
            "2010-06-07",
            "2010-13-07T00:00:00Z",
            "2010-06-07T00:00:00",
            "2010-06-07T00:00:00.Z",
            "2010-06-07T00:00:00+0200",
            "2010-06-07T0a:00:00Z",
            "2010-06-07T00:00:00Zjunk",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_full_query() {
        let q = parse_query(&query(
            &[
                ("with", "Bob@Home.Example/phone"),
                ("start", "1970-01-01T00:01:00Z"),
                ("end", "1970-01-01T00:02:00Z"),
            ],
            Some(rsm(&[("max", "10000"), ("after", "42")])),
        ))
        .unwrap();
        assert_eq!(q.queryid.as_deref(), Some("q1"));
        assert_eq!(q.filter.with.as_deref(), Some("bob@home.example"));
        assert_eq!((q.filter.start, q.filter.end), (Some(60), Some(120)));
        assert_eq!(q.filter.max, MAX_PAGE);
        assert_eq!(q.filter.after, Some(42));
        assert!(!q.filter.from_end);
    }

    #[test]
    fn empty_before_is_the_last_page() {
        let q = parse_query(&query(&[], Some(rsm(&[("before", "")])))).unwrap();
        assert!(q.filter.from_end && q.filter.before.is_none());
        assert_eq!(q.filter.max, DEFAULT_PAGE);
        let q = parse_query(&query(&[("before-id", "7")], None)).unwrap();
        assert!(q.filter.from_end);
        assert_eq!(q.filter.before, Some(7));
        let bare = parse_query(&Element::new("query", NS)).unwrap();
        assert_eq!(bare.filter.max, DEFAULT_PAGE);
    }

    #[test]
    fn bad_queries() {
        use StanzaCondition::*;
        assert_eq!(
            condition(parse_query(&query(&[("x", "1")], None))),
            BadRequest
        );
        assert_eq!(
            condition(parse_query(&query(&[("start", "yesterday")], None))),
            BadRequest
        );
        assert_eq!(
            condition(parse_query(&query(&[("with", "@@")], None))),
            BadRequest
        );
        assert_eq!(
            condition(parse_query(&query(&[], Some(rsm(&[("max", "-1")]))))),
            BadRequest
        );
        assert_eq!(
            condition(parse_query(&query(&[], Some(rsm(&[("after", "abc")]))))),
            ItemNotFound
        );
        assert_eq!(
            condition(parse_query(&query(&[], Some(rsm(&[("index", "3")]))))),
            FeatureNotImplemented
        );
        let mut other = query(&[], None);
        other.set_attr("node", "urn:example");
        assert_eq!(condition(parse_query(&other)), FeatureNotImplemented);
        let wrong_type = Element::new("query", NS).with_child(
            Element::new("x", NS_DATA)
                .with_attr("type", "submit")
                .with_child(field("FORM_TYPE", "urn:example")),
        );
        assert_eq!(condition(parse_query(&wrong_type)), BadRequest);
    }

    #[test]
    fn prefs_round_trip_and_bounds() {
        let mut el = Element::new("prefs", NS).with_attr("default", "roster");
        let mut always = Element::new("always", NS);
        always.push_child(Element::new("jid", NS).with_text("Carol@H/x"));
        always.push_child(Element::new("jid", NS).with_text("carol@h"));
        el.push_child(always);
        let p = parse_prefs(&el).unwrap();
        assert_eq!(p.default, Policy::Roster);
        assert_eq!(p.always, ["carol@h"]);
        assert!(p.never.is_empty());
        assert_eq!(parse_prefs(&prefs_element(&p)).unwrap(), p);
        let no_default = Element::new("prefs", NS);
        assert_eq!(
            parse_prefs(&no_default).unwrap_err().condition,
            StanzaCondition::BadRequest
        );
        let mut many = Element::new("never", NS);
        for i in 0..=MAX_PREF_JIDS {
            many.push_child(Element::new("jid", NS).with_text(format!("u{i}@h")));
        }
        let too_many = Element::new("prefs", NS)
            .with_attr("default", "always")
            .with_child(many);
        assert_eq!(
            parse_prefs(&too_many).unwrap_err().condition,
            StanzaCondition::NotAcceptable
        );
    }
}
