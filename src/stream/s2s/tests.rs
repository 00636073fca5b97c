//! The two s2s machines, each alone on scripted input and talking to each other through
//! two framers (no socket): STARTTLS, SASL EXTERNAL, dialback and its verification,
//! and what a peer that lies about its domain gets.

use super::*;
use crate::stanza::Kind;
use crate::xml::{Framer, Limits};

const OURS: &str = "hearth.example";
const PEER: &str = "peer.example";

fn policy(domain: &str, secret: u8) -> Arc<S2sPolicy> {
    Arc::new(S2sPolicy {
        domain: domain.into(),
        require_tls: true,
        require_valid_certificates: false,
        secret: DialbackSecret::from_bytes([secret; 32]),
        services: Vec::new(),
    })
}

/// An outgoing stream from `PEER` to `OURS` and the incoming one at `OURS`, wired back to
/// back. `cert_valid`: whether each side's certificate is valid for its domain.
struct Pair {
    out: S2sOut,
    inn: S2sIn,
    /// Bytes on their way to the outgoing side.
    to_out: Framer,
    /// Bytes on their way to the incoming side.
    to_in: Framer,
    cert_valid: bool,
    /// The peer's own secret, as its authoritative server would check the key.
    peer_secret: DialbackSecret,
    /// Outcomes seen, in order.
    seen: Vec<String>,
    routed: Vec<Stanza>,
}

impl Pair {
    fn new(purpose: Purpose, cert_valid: bool, out_policy: Arc<S2sPolicy>) -> Pair {
        let peer_secret = out_policy.secret.clone();
        Pair {
            out: S2sOut::new(out_policy, OURS.into(), purpose, None),
            inn: S2sIn::new(policy(OURS, 1), false),
            to_out: Framer::new(Limits::default()),
            to_in: Framer::new(Limits::default()),
            cert_valid,
            peer_secret,
            seen: Vec::new(),
            routed: Vec::new(),
        }
    }

    /// Runs both machines until neither has anything more to say.
    fn pump(&mut self, first: Vec<OutAction>) {
        let mut out_actions: Vec<OutAction> = first;
        let mut in_actions: Vec<InAction> = Vec::new();
        for _ in 0..200 {
            if out_actions.is_empty() && in_actions.is_empty() {
                while let Ok(Some(ev)) = self.to_in.next_event() {
                    in_actions.extend(self.inn.handle(InInput::Xml(ev)));
                    if !in_actions.is_empty() {
                        break;
                    }
                }
                while in_actions.is_empty()
                    && let Ok(Some(ev)) = self.to_out.next_event()
                {
                    out_actions.extend(self.out.handle(OutInput::Xml(ev)));
                }
                if out_actions.is_empty() && in_actions.is_empty() {
                    return;
                }
            }
            for a in std::mem::take(&mut out_actions) {
                match a {
                    OutAction::Send(s) => self.to_in.feed(s.as_bytes()).unwrap(),
                    OutAction::ResetFramer => self.to_out.reset(),
                    OutAction::StartTls => {
                        // The incoming side asked first (its <proceed/>); both handshakes
                        // end together.
                        self.to_out.reset();
                        self.seen.push("tls".into());
                        in_actions.extend(self.inn.handle(InInput::TlsEstablished));
                        out_actions.extend(self.out.handle(OutInput::TlsEstablished {
                            cert_valid: self.cert_valid,
                        }));
                    }
                    OutAction::Ready => self.seen.push("ready".into()),
                    OutAction::Verified(v) => self.seen.push(format!("verified {v}")),
                    OutAction::Failed(why) => self.seen.push(format!("failed: {why}")),
                    OutAction::Close => self.seen.push("out closed".into()),
                }
            }
            for a in std::mem::take(&mut in_actions) {
                match a {
                    InAction::Send(s) => self.to_out.feed(s.as_bytes()).unwrap(),
                    InAction::ResetFramer => self.to_in.reset(),
                    InAction::StartTls => self.to_in.reset(),
                    InAction::CheckCertificate(d) => {
                        let valid = self.cert_valid && &*d == PEER;
                        in_actions.extend(
                            self.inn
                                .handle(InInput::CertificateChecked { domain: d, valid }),
                        );
                    }
                    InAction::VerifyDialback { domain, id, key } => {
                        // The authoritative server of PEER checks its own key.
                        self.seen.push("verify".into());
                        // For the domain the stream came to (ours, or a service's).
                        let local = self.inn.local().clone();
                        let valid = self.peer_secret.verifies(&key, &local, &domain, &id);
                        in_actions.extend(self.inn.handle(InInput::DialbackVerified {
                            domain,
                            valid: Some(valid),
                        }));
                    }
                    InAction::Authenticated(d) => self.seen.push(format!("authenticated {d}")),
                    InAction::Route(s) => self.routed.push(s),
                    InAction::Bounce(e) => self.seen.push(format!("bounce {}", e.name())),
                    InAction::Close => self.seen.push("in closed".into()),
                }
            }
        }
        panic!("the machines never settled: {:?}", self.seen);
    }

