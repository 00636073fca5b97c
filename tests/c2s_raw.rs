//! Raw protocol against a real hearth over real TLS sockets: what a misbehaving or
//! unlucky client sees. Each test names the RFC section it holds the server to.

mod common;

use std::time::Duration;

use common::client::{
    AuthError, Conn, Event, NS_BIND, NS_STANZA_ERRORS, NS_STREAM, NS_STREAM_ERRORS, NS_TLS,
    REPLY_TIMEOUT, new_id,
};
use common::sasl::{self, Binding, Hash, Mechanism, Scram, TLS_EXPORTER, TLS_SERVER_END_POINT};
use common::xml::{Item, Node, Reader};
use common::{Server, ServerOpts};

const ALICE_PW: &str = "correct horse";
const BOB_PW: &str = "battery staple";

fn server_with(opts: ServerOpts) -> Server {
    let server = Server::start(opts);
    server.add_user("alice", ALICE_PW);
    server.add_user("bob", BOB_PW);
    server
}

fn server() -> Server {
    server_with(ServerOpts::default())
}

fn login(server: &Server, user: &str, password: &str, resource: Option<&str>) -> Conn {
    Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        user,
        password,
        resource,
    )
}

fn starttls(server: &Server) -> Conn {
    Conn::connect_starttls(server.c2s_addr(), server.domain(), &server.cert_path())
}

/// Reads to the end of the connection and returns the stream error's condition,
/// asserting the RFC 6120 §4.9.1.1 shape: `<stream:error/>`, `</stream:stream>`, close.
fn expect_stream_error(conn: &mut Conn) -> String {
    let (elements, stream_closed) = conn.read_until_closed(REPLY_TIMEOUT);
    assert!(
        stream_closed,
        "no </stream:stream> after the stream error: {elements:?}"
    );
    let error = elements
        .iter()
        .find(|e| e.is("error", NS_STREAM))
        .unwrap_or_else(|| panic!("no <stream:error/> before the close, got: {elements:?}"));
    error
        .condition(NS_STREAM_ERRORS)
        .unwrap_or_else(|| panic!("stream error without a defined condition: {error}"))
        .to_string()
}

// ---- STARTTLS and SASL ------------------------------------------------------------

/// RFC 6120 §5.3.1 / §5.4.1: TLS is mandatory-to-negotiate, so before TLS the server
/// offers STARTTLS and an `<auth/>` does not succeed: either a SASL `<failure/>`
/// (§6.5.3 `<encryption-required/>` fits) or a stream error, never `<success/>`.
#[test]
fn starttls_is_required_before_auth() {
    let server = server();
    let mut conn = Conn::connect_plain(server.c2s_addr(), server.domain(), &server.cert_path());
    assert!(
        conn.features.has_child("starttls", NS_TLS),
        "STARTTLS not offered: {}",
        conn.features
    );
    assert!(
        !conn.mechanisms().iter().any(|m| m == "PLAIN"),
        "PLAIN offered before TLS (RFC 6120 §13.9.4): {}",
        conn.features
    );
    let mut plain = sasl::Plain {
        username: "alice".into(),
        password: ALICE_PW.into(),
    };
    match conn.authenticate(&mut plain) {
        Ok(()) => panic!("authenticated over plaintext TCP"),
        Err(AuthError::Failure(_, _)) => {}
        Err(AuthError::Unexpected(what)) => match *what {
            Event::Item(Item::Element(el)) if el.is("error", NS_STREAM) => {}
            Event::Closed => {}
            other => panic!("expected a SASL <failure/> or a stream error, got {other:?}"),
        },
        Err(AuthError::Mechanism(e)) => panic!("{e}"),
    }
}

