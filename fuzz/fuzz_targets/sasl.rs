//! SASL (RFC 4422) server exchanges fed arbitrary client messages: PLAIN
//! (RFC 4616) and SCRAM (RFC 5802, RFC 7677) message parsing, GS2 headers
//! and channel binding. With a fixed server nonce and a known password the
//! fuzzer can reach the client-final message; it must never panic and
//! never succeed without the right proof.
#![no_main]

use arbitrary::Arbitrary;
use hearth::stream::sasl::{
    ChannelBindings, Mechanism, SaslAction, SaslServer, ScramCredentials, ScramHash,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Exchange {
    mechanism: u8,
    exporter: bool,
    end_point: bool,
    /// Whether the account exists (SCRAM) or the password is right (PLAIN).
    known: bool,
    messages: Vec<Vec<u8>>,
}

fuzz_target!(|x: Exchange| {
    let mechanism = Mechanism::ALL[usize::from(x.mechanism) % Mechanism::ALL.len()];
    let cb = ChannelBindings {
        tls_exporter: x.exporter.then(|| vec![1; 32]),
        tls_server_end_point: x.end_point.then(|| vec![2; 32]),
    };
    let mut sasl = SaslServer::with_server_nonce(mechanism, cb, "fuzznonce");
    for m in x.messages.iter().take(8) {
        let mut action = sasl.step(m);
        loop {
            action = match action {
                SaslAction::LookupScram { hash, .. } => {
                    let creds = x
                        .known
                        .then(|| ScramCredentials::derive(hash, "pencil", b"salt", 1).unwrap());
                    sasl.provide_scram(creds)
                }
                SaslAction::VerifyPlain { password, .. } => {
                    sasl.plain_result(x.known && password == "pencil")
                }
                SaslAction::Success { .. } => {
                    // Only a client that knows the password gets here.
                    assert!(x.known, "success for an unknown account");
                    return;
                }
                SaslAction::Failure(_) => return,
                SaslAction::Challenge(_) => break,
            };
        }
    }
    let _ = ScramHash::Sha1;
});