    fn start(&mut self) {
        let first = self.out.open();
        self.pump(first);
    }

    /// The outgoing side writes a stanza, as the driver does once ready.
    fn send_stanza(&mut self, xml: &str) {
        self.to_in.feed(xml.as_bytes()).unwrap();
        self.pump(Vec::new());
    }
}

#[test]
fn a_valid_certificate_authenticates_with_sasl_external() {
    let mut p = Pair::new(Purpose::Deliver, true, policy(PEER, 2));
    p.start();
    assert_eq!(p.seen, ["tls", "authenticated peer.example", "ready"]);
    assert!(p.out.is_ready());
    assert_eq!(p.inn.authenticated(), [Arc::<str>::from(PEER)]);
    p.send_stanza(
        "<message from='bob@peer.example/x' to='alice@hearth.example'><body>hi</body></message>",
    );
    assert_eq!(p.routed.len(), 1);
    let s = &p.routed[0];
    // Into the rest of the server in jabber:client form, body included.
    assert_eq!(s.el.ns(), ns::CLIENT);
    assert_eq!(
        s.el.get_child("body", ns::CLIENT)
            .map(|b| b.text())
            .as_deref(),
        Some("hi")
    );
    assert_eq!(
        s.to.as_ref().map(|j| j.as_str()),
        Some("alice@hearth.example")
    );
}

#[test]
fn without_a_valid_certificate_dialback_authenticates() {
    let mut p = Pair::new(Purpose::Deliver, false, policy(PEER, 2));
    p.start();
    assert_eq!(
        p.seen,
        ["tls", "verify", "authenticated peer.example", "ready"]
    );
}

#[test]
fn a_key_the_authoritative_server_never_issued_is_refused() {
    let mut p = Pair::new(Purpose::Deliver, false, policy(PEER, 2));
    // The authoritative server of PEER has another secret than the one that made the key.
    p.peer_secret = DialbackSecret::from_bytes([9; 32]);
    p.start();
    assert_eq!(p.seen[..2], ["tls", "verify"]);
    assert!(
        p.seen
            .iter()
            .any(|s| s.starts_with("failed: the peer refused our dialback key"))
    );
    assert!(p.inn.authenticated().is_empty());
}

#[test]
fn a_verify_stream_gets_the_authoritative_answer_and_closes() {
    let ours = policy(OURS, 1);
    // Our incoming side is the authoritative server here: the key is one OURS made for
    // a stream it opened to PEER with id "abc".
    let key = ours.secret.key(PEER, OURS, "abc");
    let purpose = Purpose::Verify {
        id: "abc".into(),
        key,
    };
    let mut p = Pair::new(purpose, false, policy(PEER, 2));
    p.start();
    assert!(
        p.seen.contains(&"verified true".to_string()),
        "{:?}",
        p.seen
    );

    let purpose = Purpose::Verify {
        id: "abd".into(),
        key: ours.secret.key(PEER, OURS, "abc"),
    };
    let mut p = Pair::new(purpose, false, policy(PEER, 2));
    p.start();
    assert!(
        p.seen.contains(&"verified false".to_string()),
        "{:?}",
        p.seen
    );
}

#[test]
fn dialback_keys_depend_on_every_part() {
    let s = DialbackSecret::from_bytes([7; 32]);
    let k = s.key("a.example", "b.example", "id1");
    assert_eq!(k.len(), 64);
    assert!(s.verifies(&k, "a.example", "b.example", "id1"));
    assert!(!s.verifies(&k, "b.example", "a.example", "id1"));
    assert!(!s.verifies(&k, "a.example", "b.example", "id2"));
    assert!(!DialbackSecret::from_bytes([8; 32]).verifies(&k, "a.example", "b.example", "id1"));
    assert!(!s.verifies("", "a.example", "b.example", "id1"));
}

/// Drives an incoming stream alone with raw XML (the peer's side scripted).
struct In {
    m: S2sIn,
    framer: Framer,
}

impl In {
    fn new(tls: bool) -> In {
        In {
            m: S2sIn::new(policy(OURS, 1), tls),
            framer: Framer::new(Limits::default()),
        }
    }

