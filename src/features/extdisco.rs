//! XEP-0215: External Service Discovery (version 1.0.0) — the STUN and TURN servers that
//! calls (Jingle) should use, from `[[external_services]]` in the configuration, with
//! time-limited TURN credentials.
//!
//! §3.1, §3.2: `<services/>` lists the configured services (those of a `type` when asked);
//! §3.3: `<credentials/>` gives credentials for a service named by host and type (and
//! port), `item-not-found` for one not configured. A service with a `secret` (coturn's
//! `static-auth-secret`, its "TURN REST API" scheme) is `restricted`: its username is the
//! expiry time in Unix seconds and the account's name, `expiry:user`, its password the
//! Base64 of HMAC-SHA1(secret, username), valid until `expires` (XEP-0082 UTC); both are
//! given with the list, as Prosody and ejabberd do, so clients need no second request.
//! Only this server's own users get an answer (§3: `forbidden` for anyone else); with no
//! service configured the module announces and answers nothing.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use super::{Access, Announce, Doc, IqCx, IqFuture, IqRoute, Module, On, Spec, Status, ready};
use crate::stanza::{IqType, Stanza, StanzaCondition, StanzaError};
use crate::xml::Element;

/// XEP-0215's namespace.
pub const NS: &str = "urn:xmpp:extdisco:2";

/// One `[[external_services]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalService {
    /// The registered service type (§5): `stun`, `turn`, `stuns`, `turns`.
    pub kind: String,
    /// A host name or an IP address.
    pub host: String,
    pub port: Option<u16>,
    /// `udp` or `tcp`.
    pub transport: Option<String>,
    /// A label for people.
    pub name: Option<String>,
    /// coturn's `static-auth-secret`: the service is restricted and gets time-limited
    /// credentials.
    pub secret: Option<String>,
    /// How long credentials are valid.
    pub credentials_ttl_secs: u32,
}

impl ExternalService {
    /// A day, as coturn's and Prosody's examples use: a call started in the evening
    /// still relays the next morning.
    pub const DEFAULT_TTL_SECS: u32 = 86_400;
}

