//! XEP-0202: Entity Time of the server, as UTC with a zero offset.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Access, Announce, Doc, IqCx, IqFuture, IqRoute, Module, On, Spec, Status, ready};
use crate::ns;
use crate::stanza::{IqType, Stanza, StanzaCondition, StanzaError};
use crate::xml::Element;

pub struct Time;

impl Module for Time {
    fn name(&self) -> &'static str {
        "time"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Xep(202),
                title: "Entity Time",
                version: "2.0",
                status: Status::Complete,
                note: "the server's clock, in UTC",
            },
            Spec {
                doc: Doc::Xep(82),
                title: "XMPP Date and Time Profiles",
                version: "1.1.1",
                status: Status::Complete,
                note: "DateTime in UTC, written by hearth (entity time, delays)",
            },
        ]
    }

    fn disco(&self) -> &'static [Announce] {
        &[Announce {
            var: ns::TIME,
            on: On::Server,
        }]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            ns: ns::TIME,
            on: On::Server,
            access: Access::Anyone,
        }]
    }

    fn handle_iq<'a>(&'a self, _cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        let is_time = iq.iq_payload().is_some_and(|p| p.is("time", ns::TIME));
        if !is_time || iq.iq_type() != Some(IqType::Get) {
            return ready(Err(StanzaError::new(StanzaCondition::ServiceUnavailable)));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // The server keeps UTC (a Pi's usual setting); tzo says so (XEP-0082 TZD).
        ready(Ok(Some(
            Element::new("time", ns::TIME)
                .with_child(Element::new("tzo", ns::TIME).with_text("+00:00"))
                .with_child(Element::new("utc", ns::TIME).with_text(xep0082_utc(now))),
        )))
    }
}

/// Formats Unix seconds as an XEP-0082 DateTime in UTC (`2006-12-19T17:58:35Z`).
pub fn xep0082_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// civil-from-days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(xep0082_utc(0), "1970-01-01T00:00:00Z");
        // XEP-0202's example instant.
        assert_eq!(xep0082_utc(1_166_551_115), "2006-12-19T17:58:35Z");
        assert_eq!(xep0082_utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