/// RFC 6120 §4.9.3.12 and §6.4: nothing an unauthenticated stream sends is routed.
/// The server may answer with the `<not-authorized/>` stream error or a stanza error;
/// what matters is that bob never sees the message.
#[test]
fn stanza_before_auth_is_not_routed() {
    let server = server();
    let mut bob = login(&server, "bob", BOB_PW, Some("phone"));
    let mut intruder = starttls(&server);
    let id = new_id("unauth");
    intruder.send(&format!(
        "<message to='{}' from='{}' type='chat' id='{id}'><body>hi</body></message>",
        bob.full_jid(),
        server.jid("alice")
    ));
    // Wait until the server has dealt with it: an answer or a close.
    match intruder.recv(REPLY_TIMEOUT) {
        Event::Item(Item::Element(el)) => {
            let stream_error = el.is("error", NS_STREAM)
                && el.condition(NS_STREAM_ERRORS) == Some("not-authorized");
            let stanza_error = el.name == "message" && el.attr("type") == Some("error");
            assert!(stream_error || stanza_error, "unexpected answer: {el}");
        }
        Event::Closed => {}
        other => panic!("no reaction to a stanza before auth: {other:?}"),
    }
    let ping_id = bob.send_ping(server.domain());
    let first = bob.expect_matching("the ping reply", |el| el.name != "presence");
    assert_eq!(
        first.attr("id"),
        Some(ping_id.as_str()),
        "bob received something from an unauthenticated stream: {first}"
    );
}

/// hearth offers every SCRAM variant and PLAIN after TLS, and advertises both channel
/// binding types (XEP-0440) so a client knows which one -PLUS will use.
#[test]
fn mechanisms_and_channel_bindings_offered_after_tls() {
    let server = server();
    let conn = starttls(&server);
    let mechs = conn.mechanisms();
    for m in [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-1",
        "PLAIN",
    ] {
        assert!(mechs.iter().any(|o| o == m), "{m} not offered: {mechs:?}");
    }
    let cb = conn.channel_binding_types();
    for t in [TLS_EXPORTER, TLS_SERVER_END_POINT] {
        assert!(
            cb.iter().any(|o| o == t),
            "{t} not advertised (XEP-0440): {cb:?}"
        );
    }
}

fn plus_login(hash: Hash, kind: &'static str) {
    let server = server();
    let mut conn = starttls(&server);
    let data = match kind {
        TLS_EXPORTER => conn.tls_exporter(),
        _ => conn.tls_server_end_point(),
    };
    let mut mech = Scram::new(hash, "alice", ALICE_PW, Binding::Use { kind, data });
    conn.authenticate(&mut mech)
        .unwrap_or_else(|e| panic!("{} with {kind} failed: {e:?}", mech.name()));
    conn.bind(None);
    conn.assert_alive();
}

/// RFC 5929 §4 tls-server-end-point with SCRAM-SHA-256-PLUS.
#[test]
fn scram_sha_256_plus_tls_server_end_point() {
    plus_login(Hash::Sha256, TLS_SERVER_END_POINT);
}

/// RFC 5929 §4 tls-server-end-point with SCRAM-SHA-1-PLUS.
#[test]
fn scram_sha_1_plus_tls_server_end_point() {
    plus_login(Hash::Sha1, TLS_SERVER_END_POINT);
}

/// RFC 9266 tls-exporter with this file's own SCRAM (xmpp-rs's is in c2s_clients.rs).
#[test]
fn scram_sha_256_plus_tls_exporter() {
    plus_login(Hash::Sha256, TLS_EXPORTER);
}

/// RFC 5802 §6: binding data that does not match this TLS session (a man in the
/// middle's session) must fail authentication.
#[test]
fn plus_with_wrong_binding_data_fails() {
    let server = server();
    let mut conn = starttls(&server);
    assert!(
        conn.mechanisms().iter().any(|m| m == "SCRAM-SHA-256-PLUS"),
        "{:?}",
        conn.mechanisms()
    );
    let mut mech = Scram::new(
        Hash::Sha256,
        "alice",
        ALICE_PW,
        Binding::Use {
            kind: TLS_EXPORTER,
            data: vec![0x42; 32],
        },
    );
    match conn.authenticate(&mut mech) {
        Err(AuthError::Failure(..)) => {}
        other => panic!("mismatched channel binding must give <failure/>, got {other:?}"),
    }
}

/// RFC 5802 §6: flag "y" (client could bind but thinks the server cannot) sent to a
/// server that offers -PLUS means a downgrade: with `auth.strict_channel_binding` the
/// server fails the exchange.
#[test]
fn scram_downgrade_flag_y_fails_when_plus_offered_and_strict() {
    let server = server_with(ServerOpts {
        extra_toml: "strict_channel_binding = true\n".into(),
        ..ServerOpts::default()
    });
    let mut conn = starttls(&server);
    assert!(
        conn.mechanisms().iter().any(|m| m == "SCRAM-SHA-256-PLUS"),
        "{:?}",
        conn.mechanisms()
    );
    let mut mech = Scram::new(Hash::Sha256, "alice", ALICE_PW, Binding::SupportedNotUsed);
    match conn.authenticate(&mut mech) {
        Err(AuthError::Failure(..)) => {}
        other => panic!("gs2 flag 'y' with -PLUS on offer must fail, got {other:?}"),
    }
}