/// TURN REST API credentials (coturn's `use-auth-secret`): `expiry:user` and the Base64
/// of HMAC-SHA1(secret, that username).
pub fn turn_credentials(secret: &str, user: &str, expiry: i64) -> (String, String) {
    let username = format!("{expiry}:{user}");
    // HMAC takes a key of any length: this cannot fail.
    let password = match <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(username.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    (username, password)
}

/// The `<service/>` element for `s`, with credentials for `user` at `now` when it is
/// restricted.
pub fn service_element(s: &ExternalService, user: &str, now: i64) -> Element {
    let mut el = Element::new("service", NS)
        .with_attr("type", s.kind.clone())
        .with_attr("host", s.host.clone());
    if let Some(p) = s.port {
        el.set_attr("port", p.to_string());
    }
    if let Some(t) = &s.transport {
        el.set_attr("transport", t.clone());
    }
    if let Some(n) = &s.name {
        el.set_attr("name", n.clone());
    }
    if let Some(secret) = &s.secret {
        let expiry = now.saturating_add(i64::from(s.credentials_ttl_secs));
        let (username, password) = turn_credentials(secret, user, expiry);
        el.set_attr("restricted", "1");
        el.set_attr("expires", crate::admin::utc_iso(expiry));
        el.set_attr("username", username);
        el.set_attr("password", password);
    }
    el
}

/// The answer to a `<services/>` or `<credentials/>` get from the local user `user`.
pub fn answer(
    services: &[ExternalService],
    iq: &Stanza,
    user: &str,
    now: i64,
) -> Result<Element, StanzaError> {
    let Some(p) = iq.iq_payload() else {
        return Err(StanzaError::new(StanzaCondition::BadRequest));
    };
    if iq.iq_type() != Some(IqType::Get) {
        return Err(StanzaError::new(StanzaCondition::BadRequest)
            .with_text("services and credentials are asked with a get"));
    }
    match p.name() {
        "services" => {
            let kind = p.attr("type");
            let mut out = Element::new("services", NS);
            if let Some(k) = kind {
                out.set_attr("type", k);
            }
            for s in services.iter().filter(|s| kind.is_none_or(|k| k == s.kind)) {
                out.push_child(service_element(s, user, now));
            }
            Ok(out)
        }
        "credentials" => {
            // §3.3: host and type name the service; a port picks one of several.
            let Some(asked) = p.get_child("service", NS) else {
                return Err(StanzaError::new(StanzaCondition::BadRequest)
                    .with_text("name a <service/> by host and type"));
            };
            let (Some(host), Some(kind)) = (asked.attr("host"), asked.attr("type")) else {
                return Err(StanzaError::new(StanzaCondition::BadRequest)
                    .with_text("a <service/> needs host and type"));
            };
            let port = match asked.attr("port") {
                None => None,
                Some(p) => Some(p.parse::<u16>().map_err(|_| {
                    StanzaError::new(StanzaCondition::BadRequest).with_text("bad port")
                })?),
            };
            let mut out = Element::new("credentials", NS);
            for s in services
                .iter()
                .filter(|s| s.host == host && s.kind == kind && (port.is_none() || port == s.port))
            {
                out.push_child(service_element(s, user, now));
            }
            if out.children().next().is_none() {
                return Err(StanzaError::new(StanzaCondition::ItemNotFound)
                    .with_text("no such service here"));
            }
            Ok(out)
        }
        _ => Err(StanzaError::new(StanzaCondition::BadRequest)),
    }
}

/// The module.
pub struct ExtDisco {
    services: Vec<ExternalService>,
}

impl ExtDisco {
    pub fn new(services: &[ExternalService]) -> ExtDisco {
        ExtDisco {
            services: services.to_vec(),
        }
    }
}

const ANNOUNCE: &[Announce] = &[Announce {
    var: NS,
    on: On::Server,
}];

const ROUTE: &[IqRoute] = &[IqRoute {
    ns: NS,
    on: On::Server,
    access: Access::Anyone,
}];

impl Module for ExtDisco {
    fn name(&self) -> &'static str {
        "extdisco"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(215),
            title: "External Service Discovery",
            version: "1.0.0",
            status: Status::Partial,
            note: "from `[[external_services]]`, TURN REST API credentials (coturn); no \
                   pushes of changed services",
        }]
    }

    /// §4: announced only when there is a service to tell of.
    fn disco(&self) -> &'static [Announce] {
        if self.services.is_empty() {
            &[]
        } else {
            ANNOUNCE
        }
    }

    fn iqs(&self) -> &'static [IqRoute] {
        if self.services.is_empty() { &[] } else { ROUTE }
    }

    fn handle_iq<'a>(&'a self, cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        // §3: the relay is the server's users' own; others may not learn its credentials.
        let Some(user) = cx.from.session().and_then(|j| j.local()) else {
            return ready(Err(StanzaError::new(StanzaCondition::Forbidden)
                .with_text("external services are for this server's users")));
        };
        ready(answer(&self.services, iq, user, crate::storage::unix_now()).map(Some))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(secret: Option<&str>) -> ExternalService {
        ExternalService {
            kind: "turn".into(),
            host: "turn.example.org".into(),
            port: Some(3478),
            transport: Some("udp".into()),
            name: None,
            secret: secret.map(str::to_owned),
            credentials_ttl_secs: 3600,
        }
    }

    fn stun() -> ExternalService {
        ExternalService {
            kind: "stun".into(),
            host: "192.0.2.1".into(),
            port: None,
            transport: None,
            name: Some("LAN".into()),
            secret: None,
            credentials_ttl_secs: ExternalService::DEFAULT_TTL_SECS,
        }
    }

    fn get(payload: &str) -> Stanza {
        let el = crate::router::im::tests::parse(&format!(
            "<iq type='get' id='x' to='home.example'>{payload}</iq>"
        ));
        Stanza::from_client(el).unwrap()
    }

    /// The TURN REST API draft's scheme, checked against a value computed independently
    /// (`printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64`).
    #[test]
    fn turn_rest_credentials() {
        let (u, p) = turn_credentials("secret", "alice", 1_700_000_000);
        assert_eq!(u, "1700000000:alice");
        assert_eq!(p, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn services_all_or_of_a_type() {
        let list = [stun(), turn(Some("s"))];
        let all = answer(
            &list,
            &get(&format!("<services xmlns='{NS}'/>")),
            "alice",
            0,
        )
        .unwrap();
        let v: Vec<&Element> = all.children().collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].attr("type"), Some("stun"));
        assert_eq!(v[0].attr("name"), Some("LAN"));
        assert_eq!(v[0].attr("username"), None);
        assert_eq!(v[1].attr("restricted"), Some("1"));
        assert_eq!(v[1].attr("expires"), Some("1970-01-01T01:00:00Z"));
        assert_eq!(v[1].attr("username"), Some("3600:alice"));
        assert_eq!(v[1].attr("port"), Some("3478"));
        let turns = answer(
            &list,
            &get(&format!("<services xmlns='{NS}' type='turn'/>")),
            "alice",
            0,
        )
        .unwrap();
        assert_eq!(turns.children().count(), 1);
        assert_eq!(turns.attr("type"), Some("turn"));
    }

    #[test]
    fn credentials_by_host_type_and_port() {
        let list = [stun(), turn(Some("s"))];
        let ask = |s: &str| {
            answer(
                &list,
                &get(&format!("<credentials xmlns='{NS}'>{s}</credentials>")),
                "bob",
                10,
            )
        };
        let ok = ask("<service host='turn.example.org' type='turn'/>").unwrap();
        let s = ok.get_child("service", NS).unwrap();
        assert_eq!(s.attr("username"), Some("3610:bob"));
        assert!(ask("<service host='turn.example.org' type='turn' port='3478'/>").is_ok());
        for (bad, cond) in [
            (
                "<service host='turn.example.org' type='turn' port='1'/>",
                StanzaCondition::ItemNotFound,
            ),
            (
                "<service host='other' type='turn'/>",
                StanzaCondition::ItemNotFound,
            ),
            (
                "<service host='turn.example.org'/>",
                StanzaCondition::BadRequest,
            ),
            (
                "<service host='turn.example.org' type='turn' port='x'/>",
                StanzaCondition::BadRequest,
            ),
            ("", StanzaCondition::BadRequest),
        ] {
            assert_eq!(ask(bad).unwrap_err().condition, cond, "{bad}");
        }
        let set = Stanza::from_client(crate::router::im::tests::parse(&format!(
            "<iq type='set' id='x'><services xmlns='{NS}'/></iq>"
        )))
        .unwrap();
        assert_eq!(
            answer(&list, &set, "bob", 0).unwrap_err().condition,
            StanzaCondition::BadRequest
        );
    }

    /// §3: a user of another server (or a service) learns nothing, not even the list.
    #[test]
    fn only_local_users_are_answered() {
        use crate::features::{IqCx, Registry, Target};
        use crate::jid::Jid;
        use crate::router::im::Sender;
        use crate::router::im::tests::World;
        let w = World::new(&["alice"]);
        let registry = Registry::standard();
        let m = ExtDisco::new(&[turn(Some("s"))]);
        let iq = get(&format!("<services xmlns='{NS}'/>"));
        let ask = |from: Sender<'_>| {
            let cx = IqCx {
                im: w.im(),
                from,
                target: &Target::Server,
                registry: &registry,
                ahead: Default::default(),
            };
            smol::block_on(m.handle_iq(&cx, &iq))
        };
        let remote = Jid::parse("mallory@elsewhere.example/x").unwrap();
        let e = ask(Sender::Remote(&remote)).unwrap_err();
        assert_eq!(e.condition, StanzaCondition::Forbidden);
        let service = Jid::parse("bot.home.example").unwrap();
        let e = ask(Sender::Service(&service)).unwrap_err();
        assert_eq!(e.condition, StanzaCondition::Forbidden);
        let alice = w.bind("alice", "phone");
        let ok = ask(Sender::Local(&alice.jid)).unwrap().unwrap();
        assert_eq!(ok.children().count(), 1);
    }

    #[test]
    fn nothing_configured_nothing_announced() {
        let m = ExtDisco::new(&[]);
        assert!(m.disco().is_empty() && m.iqs().is_empty());
        let m = ExtDisco::new(&[stun()]);
        assert_eq!(m.disco()[0].var, NS);
    }
}
