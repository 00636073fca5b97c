//! RFC 4616: the PLAIN mechanism, server side. The client sends
//! `[authzid] NUL authcid NUL passwd` in one message; verifying the password against
//! the stored hash is the caller's job.

use super::{SaslFailure, prepare_password};

/// The longest authzid, authcid or password we accept, in bytes. RFC 4616 §2 requires
/// servers to accept 255; a JID is at most 3071 bytes (RFC 7622 §3.1) but an XMPP
/// authcid is a localpart (≤ 1023) and an authzid a bare JID we only compare.
const MAX_FIELD: usize = 1023;

/// A well-formed PLAIN message.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PlainRequest {
    /// The identity to act as; `None` when the client left it empty (act as itself).
    pub(super) authzid: Option<String>,
    /// The identity whose password this is.
    pub(super) authcid: String,
    /// The password, prepared with PRECIS OpaqueString (RFC 4616 §2 asks the server to
    /// prepare it; RFC 8265 §4.2 is the current profile).
    pub(super) password: String,
}

/// Parses a PLAIN message (RFC 4616 §2).
pub(super) fn parse(message: &[u8]) -> Result<PlainRequest, SaslFailure> {
    // RFC 4616 §2: all three are UTF-8; anything else is an encoding error.
    let text = std::str::from_utf8(message).map_err(|_| SaslFailure::IncorrectEncoding)?;
    let mut fields = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(SaslFailure::MalformedRequest);
    };
    let is_well_formed = !authcid.is_empty()
        && !password.is_empty()
        && [authzid, authcid, password]
            .iter()
            .all(|f| f.len() <= MAX_FIELD);
    if !is_well_formed {
        return Err(SaslFailure::MalformedRequest);
    }
    // A password the profile rejects was never stored, so it cannot be right.
    let password = prepare_password(password).map_err(|_| SaslFailure::NotAuthorized)?;
    Ok(PlainRequest {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        authcid: authcid.to_owned(),
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_without_and_with_authzid() {
        assert_eq!(
            parse(b"\0juliet\0pencil").unwrap(),
            PlainRequest {
                authzid: None,
                authcid: "juliet".into(),
                password: "pencil".into()
            }
        );
        let request = parse(b"juliet@example.org\0juliet\0pencil").unwrap();
        assert_eq!(request.authzid.as_deref(), Some("juliet@example.org"));
    }

    #[test]
    fn prepares_the_password() {
        // RFC 8265 §4.2.1: non-ASCII spaces map to U+0020, then NFC.
        let request = parse("\0juliet\0a\u{00A0}b\u{0065}\u{0301}".as_bytes()).unwrap();
        assert_eq!(request.password, "a b\u{00E9}");
        // A control character is disallowed by the FreeformClass.
        assert_eq!(
            parse(b"\0juliet\0pen\x07cil"),
            Err(SaslFailure::NotAuthorized)
        );
    }

    #[test]
    fn rejects_malformed_messages() {
        let long = "x".repeat(MAX_FIELD + 1);
        for bad in [
            "".to_owned(),
            "juliet".to_owned(),
            "juliet\0pencil".to_owned(),
            "\0\0pencil".to_owned(),
            "\0juliet\0".to_owned(),
            "a\0juliet\0pencil\0".to_owned(),
            format!("\0{long}\0pencil"),
            format!("\0juliet\0{long}"),
            format!("{long}\0juliet\0pencil"),
        ] {
            assert_eq!(
                parse(bad.as_bytes()),
                Err(SaslFailure::MalformedRequest),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse(b"\0jul\xffiet\0pencil"),
            Err(SaslFailure::IncorrectEncoding)
        );
    }
}