/// By default "y" is accepted: clients that only know tls-unique (slixmpp) send it on
/// every TLS 1.3 stream, where they cannot use the bindings hearth offers.
#[test]
fn scram_flag_y_is_accepted_by_default() {
    let server = server();
    let mut conn = starttls(&server);
    let mut mech = Scram::new(Hash::Sha256, "alice", ALICE_PW, Binding::SupportedNotUsed);
    if let Err(e) = conn.authenticate(&mut mech) {
        panic!("gs2 flag 'y' must be accepted by default, got {e:?}");
    }
}

// ---- routing and addresses --------------------------------------------------------

/// RFC 6120 §8.1.2.1: the server stamps the sender's full JID on what a client sends,
/// whatever `from` the client wrote.
#[test]
fn spoofed_from_is_replaced_by_full_jid() {
    let server = server();
    let mut alice = login(&server, "alice", ALICE_PW, Some("desk"));
    let mut bob = login(&server, "bob", BOB_PW, Some("phone"));
    let id = new_id("spoof");
    alice.send(&format!(
        "<message from='mallory@evil.example/x' to='{}' type='chat' id='{id}'>\
         <body>trust me</body></message>",
        bob.full_jid()
    ));
    let msg = bob.expect_matching("the spoofed message", |el| {
        el.name == "message" && el.attr("id") == Some(id.as_str())
    });
    assert_eq!(msg.attr("from"), Some(alice.full_jid()), "{msg}");
    alice.assert_alive();
}

/// RFC 6121 §8.5.3.2.1: an iq to a full JID with no such session is answered
/// `<service-unavailable/>`.
#[test]
fn iq_to_unavailable_full_jid_is_service_unavailable() {
    let server = server();
    let mut alice = login(&server, "alice", ALICE_PW, None);
    let reply = alice.ping(&format!("{}/nowhere", server.jid("bob")));
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    let error = reply
        .child("error", "jabber:client")
        .unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(
        error.condition(NS_STANZA_ERRORS),
        Some("service-unavailable"),
        "{reply}"
    );
}

/// RFC 6120 §8.2.3: an iq of type result or error is never answered. The ping sent
/// afterwards must be the first thing answered.
#[test]
fn iq_result_and_error_are_never_answered() {
    let server = server();
    let mut alice = login(&server, "alice", ALICE_PW, None);
    let domain = server.domain().to_string();
    alice.send(&format!("<iq type='result' id='r-1' to='{domain}'/>"));
    alice.send(&format!(
        "<iq type='error' id='e-1' to='{domain}'><error type='cancel'>\
         <service-unavailable xmlns='{NS_STANZA_ERRORS}'/></error></iq>"
    ));
    let ping_id = alice.send_ping(&domain);
    let first_iq = alice.expect_matching("an iq", |el| el.name == "iq");
    assert_eq!(
        first_iq.attr("id"),
        Some(ping_id.as_str()),
        "the server answered a result/error iq: {first_iq}"
    );
}

// ---- stream errors ----------------------------------------------------------------

/// RFC 6120 §4.9.3.13 and §11: bad XML is `<not-well-formed/>` for that stream only.
#[test]
fn malformed_xml_closes_only_that_stream() {
    let server = server();
    let mut alice = login(&server, "alice", ALICE_PW, None);
    let mut bob = login(&server, "bob", BOB_PW, None);
    alice.send("<message><body>unclosed</message>");
    assert_eq!(expect_stream_error(&mut alice), "not-well-formed");
    bob.assert_alive();
    // And the server still takes new logins.
    let mut again = login(&server, "alice", ALICE_PW, None);
    again.assert_alive();
}

/// RFC 6120 §4.9.3.14 / §13.12: a stanza over the configured limit is a
/// `<policy-violation/>`, for that stream only.
#[test]
fn oversized_stanza_is_policy_violation() {
    let limit = 10_000;
    let server = server_with(ServerOpts {
        max_stanza_bytes: Some(limit),
        ..ServerOpts::default()
    });
    let mut alice = login(&server, "alice", ALICE_PW, None);
    let mut bob = login(&server, "bob", BOB_PW, None);
    let body = "x".repeat(limit * 2);
    // The server may close while we are still writing: ignore a write error.
    let _ = alice.try_send(
        format!(
            "<message to='{}' type='chat'><body>{body}</body></message>",
            bob.full_jid()
        )
        .as_bytes(),
    );
    assert_eq!(expect_stream_error(&mut alice), "policy-violation");
    bob.assert_alive();
}