    fn send(&mut self, xml: &str) -> Vec<InAction> {
        self.framer.feed(xml.as_bytes()).unwrap();
        let mut all = Vec::new();
        while let Ok(Some(ev)) = self.framer.next_event() {
            let actions = self.m.handle(InInput::Xml(ev));
            if actions.iter().any(|a| matches!(a, InAction::ResetFramer)) {
                self.framer.reset();
            }
            all.extend(actions);
        }
        all
    }

    fn feed(&mut self, input: InInput) -> Vec<InAction> {
        self.m.handle(input)
    }
}

fn sent(actions: &[InAction]) -> String {
    actions
        .iter()
        .filter_map(|a| match a {
            InAction::Send(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

const HEADER: &str = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='peer.example' to='hearth.example' version='1.0'>";

/// An incoming stream over direct TLS on which PEER proved itself by dialback.
fn authenticated_by_dialback() -> In {
    let mut i = In::new(true);
    let a = i.send(HEADER);
    assert!(matches!(
        a[..],
        [InAction::Send(_), InAction::CheckCertificate(_)]
    ));
    i.feed(InInput::CertificateChecked {
        domain: PEER.into(),
        valid: false,
    });
    let a = i.send("<db:result from='peer.example' to='hearth.example'>k</db:result>");
    assert!(
        matches!(&a[..], [InAction::VerifyDialback { domain, key, .. }] if &**domain == PEER && key == "k"),
        "{a:?}"
    );
    let a = i.feed(InInput::DialbackVerified {
        domain: PEER.into(),
        valid: Some(true),
    });
    assert!(sent(&a).contains("type='valid'") || sent(&a).contains("type=\"valid\""));
    assert!(a.iter().any(|a| matches!(a, InAction::Authenticated(_))));
    i
}

#[test]
fn features_before_and_after_tls() {
    let mut i = In::new(false);
    let a = sent(&i.send(HEADER));
    assert!(
        a.contains("<starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/></starttls>"),
        "{a}"
    );
    // No dialback before TLS when TLS is required.
    assert!(!a.contains(DIALBACK_FEATURE), "{a}");
    // Named back in our header (RFC 6120 §4.7.2) with the db prefix declared.
    assert!(
        a.contains("to='peer.example'") && a.contains("xmlns:db='jabber:server:dialback'"),
        "{a}"
    );

    let mut i = In::new(true);
    i.send(HEADER);
    let a = sent(&i.feed(InInput::CertificateChecked {
        domain: PEER.into(),
        valid: true,
    }));
    assert!(
        a.contains("<mechanism>EXTERNAL</mechanism>") && a.contains("urn:xmpp:features:dialback"),
        "{a}"
    );
    assert!(!a.contains("starttls"), "{a}");
}

#[test]
fn dialback_before_tls_is_a_policy_violation_when_tls_is_required() {
    let mut i = In::new(false);
    i.send(HEADER);
    let a = sent(&i.send("<db:result from='peer.example' to='hearth.example'>k</db:result>"));
    assert!(a.contains("policy-violation"), "{a}");
    assert!(i.m.is_closed());
}

#[test]
fn external_without_a_valid_certificate_fails_and_dialback_may_follow() {
    let mut i = In::new(true);
    i.send(HEADER);
    i.feed(InInput::CertificateChecked {
        domain: PEER.into(),
        valid: false,
    });
    let a = sent(
        &i.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"),
    );
    assert!(a.contains("<not-authorized/>"), "{a}");
    assert!(!i.m.is_closed());
    assert!(i.m.authenticated().is_empty());
}

#[test]
fn external_with_another_authzid_is_refused() {
    let mut i = In::new(true);
    i.send(HEADER);
    i.feed(InInput::CertificateChecked {
        domain: PEER.into(),
        valid: true,
    });
    let other = B64.encode("evil.example");
    let a = sent(&i.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{other}</auth>"
    )));
    assert!(a.contains("<invalid-authzid/>"), "{a}");
    assert!(i.m.authenticated().is_empty());
}

#[test]
fn stanzas_before_authentication_are_not_authorized() {
    let mut i = In::new(true);
    i.send(HEADER);
    i.feed(InInput::CertificateChecked {
        domain: PEER.into(),
        valid: false,
    });
    let a = sent(&i.send("<message from='bob@peer.example' to='alice@hearth.example'/>"));
    assert!(a.contains("<not-authorized"), "{a}");
    assert!(i.m.is_closed());
}

#[test]
fn a_stanza_from_a_domain_the_stream_did_not_prove_is_invalid_from() {
    let mut i = authenticated_by_dialback();
    let a = i.send(
        "<message from='mallory@evil.example' to='alice@hearth.example'><body>x</body></message>",
    );
    assert!(sent(&a).contains("<invalid-from"), "{a:?}");
    assert!(!a.iter().any(|a| matches!(a, InAction::Route(_))));
    assert!(i.m.is_closed());
}

#[test]
fn a_stanza_for_a_domain_we_do_not_serve_is_host_unknown() {
    let mut i = authenticated_by_dialback();
    let a = sent(&i.send("<message from='bob@peer.example' to='carol@elsewhere.example'/>"));
    assert!(a.contains("<host-unknown"), "{a}");
}

#[test]
fn a_stanza_without_addresses_is_improper_addressing() {
    let mut i = authenticated_by_dialback();
    let a = sent(&i.send("<message to='alice@hearth.example'/>"));
    assert!(a.contains("<improper-addressing"), "{a}");
}

#[test]
fn authenticated_stanzas_are_routed_normalized() {
    let mut i = authenticated_by_dialback();
    let a =
        i.send("<presence from='Bob@PEER.example/x' to='Alice@hearth.example' type='subscribe'/>");
    let [InAction::Route(s)] = &a[..] else {
        panic!("{a:?}")
    };
    assert_eq!(s.kind, Kind::Presence);
    assert_eq!(s.el.attr("from"), Some("bob@peer.example/x"));
    assert_eq!(s.el.attr("to"), Some("alice@hearth.example"));
}

#[test]
fn dialback_for_another_of_our_domains_is_item_not_found() {
    let mut i = authenticated_by_dialback();
    let a = sent(&i.send("<db:result from='peer.example' to='other.example'>k</db:result>"));
    assert!(
        a.contains("type='error'") || a.contains("type=\"error\""),
        "{a}"
    );
    assert!(a.contains("item-not-found"), "{a}");
    assert!(!i.m.is_closed());
}

#[test]
fn an_unreachable_authoritative_server_gives_a_dialback_error() {
    let mut i = In::new(true);
    i.send(HEADER);
    i.feed(InInput::CertificateChecked {
        domain: PEER.into(),
        valid: false,
    });
    i.send("<db:result from='peer.example' to='hearth.example'>k</db:result>");
    let a = sent(&i.feed(InInput::DialbackVerified {
        domain: PEER.into(),
        valid: None,
    }));
    assert!(a.contains("remote-server-not-found"), "{a}");
    assert!(i.m.authenticated().is_empty());
}

#[test]
fn too_many_dialback_requests_end_the_stream() {
    let mut i = In::new(true);
    i.send(HEADER);
    i.feed(InInput::CertificateChecked {
        domain: PEER.into(),
        valid: false,
    });
    let mut last = Vec::new();
    for n in 0..=MAX_PENDING_VERIFICATIONS {
        last = i.send(&format!(
            "<db:result from='d{n}.example' to='hearth.example'>k</db:result>"
        ));
    }
    assert!(sent(&last).contains("policy-violation"), "{last:?}");
    assert!(i.m.is_closed());
}

#[test]
fn db_verify_answers_for_keys_we_issued() {
    let mut i = In::new(true);
    i.send(HEADER);
    i.feed(InInput::CertificateChecked {
        domain: PEER.into(),
        valid: false,
    });
    let key = policy(OURS, 1).secret.key(PEER, OURS, "s1");
    let a = sent(&i.send(&format!(
        "<db:verify from='peer.example' to='hearth.example' id='s1'>{key}</db:verify>"
    )));
    assert!(a.starts_with("<db:verify"), "{a}");
    assert!(
        a.contains("type=\"valid\"") && a.contains("id=\"s1\""),
        "{a}"
    );
    let a = sent(
        &i.send("<db:verify from='peer.example' to='hearth.example' id='s1'>0000</db:verify>"),
    );
    assert!(a.contains("type=\"invalid\""), "{a}");
}

#[test]
fn an_outgoing_stream_without_tls_is_abandoned_when_tls_is_required() {
    let mut o = S2sOut::new(policy(OURS, 1), PEER.into(), Purpose::Deliver, None);
    let mut framer = Framer::new(Limits::default());
    o.open();
    framer
        .feed(b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='peer.example' id='x1' version='1.0'><stream:features/>")
        .unwrap();
    let mut all = Vec::new();
    while let Ok(Some(ev)) = framer.next_event() {
        all.extend(o.handle(OutInput::Xml(ev)));
    }
    assert!(
        all.iter()
            .any(|a| matches!(a, OutAction::Failed(w) if w.contains("does not offer TLS"))),
        "{all:?}"
    );
    assert!(o.is_closed());
}

#[test]
fn an_outgoing_stream_to_a_peer_with_an_invalid_certificate_is_abandoned_if_policy_says_so() {
    let strict = Arc::new(S2sPolicy {
        domain: PEER.into(),
        require_tls: true,
        require_valid_certificates: true,
        secret: DialbackSecret::from_bytes([2; 32]),
        services: Vec::new(),
    });
    let mut p = Pair::new(Purpose::Deliver, false, strict);
    p.start();
    assert!(
        p.seen.iter().any(|s| s.contains("is not valid")),
        "{:?}",
        p.seen
    );
    assert!(!p.out.is_ready());
}

#[test]
fn with_valid_certificates_required_dialback_is_answered_by_the_certificate() {
    let strict = Arc::new(S2sPolicy {
        domain: OURS.into(),
        require_tls: true,
        require_valid_certificates: true,
        secret: DialbackSecret::from_bytes([1; 32]),
        services: Vec::new(),
    });
    for valid in [true, false] {
        let mut i = In {
            m: S2sIn::new(strict.clone(), true),
            framer: Framer::new(Limits::default()),
        };
        i.send(HEADER);
        i.feed(InInput::CertificateChecked {
            domain: PEER.into(),
            valid: false,
        });
        // Another domain than the header's: its certificate is checked, never a
        // dialback round trip.
        let a = i.send("<db:result from='other.example' to='hearth.example'>k</db:result>");
        assert!(
            matches!(&a[..], [InAction::CheckCertificate(d)] if &**d == "other.example"),
            "{a:?}"
        );
        let a = i.feed(InInput::CertificateChecked {
            domain: "other.example".into(),
            valid,
        });
        let verdict = if valid { "\"valid\"" } else { "\"invalid\"" };
        assert!(sent(&a).contains(verdict), "{a:?}");
        assert_eq!(i.m.authenticated().len(), usize::from(valid));
    }
}

#[test]
fn a_malformed_iq_is_bounced_to_its_sender() {
    let mut i = authenticated_by_dialback();
    let a = i.send("<iq from='bob@peer.example/x' to='alice@hearth.example' type='get'><ping xmlns='urn:xmpp:ping'/></iq>");
    let [InAction::Bounce(e)] = &a[..] else {
        panic!("{a:?}")
    };
    assert_eq!(e.attr("to"), Some("bob@peer.example/x"));
    assert_eq!(e.attr("type"), Some("error"));
    assert!(!i.m.is_closed());
}

/// A service domain of ours (XEP-0045 rooms at `rooms.hearth.example`): a peer's stream
/// to it is accepted, dialback authenticates the peer for it, and stanzas for it (only)
/// are routed; a link from it names it in its header and dialback.
#[test]
fn a_service_domain_federates_on_streams_of_its_own() {
    const ROOMS: &str = "rooms.hearth.example";
    let mut p = Pair::new(Purpose::Deliver, false, policy(PEER, 2));
    p.inn = S2sIn::new(
        Arc::new(S2sPolicy {
            domain: OURS.into(),
            require_tls: true,
            require_valid_certificates: false,
            secret: DialbackSecret::from_bytes([1; 32]),
            services: vec![ROOMS.into()],
        }),
        false,
    );
    p.out = S2sOut::new(policy(PEER, 2), ROOMS.into(), Purpose::Deliver, None);
    p.start();
    assert!(p.out.is_ready(), "{:?}", p.seen);
    assert_eq!(&**p.inn.local(), ROOMS);
    p.send_stanza(
        "<message from='bob@peer.example/x' to='lounge@rooms.hearth.example' \
         type='groupchat'><body>hi</body></message>",
    );
    assert_eq!(p.routed.len(), 1);
    assert_eq!(
        p.routed[0].to.as_ref().map(|j| j.as_str()),
        Some("lounge@rooms.hearth.example")
    );

    // Without the service in the policy the same stream is host-unknown.
    let mut p = Pair::new(Purpose::Deliver, false, policy(PEER, 2));
    p.out = S2sOut::new(policy(PEER, 2), ROOMS.into(), Purpose::Deliver, None);
    p.start();
    assert!(!p.out.is_ready());

    // Our link from the service: header and dialback name it, not the server.
    let mut out =
        S2sOut::new(policy(OURS, 1), PEER.into(), Purpose::Deliver, None).from_local(ROOMS.into());
    let header: String = out
        .open()
        .into_iter()
        .filter_map(|a| match a {
            OutAction::Send(s) => Some(s),
            _ => None,
        })
        .collect();
    assert!(header.contains("from='rooms.hearth.example'"), "{header}");
}
