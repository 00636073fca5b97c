//! RFC 7622: XMPP addresses (JIDs), normalized on construction.
//!
//! A JID is `[localpart@]domainpart[/resourcepart]` (RFC 7622 §3.1). Every
//! constructor here prepares and enforces each part with the rules RFC 7622
//! names, so two values compare equal exactly when they are the same address:
//!
//! - localpart: PRECIS `UsernameCaseMapped` (RFC 8265 §3.3) plus the eight
//!   extra characters RFC 7622 §3.3.1 forbids (`" & ' / : < > @`);
//! - domainpart: IP literal, or a domain name run through UTS #46 / IDNA2008
//!   and kept as U-labels, lowercased, without a trailing dot (§3.2);
//! - resourcepart: PRECIS `OpaqueString` (RFC 8265 §4.2, RFC 7622 §3.4).
//!
//! Each part is 1..=1023 octets after normalization (§3.2, §3.3, §3.4).
//!
//! Three types share one compact representation: [`Jid`] (any address),
//! [`BareJid`] (never a resourcepart) and [`FullJid`] (always one). The text
//! lives once in an `Arc<str>` with two `u16` offsets, so cloning a JID (the
//! router does it for every stanza) is a reference count, and
//! [`FullJid::bare`] shares the same text instead of copying it.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::Ipv6Addr;
use std::str::FromStr;
use std::sync::Arc;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use precis_profiles::precis_core::profile::{PrecisFastInvocation, stabilize};
use precis_profiles::precis_core::{
    Error as PrecisError, IdentifierClass, StringClass, UnexpectedError,
};
use precis_profiles::{OpaqueString, UsernameCaseMapped};

/// Longest part in octets, after normalization (RFC 7622 §3.2, §3.3, §3.4).
pub const MAX_PART_BYTES: usize = 1023;

/// Longest part we are willing to *start* normalizing. Normalization can only
/// shrink a string below a third of its size by deleting ignorable code points,
/// so anything longer is hostile or broken; refusing it early bounds the work a
/// peer can make us do per address.
const MAX_INPUT_BYTES: usize = 4 * MAX_PART_BYTES;

/// Longest DNS label in octets, in A-label form (RFC 5890 §2.3.2.1, RFC 1035 §2.3.4).
const MAX_LABEL_BYTES: usize = 63;

/// Characters the localpart must not contain even though PRECIS
/// `IdentifierClass` allows them (RFC 7622 §3.3.1).
const LOCAL_FORBIDDEN: &[char] = &['"', '&', '\'', '/', ':', '<', '>', '@'];

/// Which part of an address an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JidPart {
    Local,
    Domain,
    Resource,
}

impl fmt::Display for JidPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JidPart::Local => "localpart",
            JidPart::Domain => "domainpart",
            JidPart::Resource => "resourcepart",
        })
    }
}

/// Why a string is not a valid address (or address part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JidError {
    /// The part is present but empty, e.g. `@example.com` or `example.com/`
    /// (RFC 7622 §3.2, §3.3, §3.4: "MUST NOT be zero octets in length").
    Empty(JidPart),
    /// The part is longer than 1023 octets after normalization.
    TooLong(JidPart),
    /// The part contains a code point its PRECIS profile disallows, or one of
    /// the characters RFC 7622 §3.3.1 excludes from localparts.
    ForbiddenChar(JidPart, char),
    /// The part breaks a PRECIS rule about the string as a whole (the bidi
    /// rule, or enforcement not reaching a stable result; RFC 8264 §7).
    Invalid(JidPart),
    /// The domainpart is neither an IP literal nor a valid internationalized
    /// domain name (UTS #46 / IDNA2008 processing failed, or a label is empty or
    /// longer than 63 octets in A-label form).
    BadDomain,
    /// The domainpart is bracketed but not an IPv6 address (RFC 7622 §3.2,
    /// RFC 3986 §3.2.2).
    BadIpLiteral,
    /// A full JID was required but the address has no resourcepart.
    MissingResource,
    /// A bare JID was required but the address has a resourcepart.
    UnexpectedResource,
}

impl fmt::Display for JidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JidError::Empty(part) => write!(f, "{part} is empty"),
            JidError::TooLong(part) => {
                write!(f, "{part} is longer than {MAX_PART_BYTES} bytes")
            }
            // `{:?}` escapes control characters, so a NUL never reaches a log raw.
            JidError::ForbiddenChar(part, c) => {
                write!(
                    f,
                    "{part} contains forbidden character {c:?} (U+{:04X})",
                    *c as u32
                )
            }
            JidError::Invalid(part) => {
                write!(f, "{part} violates the PRECIS rules (e.g. the bidi rule)")
            }
            JidError::BadDomain => f.write_str("domainpart is not a valid domain name"),
            JidError::BadIpLiteral => f.write_str("domainpart is not a valid IPv6 literal"),
            JidError::MissingResource => f.write_str("full JID required but resourcepart missing"),
            JidError::UnexpectedResource => {
                f.write_str("bare JID required but a resourcepart is present")
            }
        }
    }
}