/// RFC 6120 §7.7.2.2, the policy hearth picks: the new session wins, the old stream
/// gets `<conflict/>` and is closed.
#[test]
fn resource_conflict_new_session_wins() {
    let server = server();
    let mut old = login(&server, "alice", ALICE_PW, Some("phone"));
    let mut new = login(&server, "alice", ALICE_PW, Some("phone"));
    assert_eq!(new.full_jid(), format!("{}/phone", server.jid("alice")));
    assert_eq!(expect_stream_error(&mut old), "conflict");
    new.assert_alive();
}

/// RFC 6120 §7.6: bind without a resource gets one the server makes up, different
/// for each session.
#[test]
fn bind_without_resource_gets_generated_one() {
    let server = server();
    let mut one = starttls(&server);
    one.login_any("alice", ALICE_PW);
    let jid1 = one.bind(None);
    let mut two = starttls(&server);
    two.login_any("alice", ALICE_PW);
    let jid2 = two.bind(None);
    let prefix = format!("{}/", server.jid("alice"));
    for jid in [&jid1, &jid2] {
        assert!(
            jid.starts_with(&prefix) && jid.len() > prefix.len(),
            "{jid:?} is not a full JID of alice"
        );
    }
    assert_ne!(jid1, jid2, "two sessions got the same generated resource");
    one.assert_alive();
    two.assert_alive();
}

/// SIGTERM: every client's stream is closed with `</stream:stream>` (a
/// `<system-shutdown/>` stream error before it is allowed, RFC 6120 §4.9.3.20) and
/// the process exits 0.
#[test]
fn sigterm_closes_streams_and_exits_zero() {
    let mut server = server();
    let mut alice = login(&server, "alice", ALICE_PW, None);
    alice.assert_alive();
    server.stop();
    let (elements, stream_closed) = alice.read_until_closed(Duration::from_secs(5));
    for el in &elements {
        assert!(
            el.is("error", NS_STREAM) && el.condition(NS_STREAM_ERRORS) == Some("system-shutdown"),
            "unexpected element at shutdown: {el}"
        );
    }
    assert!(
        stream_closed,
        "no </stream:stream> before the connection closed"
    );
}

// ---- the test client's own pieces, no server needed -------------------------------

