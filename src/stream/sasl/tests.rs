//! Whole SASL conversations against [`SaslServer`], with the RFC examples as anchors.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::*;

fn b64(s: &str) -> Vec<u8> {
    BASE64.decode(s).unwrap()
}

fn challenge_text(action: SaslAction) -> String {
    match action {
        SaslAction::Challenge(data) => String::from_utf8(data).unwrap(),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// The attribute `name` of a SCRAM message.
fn attr<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.split(',')
        .find_map(|a| a.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap()
}

/// A SCRAM client (RFC 5802 §3) for conversations the RFCs do not spell out: it answers
/// `server_first` with a correct proof for `password` over `without_proof`.
fn client_final(
    hash: ScramHash,
    password: &str,
    client_first_bare: &str,
    server_first: &str,
    without_proof: &str,
) -> String {
    let salt = b64(attr(server_first, "s"));
    let iterations: u32 = attr(server_first, "i").parse().unwrap();
    let salted = hash.hi(password.as_bytes(), &salt, iterations);
    let client_key = hash.hmac(&salted, &[b"Client Key"]);
    let stored_key = hash.digest(&client_key);
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hash.hmac(&stored_key, &[auth_message.as_bytes()]);
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(k, s)| k ^ s)
        .collect();
    format!("{without_proof},p={}", BASE64.encode(proof))
}

fn pencil(hash: ScramHash) -> ScramCredentials {
    ScramCredentials::derive(hash, "pencil", b"0123456789abcdef", 4096).unwrap()
}

fn exporter() -> ChannelBindings {
    ChannelBindings {
        tls_exporter: Some(vec![0xAB; 32]),
        tls_server_end_point: None,
    }
}

/// Runs a SCRAM conversation up to the server-first message.
fn scram_until_server_first(
    server: &mut SaslServer,
    client_first: &str,
    creds: Option<ScramCredentials>,
) -> String {
    let hash = server.mechanism().scram_hash().unwrap();
    match server.step(client_first.as_bytes()) {
        SaslAction::LookupScram { hash: asked, .. } => assert_eq!(asked, hash),
        other => panic!("expected a lookup, got {other:?}"),
    }
    challenge_text(server.provide_scram(creds))
}

/// A whole SCRAM conversation in which the client knows `password`; returns the final
/// action.
fn scram_conversation(
    mechanism: Mechanism,
    cb: ChannelBindings,
    gs2_header: &str,
    client_cb_data: &[u8],
    password: &str,
) -> SaslAction {
    let hash = mechanism.scram_hash().unwrap();
    let mut server = SaslServer::new(mechanism, cb);
    let bare = "n=juliet,r=clientnonce123";
    let server_first = scram_until_server_first(
        &mut server,
        &format!("{gs2_header}{bare}"),
        Some(pencil(hash)),
    );
    let mut cbind_input = gs2_header.as_bytes().to_vec();
    cbind_input.extend_from_slice(client_cb_data);
    let without_proof = format!(
        "c={},r={}",
        BASE64.encode(cbind_input),
        attr(&server_first, "r")
    );
    let fin = client_final(hash, password, bare, &server_first, &without_proof);
    server.step(fin.as_bytes())
}

fn assert_success(action: &SaslAction) {
    assert!(
        matches!(action, SaslAction::Success { username, .. } if username == "juliet"),
        "expected success, got {action:?}"
    );
}

#[test]
fn rfc5802_sha1_example() {
    // RFC 5802 §5, with the server nonce and salt of the example.
    let mut server = SaslServer::with_server_nonce(
        Mechanism::ScramSha1,
        ChannelBindings::none(),
        "3rfcNHYJY1ZVvWVs7j",
    );
    assert_eq!(
        server.step(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"),
        SaslAction::LookupScram {
            username: "user".into(),
            hash: ScramHash::Sha1
        }
    );
    let creds = ScramCredentials::derive(ScramHash::Sha1, "pencil", &b64("QSXCR+Q6sek8bf92"), 4096)
        .unwrap();
    assert_eq!(
        challenge_text(server.provide_scram(Some(creds))),
        "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    );
    assert_eq!(
        server.step(
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        ),
        SaslAction::Success {
            username: "user".into(),
            authzid: None,
            additional_data: Some(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".to_vec()),
        }
    );
    assert!(server.is_done());
    // Nothing more is accepted once the exchange is over.
    assert_eq!(
        server.step(b"c=biws"),
        SaslAction::Failure(SaslFailure::MalformedRequest)
    );
}

#[test]
fn rfc7677_sha256_example() {
    // RFC 7677 §3.
    let mut server = SaslServer::with_server_nonce(
        Mechanism::ScramSha256,
        ChannelBindings::none(),
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    );
    assert_eq!(
        server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"),
        SaslAction::LookupScram {
            username: "user".into(),
            hash: ScramHash::Sha256
        }
    );
    let creds = ScramCredentials::derive(
        ScramHash::Sha256,
        "pencil",
        &b64("W22ZaJ0SNY7soEsUEjb6gQ=="),
        4096,
    )
    .unwrap();
    assert_eq!(
        challenge_text(server.provide_scram(Some(creds))),
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    assert_eq!(
        server.step(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        ),
        SaslAction::Success {
            username: "user".into(),
            authzid: None,
            additional_data: Some(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()),
        }
    );
}

#[test]
fn derive_matches_rfc5802_keys() {
    // The intermediate values of the RFC 5802 §5 example (user "user", password "pencil").
    let creds = ScramCredentials::derive(ScramHash::Sha1, "pencil", &b64("QSXCR+Q6sek8bf92"), 4096)
        .unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        hex(&creds.stored_key),
        "e9d94660c39d65c38fbad91c358f14da0eef2bd6"
    );
    assert_eq!(
        hex(&creds.server_key),
        "0fe09258b3ac852ba502cc62ba903eaacdbf7d31"
    );
    assert_eq!(creds.iterations, 4096);
    assert_eq!(
        ScramCredentials::derive(ScramHash::Sha1, "pencil", b"", 4096),
        Err(SaslError::InvalidParameters)
    );
    assert_eq!(
        ScramCredentials::derive(ScramHash::Sha1, "pencil", b"salt", 0),
        Err(SaslError::InvalidParameters)
    );
    assert_eq!(
        ScramCredentials::derive(ScramHash::Sha1, "", b"salt", 1),
        Err(SaslError::InvalidPassword)
    );
}

#[test]
fn generated_credentials_log_in() {
    let creds = ScramCredentials::generate(ScramHash::Sha256, "correct horse").unwrap();
    assert_eq!(creds.salt.len(), SALT_LEN);
    assert_eq!(creds.iterations, DEFAULT_ITERATIONS);
    let mut server = SaslServer::new(Mechanism::ScramSha256, ChannelBindings::none());
    let bare = "n=juliet,r=abc";
    let server_first = scram_until_server_first(&mut server, &format!("n,,{bare}"), Some(creds));
    let without_proof = format!("c=biws,r={}", attr(&server_first, "r"));
    let fin = client_final(
        ScramHash::Sha256,
        "correct horse",
        bare,
        &server_first,
        &without_proof,
    );
    assert_success(&server.step(fin.as_bytes()));
}

#[test]
fn random_server_nonce_extends_client_nonce() {
    let mut server = SaslServer::new(Mechanism::ScramSha1, ChannelBindings::none());
    let server_first = scram_until_server_first(
        &mut server,
        "n,,n=juliet,r=cnonce",
        Some(pencil(ScramHash::Sha1)),
    );
    let nonce = attr(&server_first, "r");
    let ours = nonce.strip_prefix("cnonce").unwrap();
    // 24 random bytes in base64.
    assert_eq!(ours.len(), 32);
    assert!(scram::is_printable(ours));
}

#[test]
fn wrong_password_fails() {
    for mechanism in [Mechanism::ScramSha1, Mechanism::ScramSha256] {
        let action = scram_conversation(mechanism, ChannelBindings::none(), "n,,", b"", "pencil2");
        assert_eq!(action, SaslAction::Failure(SaslFailure::NotAuthorized));
        let action = scram_conversation(mechanism, ChannelBindings::none(), "n,,", b"", "pencil");
        assert_success(&action);
    }
}

#[test]
fn wrong_nonce_fails_even_with_a_valid_proof() {
    let bare = "n=juliet,r=abc";
    // The client's nonce alone (as a replay of an older exchange would send), a cut,
    // an extension, and a change of case.
    for nonce in ["abc", "abcSNONC", "abcSNONCEX", "abcsnonce"] {
        let mut server = SaslServer::with_server_nonce(
            Mechanism::ScramSha256,
            ChannelBindings::none(),
            "SNONCE",
        );
        let server_first = scram_until_server_first(
            &mut server,
            &format!("n,,{bare}"),
            Some(pencil(ScramHash::Sha256)),
        );
        assert_eq!(attr(&server_first, "r"), "abcSNONCE");
        let without_proof = format!("c=biws,r={nonce}");
        let fin = client_final(
            ScramHash::Sha256,
            "pencil",
            bare,
            &server_first,
            &without_proof,
        );
        assert_eq!(
            server.step(fin.as_bytes()),
            SaslAction::Failure(SaslFailure::NotAuthorized),
            "{nonce}"
        );
    }
}

#[test]
fn plus_with_tls_exporter_succeeds() {
    let cb = exporter();
    let action = scram_conversation(
        Mechanism::ScramSha256Plus,
        cb.clone(),
        "p=tls-exporter,,",
        &[0xAB; 32],
        "pencil",
    );
    assert_success(&action);
    let action = scram_conversation(
        Mechanism::ScramSha1Plus,
        cb,
        "p=tls-exporter,,",
        &[0xAB; 32],
        "pencil",
    );
    assert_success(&action);
}

#[test]
fn plus_with_tls_server_end_point_succeeds() {
    let cb = ChannelBindings {
        tls_exporter: Some(vec![1; 32]),
        tls_server_end_point: Some(vec![2; 32]),
    };
    let action = scram_conversation(
        Mechanism::ScramSha256Plus,
        cb,
        "p=tls-server-end-point,,",
        &[2; 32],
        "pencil",
    );
    assert_success(&action);
}

#[test]
fn tampered_channel_binding_fails() {
    // What a man in the middle's own TLS session would give the client.
    let action = scram_conversation(
        Mechanism::ScramSha256Plus,
        exporter(),
        "p=tls-exporter,,",
        &[0xCD; 32],
        "pencil",
    );
    assert_eq!(action, SaslAction::Failure(SaslFailure::NotAuthorized));
    // No data at all.
    let action = scram_conversation(
        Mechanism::ScramSha256Plus,
        exporter(),
        "p=tls-exporter,,",
        b"",
        "pencil",
    );
    assert_eq!(action, SaslAction::Failure(SaslFailure::NotAuthorized));
    // A c= whose gs2 header differs from the one of client-first (the flag was flipped).
    let mut server = SaslServer::new(Mechanism::ScramSha256, ChannelBindings::none());
    let bare = "n=juliet,r=abc";
    let server_first = scram_until_server_first(
        &mut server,
        &format!("n,,{bare}"),
        Some(pencil(ScramHash::Sha256)),
    );
    let without_proof = format!("c={},r={}", BASE64.encode("y,,"), attr(&server_first, "r"));
    let fin = client_final(
        ScramHash::Sha256,
        "pencil",
        bare,
        &server_first,
        &without_proof,
    );
    assert_eq!(
        server.step(fin.as_bytes()),
        SaslAction::Failure(SaslFailure::NotAuthorized)
    );
}

#[test]
fn plus_requires_an_offered_binding() {
    for first in [
        "n,,n=juliet,r=abc",
        "y,,n=juliet,r=abc",
        "p=tls-unique,,n=juliet,r=abc",
        "p=tls-server-end-point,,n=juliet,r=abc",
    ] {
        let mut server = SaslServer::new(Mechanism::ScramSha256Plus, exporter());
        assert_eq!(
            server.step(first.as_bytes()),
            SaslAction::Failure(SaslFailure::MalformedRequest),
            "{first}"
        );
    }
    // A -PLUS mechanism on a session with no bindings at all (the caller should not
    // have offered it).
    let mut server = SaslServer::new(Mechanism::ScramSha1Plus, ChannelBindings::none());
    assert_eq!(
        server.step(b"p=tls-exporter,,n=juliet,r=abc"),
        SaslAction::Failure(SaslFailure::MalformedRequest)
    );
}

#[test]
fn non_plus_with_binding_flag_p_fails() {
    let mut server = SaslServer::new(Mechanism::ScramSha256, exporter());
    assert_eq!(
        server.step(b"p=tls-exporter,,n=juliet,r=abc"),
        SaslAction::Failure(SaslFailure::MalformedRequest)
    );
}

#[test]
fn downgrade_flag_y_fails_when_plus_is_offered() {
    // RFC 5802 §6: "y" says the client saw no -PLUS offer; we made one.
    let mut server = SaslServer::new(Mechanism::ScramSha256, exporter());
    assert_eq!(
        server.step(b"y,,n=juliet,r=abc"),
        SaslAction::Failure(SaslFailure::NotAuthorized)
    );
    // Without bindings no -PLUS was offered, so "y" is honest and fine.
    let action = scram_conversation(
        Mechanism::ScramSha256,
        ChannelBindings::none(),
        "y,,",
        b"",
        "pencil",
    );
    assert_success(&action);
    // An owner who chose compatibility accepts "y" (COMPAT tls-unique-only clients).
    let mut server = SaslServer::new(Mechanism::ScramSha256, exporter()).accepting_y_flag();
    assert!(matches!(
        server.step(b"y,,n=juliet,r=abc"),
        SaslAction::LookupScram { .. }
    ));
    // And "n" is fine even when -PLUS is offered: the client cannot bind at all.
    let action = scram_conversation(Mechanism::ScramSha256, exporter(), "n,,", b"", "pencil");
    assert_success(&action);
}

#[test]
fn unknown_user_fails_only_at_the_proof() {
    let first = b"n,,n=ghost,r=abc";
    let mut server = SaslServer::new(Mechanism::ScramSha256, ChannelBindings::none());
    assert!(matches!(server.step(first), SaslAction::LookupScram { .. }));
    let server_first = challenge_text(server.provide_scram(None));
    // Shaped like a real challenge: our nonce, a salt of the usual length, the usual count.
    assert_eq!(attr(&server_first, "r").len(), "abc".len() + 32);
    assert_eq!(b64(attr(&server_first, "s")).len(), SALT_LEN);
    assert_eq!(attr(&server_first, "i"), DEFAULT_ITERATIONS.to_string());
    // Stable: asking again gives the same salt, as it would for a real user.
    let mut again = SaslServer::new(Mechanism::ScramSha256, ChannelBindings::none());
    again.step(first);
    let server_first_again = challenge_text(again.provide_scram(None));
    assert_eq!(attr(&server_first, "s"), attr(&server_first_again, "s"));
    // Any well-formed proof fails, with the same condition as a wrong password.
    let without_proof = format!("c=biws,r={}", attr(&server_first, "r"));
    let fin = client_final(
        ScramHash::Sha256,
        "pencil",
        "n=ghost,r=abc",
        &server_first,
        &without_proof,
    );
    assert_eq!(
        server.step(fin.as_bytes()),
        SaslAction::Failure(SaslFailure::NotAuthorized)
    );
}

#[test]
fn authzid_is_decoded_and_returned() {
    let mut server = SaslServer::new(Mechanism::ScramSha1, ChannelBindings::none());
    let gs2 = "n,a=juliet@example.org,";
    let bare = "n=ju=2Cli=3Det,r=abc";
    assert_eq!(
        server.step(format!("{gs2}{bare}").as_bytes()),
        SaslAction::LookupScram {
            username: "ju,li=et".into(),
            hash: ScramHash::Sha1
        }
    );
    let server_first = challenge_text(server.provide_scram(Some(pencil(ScramHash::Sha1))));
    let without_proof = format!("c={},r={}", BASE64.encode(gs2), attr(&server_first, "r"));
    let fin = client_final(
        ScramHash::Sha1,
        "pencil",
        bare,
        &server_first,
        &without_proof,
    );
    match server.step(fin.as_bytes()) {
        SaslAction::Success {
            username, authzid, ..
        } => {
            assert_eq!(username, "ju,li=et");
            assert_eq!(authzid.as_deref(), Some("juliet@example.org"));
        }
        other => panic!("expected success, got {other:?}"),
    }
}

#[test]
fn mandatory_extension_is_refused() {
    let mut server = SaslServer::new(Mechanism::ScramSha1, ChannelBindings::none());
    assert_eq!(
        server.step(b"n,,m=future,n=juliet,r=abc"),
        SaslAction::Failure(SaslFailure::MalformedRequest)
    );
}

#[test]
fn no_initial_response_gets_one_empty_challenge() {
    let mut server = SaslServer::new(Mechanism::ScramSha1, ChannelBindings::none());
    assert_eq!(server.step(b""), SaslAction::Challenge(Vec::new()));
    assert!(matches!(
        server.step(b"n,,n=juliet,r=abc"),
        SaslAction::LookupScram { .. }
    ));

    let mut server = SaslServer::new(Mechanism::Plain, ChannelBindings::none());
    assert_eq!(server.step(b""), SaslAction::Challenge(Vec::new()));
    assert_eq!(
        server.step(b""),
        SaslAction::Failure(SaslFailure::MalformedRequest)
    );
    assert!(server.is_done());
}

#[test]
fn empty_or_early_responses_fail() {
    // An empty client-final.
    let mut server = SaslServer::new(Mechanism::ScramSha1, ChannelBindings::none());
    scram_until_server_first(
        &mut server,
        "n,,n=juliet,r=abc",
        Some(pencil(ScramHash::Sha1)),
    );
    assert_eq!(
        server.step(b""),
        SaslAction::Failure(SaslFailure::MalformedRequest)
    );
    // A response while the caller is still looking the user up.
    let mut server = SaslServer::new(Mechanism::ScramSha1, ChannelBindings::none());
    server.step(b"n,,n=juliet,r=abc");
    assert_eq!(
        server.step(b"c=biws,r=abc,p=AAAA"),
        SaslAction::Failure(SaslFailure::MalformedRequest)
    );
    // A PLAIN response while the caller verifies.
    let mut server = SaslServer::new(Mechanism::Plain, ChannelBindings::none());
    server.step(b"\0juliet\0pencil");
    assert_eq!(
        server.step(b"\0juliet\0pencil"),
        SaslAction::Failure(SaslFailure::MalformedRequest)
    );
}

#[test]
fn oversized_and_badly_encoded_input_fails() {
    let mut server = SaslServer::new(Mechanism::ScramSha256, ChannelBindings::none());
    let huge = format!("n,,n=juliet,r={}", "a".repeat(MAX_CLIENT_MESSAGE));
    assert_eq!(
        server.step(huge.as_bytes()),
        SaslAction::Failure(SaslFailure::MalformedRequest)
    );
    let mut server = SaslServer::new(Mechanism::ScramSha256, ChannelBindings::none());
    assert_eq!(
        server.step(b"n,,n=jul\xc3iet,r=abc"),
        SaslAction::Failure(SaslFailure::IncorrectEncoding)
    );
    let mut server = SaslServer::new(Mechanism::ScramSha256, ChannelBindings::none());
    scram_until_server_first(
        &mut server,
        "n,,n=juliet,r=abc",
        Some(pencil(ScramHash::Sha256)),
    );
    assert_eq!(
        server.step(b"c=biws,r=\xff,p=AAAA"),
        SaslAction::Failure(SaslFailure::IncorrectEncoding)
    );
}

#[test]
fn proof_of_the_wrong_length_is_malformed() {
    let mut server = SaslServer::new(Mechanism::ScramSha256, ChannelBindings::none());
    let server_first = scram_until_server_first(
        &mut server,
        "n,,n=juliet,r=abc",
        Some(pencil(ScramHash::Sha256)),
    );
    // A SHA-1-sized proof on SCRAM-SHA-256.
    let fin = format!(
        "c=biws,r={},p={}",
        attr(&server_first, "r"),
        BASE64.encode([0; 20])
    );
    assert_eq!(
        server.step(fin.as_bytes()),
        SaslAction::Failure(SaslFailure::MalformedRequest)
    );
}

#[test]
fn damaged_stored_credentials_are_a_temporary_failure() {
    let mut server = SaslServer::new(Mechanism::ScramSha256, ChannelBindings::none());
    server.step(b"n,,n=juliet,r=abc");
    // SHA-1 keys offered for a SHA-256 exchange.
    assert_eq!(
        server.provide_scram(Some(pencil(ScramHash::Sha1))),
        SaslAction::Failure(SaslFailure::TemporaryAuthFailure)
    );
}

#[test]
fn answers_out_of_turn_are_caller_bugs() {
    let mut server = SaslServer::new(Mechanism::ScramSha256, ChannelBindings::none());
    assert_eq!(
        server.provide_scram(None),
        SaslAction::Failure(SaslFailure::TemporaryAuthFailure)
    );
    let mut server = SaslServer::new(Mechanism::Plain, ChannelBindings::none());
    assert_eq!(
        server.plain_result(true),
        SaslAction::Failure(SaslFailure::TemporaryAuthFailure)
    );
    let mut server = SaslServer::new(Mechanism::ScramSha256, ChannelBindings::none());
    server.step(b"n,,n=juliet,r=abc");
    server.provide_scram(None);
    assert_eq!(
        server.provide_scram(None),
        SaslAction::Failure(SaslFailure::TemporaryAuthFailure)
    );
}

#[test]
fn plain_conversations() {
    let mut server = SaslServer::new(Mechanism::Plain, ChannelBindings::none());
    assert_eq!(
        server.step(b"\0juliet\0pencil"),
        SaslAction::VerifyPlain {
            username: "juliet".into(),
            authzid: None,
            password: "pencil".into()
        }
    );
    assert_eq!(
        server.plain_result(true),
        SaslAction::Success {
            username: "juliet".into(),
            authzid: None,
            additional_data: None
        }
    );
    assert!(server.is_done());

    let mut server = SaslServer::new(Mechanism::Plain, ChannelBindings::none());
    assert!(matches!(
        server.step(b"juliet@example.org\0juliet\0pencil"),
        SaslAction::VerifyPlain { authzid: Some(ref a), .. } if a == "juliet@example.org"
    ));
    assert_eq!(
        server.plain_result(false),
        SaslAction::Failure(SaslFailure::NotAuthorized)
    );

    for (bad, failure) in [
        (&b"juliet\0pencil"[..], SaslFailure::MalformedRequest),
        (b"\0\0pencil", SaslFailure::MalformedRequest),
        (b"\0juliet\0", SaslFailure::MalformedRequest),
        (b"\0juliet\0pen\xffcil", SaslFailure::IncorrectEncoding),
    ] {
        let mut server = SaslServer::new(Mechanism::Plain, ChannelBindings::none());
        assert_eq!(server.step(bad), SaslAction::Failure(failure), "{bad:?}");
        assert!(server.is_done());
    }
}

#[test]
fn mechanism_names_round_trip() {
    for mechanism in Mechanism::ALL {
        assert_eq!(Mechanism::from_name(mechanism.name()), Some(mechanism));
    }
    assert_eq!(Mechanism::from_name("scram-sha-1"), None);
    assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
    assert!(Mechanism::ScramSha1Plus.needs_channel_binding());
    assert!(!Mechanism::Plain.needs_channel_binding());
    assert!(!Mechanism::ScramSha256Plus.is_offered_with(&ChannelBindings::none()));
    assert!(Mechanism::ScramSha256Plus.is_offered_with(&exporter()));
    assert!(Mechanism::ScramSha256.is_offered_with(&ChannelBindings::none()));
}

#[test]
fn channel_binding_types_for_xep_0440() {
    assert_eq!(ChannelBindings::none().types().count(), 0);
    let both = ChannelBindings {
        tls_exporter: Some(vec![1]),
        tls_server_end_point: Some(vec![2]),
    };
    assert_eq!(
        both.types().collect::<Vec<_>>(),
        ["tls-exporter", "tls-server-end-point"]
    );
    assert_eq!(
        format!("{both:?}"),
        r#"["tls-exporter", "tls-server-end-point"]"#
    );
}

#[test]
fn failure_conditions_are_rfc_6120_names() {
    assert_eq!(SaslFailure::NotAuthorized.condition(), "not-authorized");
    assert_eq!(
        SaslFailure::TemporaryAuthFailure.condition(),
        "temporary-auth-failure"
    );
    assert_eq!(
        SaslFailure::MalformedRequest.to_string(),
        "malformed-request"
    );
    assert_eq!(SaslFailure::InvalidAuthzid.condition(), "invalid-authzid");
}

#[test]
fn debug_output_hides_secrets() {
    let action = SaslAction::VerifyPlain {
        username: "juliet".into(),
        authzid: None,
        password: "s3cret".into(),
    };
    assert!(!format!("{action:?}").contains("s3cret"));
    let creds = pencil(ScramHash::Sha1);
    let shown = format!("{creds:?}");
    assert!(!shown.contains("stored_key") && !shown.contains("server_key"));
}

#[test]
fn prepare_password_is_opaque_string() {
    assert_eq!(prepare_password("pencil").unwrap(), "pencil");
    // Non-ASCII space to ASCII space, then NFC (RFC 8265 §4.2.1).
    assert_eq!(
        prepare_password("a\u{2003}e\u{0301}").unwrap(),
        "a \u{00E9}"
    );
    assert_eq!(prepare_password(""), Err(SaslError::InvalidPassword));
    assert_eq!(
        prepare_password("a\u{0000}b"),
        Err(SaslError::InvalidPassword)
    );
}

#[test]
fn payloads_are_redacted_for_the_log() {
    use super::redact_payloads;
    let plain = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>\
                 AGFsaWNlAHNlY3JldA==</auth>";
    assert_eq!(
        redact_payloads(plain),
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>\
         [20 bytes redacted]</auth>"
    );
    let out = "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1meWtv</challenge>\
               <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>dj1ybUY=</success>\
               <response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\
               <message><body>&lt;auth&gt;x&lt;/auth&gt;</body><authority>k</authority></message>";
    let r = redact_payloads(out);
    assert!(!r.contains("cj1meWtv") && !r.contains("dj1ybUY="), "{r}");
    assert!(
        r.contains("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
        "{r}"
    );
    assert!(r.contains("<body>&lt;auth&gt;x&lt;/auth&gt;</body><authority>k</authority>"));
    // Cut off in the middle: the rest is hidden.
    let cut = redact_payloads("<auth mechanism='PLAIN'>AGFsaWNl");
    assert!(!cut.contains("AGFsaWNl"), "{cut}");
    // Dialback keys, written (db: prefix) and as parsed elements print.
    let db = "<db:result from='a.example' to='b.example'>0123abcd</db:result>\
              <verify xmlns=\"jabber:server:dialback\" id=\"x\">4567ef</verify>";
    let r = redact_payloads(db);
    assert!(!r.contains("0123abcd") && !r.contains("4567ef"), "{r}");
    assert!(
        r.contains("<db:result from='a.example' to='b.example'>[8 bytes redacted]</db:result>"),
        "{r}"
    );
    // Nothing to hide: not copied.
    assert!(matches!(
        redact_payloads("<presence/>"),
        std::borrow::Cow::Borrowed(_)
    ));
}