impl std::error::Error for JidError {}

// ---------------------------------------------------------------------------
// Normalizing single parts
// ---------------------------------------------------------------------------

/// Prepares and enforces a localpart (RFC 7622 §3.3): PRECIS
/// `UsernameCaseMapped`, then the §3.3.1 exclusions. Also the right
/// normalization for account names and the SASL authcid (RFC 8265 §3.3).
pub fn normalize_localpart(s: &str) -> Result<String, JidError> {
    localpart(s).map(Cow::into_owned)
}

/// Prepares and enforces a resourcepart (RFC 7622 §3.4): PRECIS `OpaqueString`.
/// Spaces, `@` and `/` are allowed; controls are not.
pub fn normalize_resource(s: &str) -> Result<String, JidError> {
    resourcepart(s).map(Cow::into_owned)
}

/// Normalizes a domainpart (RFC 7622 §3.2): an IPv6 literal `[…]` in its
/// canonical text form (RFC 5952), otherwise a domain name (IPv4 addresses
/// included, being valid LDH strings) mapped by UTS #46 without transitional
/// processing, checked against IDNA2008 and STD3 (letters, digits, hyphens),
/// with A-labels (`xn--…`) turned into U-labels and one trailing dot removed.
pub fn normalize_domain(s: &str) -> Result<String, JidError> {
    domainpart(s).map(Cow::into_owned)
}

fn check_input_len(s: &str, part: JidPart) -> Result<(), JidError> {
    if s.is_empty() {
        Err(JidError::Empty(part))
    } else if s.len() > MAX_INPUT_BYTES {
        Err(JidError::TooLong(part))
    } else {
        Ok(())
    }
}

fn check_output_len(s: &str, part: JidPart) -> Result<(), JidError> {
    if s.is_empty() {
        Err(JidError::Empty(part))
    } else if s.len() > MAX_PART_BYTES {
        Err(JidError::TooLong(part))
    } else {
        Ok(())
    }
}

fn precis_error(e: PrecisError, part: JidPart) -> JidError {
    let bad = |cp: u32| {
        char::from_u32(cp).map_or(JidError::Invalid(part), |c| {
            JidError::ForbiddenChar(part, c)
        })
    };
    match e {
        PrecisError::BadCodepoint(info)
        | PrecisError::Unexpected(UnexpectedError::ContextRuleNotApplicable(info))
        | PrecisError::Unexpected(UnexpectedError::MissingContextRule(info)) => bad(info.cp),
        _ => JidError::Invalid(part),
    }
}

fn localpart(s: &str) -> Result<Cow<'_, str>, JidError> {
    let part = JidPart::Local;
    check_input_len(s, part)?;
    // RFC 8264 §7: apply the rules until the result is stable, so that
    // normalizing our own output again gives the same string.
    let out = stabilize(s, |x| {
        <UsernameCaseMapped as PrecisFastInvocation>::enforce(x)
    })
    .map_err(|e| precis_error(e, part))?;
    // Checked after enforcement: width mapping turns e.g. U+FF20 into '@'.
    if let Some(c) = out.chars().find(|c| LOCAL_FORBIDDEN.contains(c)) {
        return Err(JidError::ForbiddenChar(part, c));
    }
    check_output_len(&out, part)?;
    Ok(out)
}

fn resourcepart(s: &str) -> Result<Cow<'_, str>, JidError> {
    let part = JidPart::Resource;
    check_input_len(s, part)?;
    let out = stabilize(s, |x| <OpaqueString as PrecisFastInvocation>::enforce(x))
        .map_err(|e| precis_error(e, part))?;
    check_output_len(&out, part)?;
    Ok(out)
}