/// RFC 5802 §5 (SCRAM-SHA-1) and RFC 7677 §3 (SCRAM-SHA-256) example exchanges.
#[test]
fn scram_client_matches_rfc_examples() {
    let cases = [
        (
            Hash::Sha1,
            "fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        ),
        (
            Hash::Sha256,
            "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ),
    ];
    for (hash, nonce, server_first, client_final, server_final) in cases {
        let mut scram = Scram::with_nonce(hash, "user", "pencil", Binding::None, nonce);
        assert_eq!(scram.initial(), format!("n,,n=user,r={nonce}").into_bytes());
        let answer = scram.response(server_first.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(answer).unwrap(), client_final);
        scram.success(server_final.as_bytes()).unwrap();
    }
}

/// This file's SCRAM-PLUS and xmpp-rs's build the same client-final message from the
/// same nonce, server-first and tls-exporter data: the gs2 header and `c=` agree.
#[test]
fn own_scram_plus_agrees_with_xmpp_rs() {
    let cb = vec![7u8; 32];
    for hash in [Hash::Sha1, Hash::Sha256] {
        let mut theirs = sasl::XmppRs::scram(hash, "alice", ALICE_PW, Some(cb.clone()));
        let first = String::from_utf8(theirs.initial()).unwrap();
        let nonce = first.rsplit("r=").next().unwrap().to_string();
        let mut ours = Scram::with_nonce(
            hash,
            "alice",
            ALICE_PW,
            Binding::Use {
                kind: TLS_EXPORTER,
                data: cb.clone(),
            },
            &nonce,
        );
        assert_eq!(ours.name(), theirs.name());
        assert_eq!(String::from_utf8(ours.initial()).unwrap(), first);
        let server_first = format!("r={nonce}srv,s=QSXCR+Q6sek8bf92,i=4096");
        assert_eq!(
            ours.response(server_first.as_bytes()).unwrap(),
            theirs.response(server_first.as_bytes()).unwrap()
        );
    }
}

/// The reader yields the same items however the bytes are split.
#[test]
fn xml_reader_handles_any_split() {
    let input = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                 xmlns:stream='http://etherx.jabber.org/streams' from='test.local' id='x' \
                 version='1.0'><stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
                 </stream:features> <message from='a@test.local/r' to='b@test.local'>\
                 <body>caf\u{e9} &amp; &lt;tea&gt; &#x263A;</body></message></stream:stream>";
    let bytes = input.as_bytes();
    let read_all = |split: usize| {
        let mut r = Reader::new();
        let mut items = Vec::new();
        r.push(&bytes[..split]);
        while let Some(i) = r.next_item() {
            items.push(i);
        }
        r.push(&bytes[split..]);
        while let Some(i) = r.next_item() {
            items.push(i);
        }
        items
    };
    let whole = read_all(bytes.len());
    assert_eq!(whole.len(), 4, "{whole:?}");
    let Item::Element(features) = &whole[1] else {
        panic!("{whole:?}")
    };
    assert!(features.is("features", NS_STREAM) && features.has_child("bind", NS_BIND));
    let Item::Element(message) = &whole[2] else {
        panic!("{whole:?}")
    };
    let body: &Node = message.child("body", "jabber:client").unwrap();
    assert_eq!(body.text, "caf\u{e9} & <tea> \u{263A}");
    assert_eq!(whole[3], Item::StreamClose);
    for split in 0..bytes.len() {
        assert_eq!(read_all(split), whole, "split at byte {split}");
    }
}

// ---- login throttling ---------------------------------------------------------------

/// Failed logins are throttled per account: after `max_failures_before_delay` (3)
/// failures the next attempt waits (1 s, doubling), the right password still works,
/// and the log names the account but never the password.
#[test]
fn failed_logins_are_delayed_and_logged_without_password() {
    let server = server();
    let attempt = |password: &str| {
        let mut conn = starttls(&server);
        let mut mech = sasl::Plain {
            username: "alice".into(),
            password: password.into(),
        };
        let started = std::time::Instant::now();
        let result = conn.authenticate(&mut mech);
        (result, started.elapsed())
    };
    for i in 0..3 {
        let (result, took) = attempt("not-her-password");
        assert!(
            matches!(result, Err(AuthError::Failure(..))),
            "attempt {i}: {result:?}"
        );
        assert!(
            took < Duration::from_millis(900),
            "attempt {i} was delayed: {took:?}"
        );
    }
    let (result, took) = attempt("not-her-password");
    assert!(matches!(result, Err(AuthError::Failure(..))), "{result:?}");
    assert!(
        took >= Duration::from_millis(900),
        "4th failure not delayed: {took:?}"
    );
    let (result, _) = attempt(ALICE_PW);
    assert!(
        result.is_ok(),
        "the right password must still work: {result:?}"
    );
    let log = server.log();
    assert!(log.contains("failed to authenticate as \"alice\""), "{log}");
    assert!(log.contains("delaying login of \"alice\""), "{log}");
    assert!(!log.contains("not-her-password"), "password in the log");
}

/// Issue 14 (owner lockout): a guesser hammering alice's password from 127.0.0.1 only
/// slows itself. Alice, logging in from 127.0.0.2 meanwhile, gets in within 2 s every
/// time, and the guesser is never kept waiting past the negotiation deadline: a delay
/// that does not fit is answered at once with `temporary-auth-failure` (RFC 6120
/// §6.5.11), not with a `connection-timeout` at the deadline.
#[test]
fn a_guesser_never_locks_the_owner_out() {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    // Admission limits off the path: this is about the login throttle.
    let server = Arc::new(server_with(ServerOpts {
        negotiation_timeout_secs: Some(10),
        extra_toml: "[limits]\nconnection_burst_per_address = 100000\n\
                     connections_per_minute_per_address = 100000\n\
                     max_connections_per_address = 1000\n"
            .into(),
        ..ServerOpts::default()
    }));
    let guesser_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let owner_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let stop = Arc::new(AtomicBool::new(false));
    // Stops the guessers also when an assertion below fails, so their handles on the
    // server go and its process is killed with the test.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_guard = StopOnDrop(stop.clone());
    let guesses = Arc::new(AtomicUsize::new(0));
    let timeouts = Arc::new(AtomicUsize::new(0));
    let guessers: Vec<_> = (0..4)
        .map(|_| {
            let (server, stop) = (server.clone(), stop.clone());
            let (guesses, timeouts) = (guesses.clone(), timeouts.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut conn = Conn::connect_plain_from(
                        server.c2s_addr(),
                        guesser_ip,
                        server.domain(),
                        &server.cert_path(),
                    );
                    conn.starttls();
                    // Up to 5 guesses per connection, then the server closes it.
                    for _ in 0..5 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let mut mech = Scram::new(Hash::Sha256, "alice", "a guess", Binding::None);
                        match conn.authenticate(&mut mech) {
                            Err(AuthError::Failure(..)) => {
                                guesses.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(AuthError::Unexpected(ev)) => {
                                if format!("{ev:?}").contains("connection-timeout") {
                                    timeouts.fetch_add(1, Ordering::Relaxed);
                                }
                                break;
                            }
                            other => panic!("a wrong password got {other:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    // Let the guesser run into its delays first.
    let start = std::time::Instant::now();
    while guesses.load(Ordering::Relaxed) < 10 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        guesses.load(Ordering::Relaxed) >= 10,
        "the guesser never got going"
    );
    for round in 0..6 {
        let started = std::time::Instant::now();
        let mut conn = Conn::connect_plain_from(
            server.c2s_addr(),
            owner_ip,
            server.domain(),
            &server.cert_path(),
        );
        conn.starttls();
        let mut mech = Scram::new(Hash::Sha256, "alice", ALICE_PW, Binding::None);
        conn.authenticate(&mut mech)
            .unwrap_or_else(|e| panic!("round {round}: the owner's login failed: {e:?}"));
        conn.bind(Some(&format!("phone{round}")));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "round {round}: the owner waited {took:?} while a guesser ran elsewhere"
        );
        conn.close();
        std::thread::sleep(Duration::from_millis(1500));
    }
    stop.store(true, Ordering::Relaxed);
    for g in guessers {
        g.join().unwrap();
    }
    assert_eq!(
        timeouts.load(Ordering::Relaxed),
        0,
        "a throttle delay ran into the negotiation deadline"
    );
    let log = server.log();
    assert!(
        log.contains("refused for now"),
        "the guesser was never refused: {log}"
    );
}

/// Issue 14: at `RUST_LOG=trace` the server logs every stanza, but never a SASL payload:
/// neither the password, nor the base64 of a PLAIN `<auth/>`, nor SCRAM's messages.
#[test]
fn trace_log_never_shows_a_password_or_sasl_payload() {
    use base64::Engine as _;
    let server = server_with(ServerOpts {
        rust_log: Some("trace".into()),
        ..ServerOpts::default()
    });
    let mut conn = starttls(&server);
    let mut plain = sasl::Plain {
        username: "alice".into(),
        password: ALICE_PW.into(),
    };
    conn.authenticate(&mut plain).expect("PLAIN login");
    conn.bind(Some("phone"));
    conn.send("<presence/>");
    conn.assert_alive();
    let mut wrong = starttls(&server);
    let mut plain = sasl::Plain {
        username: "alice".into(),
        password: "a wrong secret".into(),
    };
    assert!(wrong.authenticate(&mut plain).is_err());
    let mut scram = starttls(&server);
    let mut mech = Scram::new(Hash::Sha256, "bob", BOB_PW, Binding::None);
    scram.authenticate(&mut mech).expect("SCRAM login");
    scram.bind(Some("desk"));
    scram.assert_alive();
    drop((conn, wrong, scram));
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log();
    assert!(log.contains("TRACE"), "not a trace log: {log}");
    let b64 = base64::engine::general_purpose::STANDARD;
    for secret in [
        ALICE_PW.to_string(),
        "a wrong secret".to_string(),
        BOB_PW.to_string(),
        b64.encode(format!("\0alice\0{ALICE_PW}")),
        b64.encode("\0alice\0a wrong secret"),
    ] {
        assert!(!log.contains(&secret), "{secret:?} is in the trace log");
    }
    // SCRAM's client-first message starts with "n,,n=bob,r=": its base64 prefix.
    assert!(
        !log.contains(&b64.encode("n,,n=bob,r=")[..12]),
        "SCRAM payload logged"
    );
    assert!(log.contains("bytes redacted"), "{log}");
}