fn domainpart(s: &str) -> Result<Cow<'_, str>, JidError> {
    let part = JidPart::Domain;
    check_input_len(s, part)?;

    // IP-literal (RFC 7622 §3.2 → RFC 3986 §3.2.2). UTS #46 would reject the
    // brackets, so it is handled first. Zone ids and IPvFuture are not
    // accepted. Rewriting to the canonical form makes `[::0:1]` equal `[::1]`.
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(JidError::BadIpLiteral)?;
        let addr: Ipv6Addr = inner.parse().map_err(|_| JidError::BadIpLiteral)?;
        let canonical = format!("[{addr}]");
        return Ok(if canonical == s {
            Cow::Borrowed(s)
        } else {
            Cow::Owned(canonical)
        });
    }

    // UTS #46 ToUnicode: lowercases, maps full-width forms and the ideographic
    // full stops (RFC 7622 §3.2.2), NFC, decodes and validates A-labels, and
    // checks the joiner (CONTEXTJ) and bidi rules. STD3 keeps labels to
    // letters, digits and hyphens (plus U-label code points), which also
    // keeps '@', '/', spaces and controls out. Hyphens in the third and fourth
    // position are allowed because real names (`r3---sn-….example`) use them.
    let uts46 = Uts46::new();
    let (mapped, result) =
        uts46.to_unicode(s.as_bytes(), AsciiDenyList::STD3, Hyphens::CheckFirstLast);
    if result.is_err() {
        return Err(JidError::BadDomain);
    }

    // RFC 7622 §3.2: a final label separator "MUST be stripped".
    let mapped = match mapped {
        Cow::Borrowed(b) => Cow::Borrowed(b.strip_suffix('.').unwrap_or(b)),
        Cow::Owned(mut o) => {
            if o.ends_with('.') {
                o.pop();
            }
            Cow::Owned(o)
        }
    };
    check_output_len(&mapped, part)?;

    // Empty labels (`a..b`, `.a`) and labels too long for the DNS. The length
    // rule applies to the A-label form, so non-ASCII names are converted once
    // more just to measure them.
    let too_long = |label: &str| label.len() > MAX_LABEL_BYTES;
    if mapped.split('.').any(str::is_empty) {
        return Err(JidError::BadDomain);
    }
    if mapped.is_ascii() {
        if mapped.split('.').any(too_long) {
            return Err(JidError::BadDomain);
        }
    } else {
        // UTS #46 still accepts code points IDNA2008 disallows (symbols and
        // emoji, flagged NV8 in its table) for the sake of browsers; RFC 7622
        // §3.2 asks for IDNA2008. Its derived properties (RFC 5892: letters and
        // digits, no compatibility forms, the same exceptions and CONTEXTJ/O
        // rules) are what PRECIS IdentifierClass (RFC 8264 §9) is built from,
        // so checking U-labels against it gives IDNA2008's repertoire without
        // another table.
        for label in mapped.split('.').filter(|l| !l.is_ascii()) {
            IdentifierClass::default()
                .allows(label)
                .map_err(|e| precis_error(e, part))?;
        }
        let ascii = uts46
            .to_ascii(
                mapped.as_bytes(),
                AsciiDenyList::STD3,
                Hyphens::CheckFirstLast,
                DnsLength::Ignore,
            )
            .map_err(|_| JidError::BadDomain)?;
        if ascii.split('.').any(too_long) {
            return Err(JidError::BadDomain);
        }
    }
    Ok(mapped)
}

// ---------------------------------------------------------------------------
// Shared representation
// ---------------------------------------------------------------------------

/// The normalized text and where its parts are.
///
/// `text[..len]` is the address. `at` is the byte index of the '@' ending the
/// localpart, or 0 when there is none (a localpart is never empty, so index 0
/// cannot be an '@'). `slash` is the index of the '/' starting the
/// resourcepart, or `len` when there is none. `text` may extend past `len`:
/// a bare JID taken from a full one shares its text and ignores the tail.
/// Each part is ≤ 1023 bytes, so every offset fits a `u16`.
#[derive(Clone)]
struct Raw {
    text: Arc<str>,
    at: u16,
    slash: u16,
    len: u16,
}

impl Raw {
    /// Joins already normalized parts.
    fn join(local: Option<&str>, domain: &str, resource: Option<&str>) -> Raw {
        let cap =
            local.map_or(0, |l| l.len() + 1) + domain.len() + resource.map_or(0, |r| r.len() + 1);
        let mut s = String::with_capacity(cap);
        let mut at = 0;
        if let Some(l) = local {
            s.push_str(l);
            at = s.len();
            s.push('@');
        }
        s.push_str(domain);
        let slash = s.len();
        if let Some(r) = resource {
            s.push('/');
            s.push_str(r);
        }
        let len = s.len();
        // Each part ≤ MAX_PART_BYTES, so the whole is ≤ 3 × 1023 + 2 < u16::MAX.
        let off = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        Raw {
            text: Arc::from(s),
            at: off(at),
            slash: off(slash),
            len: off(len),
        }
    }

    /// RFC 7622 §3.1: the resourcepart starts at the first '/', the localpart
    /// ends at the first '@' before it. Separators are found before any
    /// normalization, since mapping could produce new '@' or '/' characters.
    fn parse(s: &str) -> Result<Raw, JidError> {
        let (rest, resource) = match s.split_once('/') {
            Some((rest, res)) => (rest, Some(res)),
            None => (s, None),
        };
        let (local, domain) = match rest.split_once('@') {
            Some((local, domain)) => (Some(local), domain),
            None => (None, rest),
        };
        Raw::new(local, domain, resource)
    }

    fn new(local: Option<&str>, domain: &str, resource: Option<&str>) -> Result<Raw, JidError> {
        let local = local.map(localpart).transpose()?;
        let domain = domainpart(domain)?;
        let resource = resource.map(resourcepart).transpose()?;
        Ok(Raw::join(local.as_deref(), &domain, resource.as_deref()))
    }

    fn as_str(&self) -> &str {
        &self.text[..usize::from(self.len)]
    }

    fn local(&self) -> Option<&str> {
        (self.at != 0).then(|| &self.text[..usize::from(self.at)])
    }

    fn domain(&self) -> &str {
        let start = if self.at == 0 {
            0
        } else {
            usize::from(self.at) + 1
        };
        &self.text[start..usize::from(self.slash)]
    }

    fn resource(&self) -> Option<&str> {
        (self.slash < self.len)
            .then(|| &self.text[usize::from(self.slash) + 1..usize::from(self.len)])
    }

    fn has_resource(&self) -> bool {
        self.slash < self.len
    }

    /// The same text without the resourcepart; no copy.
    fn bare(&self) -> Raw {
        Raw {
            text: Arc::clone(&self.text),
            at: self.at,
            slash: self.slash,
            len: self.slash,
        }
    }

    fn with_resource(&self, res: &str) -> Result<Raw, JidError> {
        let res = resourcepart(res)?;
        Ok(Raw::join(self.local(), self.domain(), Some(&res)))
    }
}

// Equality, hashing and order are on the normalized text only, never on the
// offsets or on shared text past `len`.
macro_rules! jid_common {
    ($t:ident) => {
        impl $t {
            /// The normalized address as text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }

            /// The localpart, if any.
            pub fn local(&self) -> Option<&str> {
                self.0.local()
            }

            /// The domainpart.
            pub fn domain(&self) -> &str {
                self.0.domain()
            }
        }

        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Eq for $t {}

        impl Hash for $t {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }

        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $t {
            fn cmp(&self, other: &Self) -> Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($t), self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = JidError;
            fn from_str(s: &str) -> Result<Self, JidError> {
                $t::parse(s)
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Jid
// ---------------------------------------------------------------------------

/// Any XMPP address: `[localpart@]domainpart[/resourcepart]` (RFC 7622 §3.1),
/// normalized, so equal values are the same address.
#[derive(Clone)]
pub struct Jid(Raw);

jid_common!(Jid);

impl Jid {
    /// Parses and normalizes an address (RFC 7622 §3.1–§3.4).
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        Raw::parse(s).map(Jid)
    }

    /// Builds an address from its parts, normalizing each.
    pub fn new(local: Option<&str>, domain: &str, resource: Option<&str>) -> Result<Jid, JidError> {
        Raw::new(local, domain, resource).map(Jid)
    }

    /// The resourcepart, if any.
    pub fn resource(&self) -> Option<&str> {
        self.0.resource()
    }

    /// The address without its resourcepart (shares the text, no copy).
    pub fn bare(&self) -> BareJid {
        BareJid(self.0.bare())
    }

    /// True when there is no resourcepart.
    pub fn is_bare(&self) -> bool {
        !self.0.has_resource()
    }

    /// True when there is a resourcepart.
    pub fn is_full(&self) -> bool {
        self.0.has_resource()
    }

    /// This address as a full JID, if it has a resourcepart.
    pub fn to_full(&self) -> Option<FullJid> {
        self.is_full().then(|| FullJid(self.0.clone()))
    }

    /// The same local and domain parts with `res` as resourcepart.
    pub fn with_resource(&self, res: &str) -> Result<FullJid, JidError> {
        self.0.with_resource(res).map(FullJid)
    }
}

// ---------------------------------------------------------------------------
// BareJid
// ---------------------------------------------------------------------------

/// An address without a resourcepart: `[localpart@]domainpart` (an account,
/// a server, a room).
#[derive(Clone)]
pub struct BareJid(Raw);

jid_common!(BareJid);

impl BareJid {
    /// Builds a bare address from its parts, normalizing each.
    pub fn new(local: Option<&str>, domain: &str) -> Result<BareJid, JidError> {
        Raw::new(local, domain, None).map(BareJid)
    }

    /// Parses an address that must not have a resourcepart.
    pub fn parse(s: &str) -> Result<BareJid, JidError> {
        let raw = Raw::parse(s)?;
        if raw.has_resource() {
            return Err(JidError::UnexpectedResource);
        }
        Ok(BareJid(raw))
    }

    /// The full JID of this address with resourcepart `res`.
    pub fn with_resource(&self, res: &str) -> Result<FullJid, JidError> {
        self.0.with_resource(res).map(FullJid)
    }
}

// ---------------------------------------------------------------------------
// FullJid
// ---------------------------------------------------------------------------

/// An address with a resourcepart: `[localpart@]domainpart/resourcepart` (a
/// connected client, an occupant of a room).
#[derive(Clone)]
pub struct FullJid(Raw);

jid_common!(FullJid);

impl FullJid {
    /// Builds a full address from its parts, normalizing each.
    pub fn new(local: Option<&str>, domain: &str, resource: &str) -> Result<FullJid, JidError> {
        Raw::new(local, domain, Some(resource)).map(FullJid)
    }

    /// Parses an address that must have a resourcepart.
    pub fn parse(s: &str) -> Result<FullJid, JidError> {
        let raw = Raw::parse(s)?;
        if !raw.has_resource() {
            return Err(JidError::MissingResource);
        }
        Ok(FullJid(raw))
    }

    /// The resourcepart.
    pub fn resource(&self) -> &str {
        // Invariant: a FullJid always has a resourcepart.
        self.0.resource().unwrap_or_default()
    }

    /// The address without its resourcepart (shares the text, no copy).
    pub fn bare(&self) -> BareJid {
        BareJid(self.0.bare())
    }
}

// ---------------------------------------------------------------------------
// Conversions and cross-type comparison
// ---------------------------------------------------------------------------

impl From<BareJid> for Jid {
    fn from(j: BareJid) -> Jid {
        Jid(j.0)
    }
}

impl From<FullJid> for Jid {
    fn from(j: FullJid) -> Jid {
        Jid(j.0)
    }
}

impl From<FullJid> for BareJid {
    fn from(j: FullJid) -> BareJid {
        j.bare()
    }
}

impl TryFrom<Jid> for FullJid {
    type Error = JidError;
    fn try_from(j: Jid) -> Result<FullJid, JidError> {
        if j.is_full() {
            Ok(FullJid(j.0))
        } else {
            Err(JidError::MissingResource)
        }
    }
}

impl TryFrom<Jid> for BareJid {
    type Error = JidError;
    fn try_from(j: Jid) -> Result<BareJid, JidError> {
        if j.is_bare() {
            Ok(BareJid(j.0))
        } else {
            Err(JidError::UnexpectedResource)
        }
    }
}

macro_rules! cross_eq {
    ($a:ident, $b:ident) => {
        impl PartialEq<$b> for $a {
            fn eq(&self, other: &$b) -> bool {
                self.as_str() == other.as_str()
            }
        }
        impl PartialEq<$a> for $b {
            fn eq(&self, other: &$a) -> bool {
                self.as_str() == other.as_str()
            }
        }
    };
}

cross_eq!(Jid, BareJid);
cross_eq!(Jid, FullJid);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ok(s: &str) -> String {
        match Jid::parse(s) {
            Ok(j) => j.to_string(),
            Err(e) => panic!("{s:?} should be valid: {e}"),
        }
    }

    fn err(s: &str) -> JidError {
        match Jid::parse(s) {
            Ok(j) => panic!("{s:?} should be invalid, got {j}"),
            Err(e) => e,
        }
    }

    // RFC 7622 §3.5.1: examples of valid JIDs.
    #[test]
    fn rfc7622_valid_examples() {
        assert_eq!(ok("juliet@example.com"), "juliet@example.com");
        assert_eq!(ok("juliet@example.com/foo"), "juliet@example.com/foo");
        assert_eq!(
            ok("juliet@example.com/foo bar"),
            "juliet@example.com/foo bar"
        );
        assert_eq!(
            ok("juliet@example.com/foo@bar"),
            "juliet@example.com/foo@bar"
        );
        assert_eq!(ok("foo\\20bar@example.com"), "foo\\20bar@example.com");
        assert_eq!(ok("fussball@example.com"), "fussball@example.com");
        assert_eq!(ok("fu\u{df}ball@example.com"), "fu\u{df}ball@example.com");
        assert_eq!(ok("\u{3c0}@example.com"), "\u{3c0}@example.com");
        // Σ is case-mapped to σ; final sigma ς stays distinct.
        assert_eq!(ok("\u{3a3}@example.com/foo"), "\u{3c3}@example.com/foo");
        assert_eq!(ok("\u{3c3}@example.com/foo"), "\u{3c3}@example.com/foo");
        assert_eq!(ok("\u{3c2}@example.com/foo"), "\u{3c2}@example.com/foo");
        assert_eq!(ok("king@example.com/\u{265a}"), "king@example.com/\u{265a}");
        assert_eq!(ok("example.com"), "example.com");
        assert_eq!(ok("example.com/foobar"), "example.com/foobar");
        assert_eq!(
            ok("a.example.com/b@example.net"),
            "a.example.com/b@example.net"
        );
    }

    // RFC 7622 §3.5.2: examples of invalid JIDs.
    #[test]
    fn rfc7622_invalid_examples() {
        assert_eq!(
            err("\"juliet\"@example.com"),
            JidError::ForbiddenChar(JidPart::Local, '"')
        );
        assert_eq!(
            err("foo bar@example.com"),
            JidError::ForbiddenChar(JidPart::Local, ' ')
        );
        assert_eq!(
            err("juliet@example.com/"),
            JidError::Empty(JidPart::Resource)
        );
        assert_eq!(err("@example.com/"), JidError::Empty(JidPart::Local));
        // U+2163 ROMAN NUMERAL FOUR has a compatibility decomposition, which
        // IdentifierClass disallows (UsernameCaseMapped does not map it to "IV").
        assert_eq!(
            err("henry\u{2163}@example.com"),
            JidError::ForbiddenChar(JidPart::Local, '\u{2163}')
        );
        assert_eq!(
            err("\u{265a}@example.com"),
            JidError::ForbiddenChar(JidPart::Local, '\u{265a}')
        );
        assert_eq!(err("juliet@"), JidError::Empty(JidPart::Domain));
        assert_eq!(err("/foobar"), JidError::Empty(JidPart::Domain));
    }

    #[test]
    fn all_localpart_exclusions() {
        for c in ['"', '&', '\'', '/', ':', '<', '>', '@'] {
            assert_eq!(
                normalize_localpart(&format!("a{c}b")),
                Err(JidError::ForbiddenChar(JidPart::Local, c)),
                "{c:?}"
            );
        }
        // Full-width '＠' width-maps to '@' and must still be caught.
        assert_eq!(
            normalize_localpart("a\u{ff20}b"),
            Err(JidError::ForbiddenChar(JidPart::Local, '@'))
        );
        // Full-width letters are mapped to their ASCII forms.
        assert_eq!(
            normalize_localpart("\u{ff2a}uliet").as_deref(),
            Ok("juliet")
        );
    }

    #[test]
    fn separators_split_before_normalization() {
        let j = Jid::parse("a@b.example/c@d/e").unwrap();
        assert_eq!(j.local(), Some("a"));
        assert_eq!(j.domain(), "b.example");
        assert_eq!(j.resource(), Some("c@d/e"));
        // The second '@' lands in the domainpart, which rejects it.
        assert_eq!(err("a@b@example.com"), JidError::BadDomain);
        assert_eq!(err("@"), JidError::Empty(JidPart::Local));
        assert_eq!(err(""), JidError::Empty(JidPart::Domain));
        assert_eq!(err("a@/r"), JidError::Empty(JidPart::Domain));
    }

    #[test]
    fn case_folding() {
        let j = Jid::parse("JULIET@Example.COM/Balcony").unwrap();
        assert_eq!(j.as_str(), "juliet@example.com/Balcony");
        assert_eq!(j.local(), Some("juliet"));
        assert_eq!(j.domain(), "example.com");
        assert_eq!(j.resource(), Some("Balcony"));
        assert_eq!(j, Jid::parse("juliet@example.com/Balcony").unwrap());
        // Resources are case-sensitive (OpaqueString has no case mapping).
        assert_ne!(j, Jid::parse("juliet@example.com/balcony").unwrap());
    }

    #[test]
    fn idn_domains() {
        assert_eq!(ok("juliet@\u{c9}XAMPLE.com"), "juliet@\u{e9}xample.com");
        // A-label input comes out as the U-label.
        assert_eq!(ok("juliet@xn--xample-9ua.com"), "juliet@\u{e9}xample.com");
        assert_eq!(
            Jid::parse("juliet@XN--XAMPLE-9UA.com").unwrap(),
            Jid::parse("juliet@\u{e9}xample.com").unwrap()
        );
        assert_eq!(
            normalize_domain("m\u{fc}nchen.example").as_deref(),
            Ok("m\u{fc}nchen.example")
        );
        // Ideographic full stop is a label separator (RFC 7622 §3.2.2).
        assert_eq!(
            normalize_domain("a\u{3002}example").as_deref(),
            Ok("a.example")
        );
        // Full-width letters are mapped.
        assert_eq!(
            normalize_domain("\u{ff45}xample.com").as_deref(),
            Ok("example.com")
        );
        // Invalid punycode, STD3 violations, disallowed code points.
        assert_eq!(normalize_domain("xn--a.example"), Err(JidError::BadDomain));
        assert_eq!(
            normalize_domain("under_score.example"),
            Err(JidError::BadDomain)
        );
        assert_eq!(normalize_domain("sp ace.example"), Err(JidError::BadDomain));
        assert_eq!(normalize_domain("-lead.example"), Err(JidError::BadDomain));
        assert_eq!(normalize_domain("a..example"), Err(JidError::BadDomain));
        assert_eq!(normalize_domain(".example"), Err(JidError::BadDomain));
        assert_eq!(
            normalize_domain("\u{265a}.example"),
            Err(JidError::ForbiddenChar(JidPart::Domain, '\u{265a}'))
        );
        // The same symbol hidden in an A-label is caught after decoding.
        let a_label = idna::domain_to_ascii("\u{265a}.example").unwrap();
        assert!(a_label.starts_with("xn--"));
        assert_eq!(
            normalize_domain(&a_label),
            Err(JidError::ForbiddenChar(JidPart::Domain, '\u{265a}'))
        );
        // CONTEXTO: a Katakana middle dot needs Japanese script around it.
        assert_eq!(
            normalize_domain("a\u{30fb}b.example"),
            Err(JidError::ForbiddenChar(JidPart::Domain, '\u{30fb}'))
        );
        assert!(normalize_domain("\u{30a2}\u{30fb}\u{30a2}.example").is_ok());
    }

    #[test]
    fn ip_literals() {
        assert_eq!(ok("juliet@[::1]/r"), "juliet@[::1]/r");
        assert_eq!(ok("[0:0:0:0:0:0:0:1]"), "[::1]");
        assert_eq!(ok("[2001:DB8::1]"), "[2001:db8::1]");
        assert_eq!(ok("juliet@192.0.2.1/r"), "juliet@192.0.2.1/r");
        assert_eq!(err("[::1"), JidError::BadIpLiteral);
        assert_eq!(err("[example.com]"), JidError::BadIpLiteral);
        assert_eq!(err("[fe80::1%eth0]"), JidError::BadIpLiteral);
        assert_eq!(err("::1"), JidError::BadDomain);
    }

    #[test]
    fn trailing_dot() {
        assert_eq!(ok("juliet@example.com./r"), "juliet@example.com/r");
        assert_eq!(
            Jid::parse("example.com.").unwrap(),
            Jid::parse("example.com").unwrap()
        );
        assert_eq!(
            normalize_domain("\u{e9}xample.com.").as_deref(),
            Ok("\u{e9}xample.com")
        );
        assert_eq!(err("."), JidError::Empty(JidPart::Domain));
        assert_eq!(err("example.com.."), JidError::BadDomain);
    }

    #[test]
    fn length_limits() {
        let l = "a".repeat(MAX_PART_BYTES);
        let j = Jid::parse(&format!("{l}@example.com/{l}")).unwrap();
        assert_eq!(j.local().map(str::len), Some(MAX_PART_BYTES));
        assert_eq!(j.resource().map(str::len), Some(MAX_PART_BYTES));
        let l2 = "a".repeat(MAX_PART_BYTES + 1);
        assert_eq!(
            err(&format!("{l2}@example.com")),
            JidError::TooLong(JidPart::Local)
        );
        assert_eq!(
            err(&format!("example.com/{l2}")),
            JidError::TooLong(JidPart::Resource)
        );
        // Hostile input is refused before normalization.
        let huge = "a".repeat(MAX_INPUT_BYTES + 1);
        assert_eq!(
            err(&format!("{huge}@example.com")),
            JidError::TooLong(JidPart::Local)
        );
        // Limit is on the normalized form: 1023 full-width letters (3 bytes
        // each) shrink to 1023 ASCII bytes.
        let wide = "\u{ff41}".repeat(MAX_PART_BYTES);
        assert_eq!(
            normalize_localpart(&wide).map(|s| s.len()),
            Ok(MAX_PART_BYTES)
        );
        // Multi-byte characters count in bytes: 512 × 2 bytes > 1023.
        assert_eq!(
            normalize_resource(&"\u{e9}".repeat(512)),
            Err(JidError::TooLong(JidPart::Resource))
        );
        // Domain labels: 63 octets fine, 64 not; 1023 octets total at most.
        let label63 = "a".repeat(63);
        assert!(normalize_domain(&format!("{label63}.example")).is_ok());
        assert_eq!(
            normalize_domain(&format!("{label63}a.example")),
            Err(JidError::BadDomain)
        );
        let long_domain = vec![label63.as_str(); 17].join(".");
        assert_eq!(
            normalize_domain(&long_domain),
            Err(JidError::TooLong(JidPart::Domain))
        );
        // A U-label whose A-label is over 63 octets.
        assert_eq!(
            normalize_domain(&format!("{}.example", "\u{e9}".repeat(60))),
            Err(JidError::BadDomain)
        );
    }

    #[test]
    fn control_characters_rejected() {
        for c in ['\0', '\u{1}', '\t', '\n', '\r', '\u{7f}', '\u{85}'] {
            assert_eq!(
                normalize_localpart(&format!("a{c}b")),
                Err(JidError::ForbiddenChar(JidPart::Local, c)),
                "{c:?}"
            );
            assert_eq!(
                normalize_resource(&format!("a{c}b")),
                Err(JidError::ForbiddenChar(JidPart::Resource, c)),
                "{c:?}"
            );
            assert_eq!(
                normalize_domain(&format!("a{c}b.example")),
                Err(JidError::BadDomain),
                "{c:?}"
            );
        }
        assert_eq!(
            err("juliet@example.com/a\u{0}"),
            JidError::ForbiddenChar(JidPart::Resource, '\0')
        );
    }

    #[test]
    fn resource_normalization() {
        // OpaqueString maps non-ASCII spaces to U+0020 and applies NFC.
        assert_eq!(normalize_resource("a\u{a0}b").as_deref(), Ok("a b"));
        assert_eq!(normalize_resource("e\u{301}").as_deref(), Ok("\u{e9}"));
        assert_eq!(normalize_resource("  ").as_deref(), Ok("  "));
    }

    #[test]
    fn localpart_normalization() {
        assert_eq!(normalize_localpart("Juliet").as_deref(), Ok("juliet"));
        assert_eq!(
            normalize_localpart("E\u{301}lise").as_deref(),
            Ok("\u{e9}lise")
        );
        assert_eq!(
            normalize_localpart(""),
            Err(JidError::Empty(JidPart::Local))
        );
        // Bidi rule: a right-to-left label may not start with a digit.
        assert_eq!(
            normalize_localpart("1\u{5d0}"),
            Err(JidError::Invalid(JidPart::Local))
        );
    }

    #[test]
    fn round_trip() {
        for s in [
            "JULIET@Example.COM/Balcony",
            "juliet@\u{c9}xample.com./foo bar",
            "xn--xample-9ua.com/a@b/c",
            "\u{3a3}@[::0:1]",
            "example.com",
            "fu\u{df}ball@example.com/\u{265a}",
        ] {
            let j = Jid::parse(s).unwrap();
            let again: Jid = j.to_string().parse().unwrap();
            assert_eq!(again, j);
            assert_eq!(again.as_str(), j.as_str());
            assert_eq!(again.local(), j.local());
            assert_eq!(again.domain(), j.domain());
            assert_eq!(again.resource(), j.resource());
        }
    }

    #[test]
    fn types_and_conversions() {
        let j = Jid::parse("Juliet@example.com/balcony").unwrap();
        assert!(!j.is_bare());
        let full = j.to_full().unwrap();
        assert_eq!(full.resource(), "balcony");
        assert_eq!(full.local(), Some("juliet"));
        let bare = full.bare();
        assert_eq!(bare.as_str(), "juliet@example.com");
        assert_eq!(bare.domain(), "example.com");
        assert_eq!(bare, j.bare());
        assert_eq!(j, full);
        assert_eq!(Jid::from(bare.clone()), bare);
        assert_eq!(Jid::from(bare.clone()).resource(), None);
        assert!(Jid::from(bare.clone()).is_bare());
        assert_eq!(Jid::from(bare.clone()).to_full(), None);

        let back = bare.with_resource("Other\u{a0}Place").unwrap();
        assert_eq!(back.as_str(), "juliet@example.com/Other Place");
        assert_eq!(BareJid::from(back.clone()), bare);
        assert_eq!(FullJid::try_from(Jid::from(back.clone())).unwrap(), back);
        assert_eq!(
            FullJid::try_from(Jid::from(bare.clone())),
            Err(JidError::MissingResource)
        );
        assert_eq!(
            BareJid::try_from(Jid::from(back.clone())),
            Err(JidError::UnexpectedResource)
        );
        assert_eq!(BareJid::try_from(Jid::from(bare.clone())).unwrap(), bare);
        assert_eq!(
            bare.with_resource(""),
            Err(JidError::Empty(JidPart::Resource))
        );

        assert_eq!(BareJid::parse("a@b/c"), Err(JidError::UnexpectedResource));
        assert_eq!(FullJid::parse("a@b"), Err(JidError::MissingResource));
        let domain = BareJid::new(None, "Example.com").unwrap();
        assert_eq!(domain.as_str(), "example.com");
        assert_eq!(domain.local(), None);
        assert_eq!(
            BareJid::new(Some("A"), "b.example").unwrap().as_str(),
            "a@b.example"
        );
        assert_eq!(
            FullJid::new(None, "b.example", "r").unwrap().as_str(),
            "b.example/r"
        );
        assert_eq!(
            Jid::new(Some("x"), "b.example", None)
                .unwrap()
                .with_resource("r")
                .unwrap()
                .as_str(),
            "x@b.example/r"
        );
        let parsed: FullJid = "a@b.example/r".parse().unwrap();
        assert_eq!(parsed.bare().to_string(), "a@b.example");
    }

    #[test]
    fn equality_ignores_shared_tail() {
        // A bare JID taken from a full one shares its text; it must still hash
        // and compare like one built from scratch.
        let from_full = FullJid::parse("a@example.com/r").unwrap().bare();
        let fresh = BareJid::parse("A@EXAMPLE.COM").unwrap();
        assert_eq!(from_full, fresh);
        let mut set = HashSet::new();
        set.insert(from_full);
        assert!(set.contains(&fresh));
        assert_eq!(format!("{fresh:?}"), "BareJid(\"a@example.com\")");
        assert!(
            BareJid::parse("a@example.com").unwrap() < BareJid::parse("b@example.com").unwrap()
        );
    }

    #[test]
    fn error_messages_name_the_part() {
        assert_eq!(
            JidError::Empty(JidPart::Local).to_string(),
            "localpart is empty"
        );
        assert_eq!(
            JidError::ForbiddenChar(JidPart::Resource, '\0').to_string(),
            "resourcepart contains forbidden character '\\0' (U+0000)"
        );
        assert_eq!(
            JidError::TooLong(JidPart::Domain).to_string(),
            "domainpart is longer than 1023 bytes"
        );
    }

    #[test]
    fn compact() {
        assert_eq!(std::mem::size_of::<Jid>(), 24);
        assert_eq!(std::mem::size_of::<Option<Jid>>(), 24);
        assert_eq!(std::mem::size_of::<FullJid>(), 24);
    }
}
