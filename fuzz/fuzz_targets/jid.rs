//! RFC 7622 addresses from arbitrary strings: parsing never panics, and a
//! parsed address is normalized, so printing and parsing it again gives
//! the same address (RFC 7622 §3: comparison is on the normalized form).
#![no_main]

use hearth::jid::{BareJid, FullJid, Jid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let Ok(jid) = Jid::parse(s) else {
        let _ = BareJid::parse(s);
        let _ = FullJid::parse(s);
        return;
    };
    let printed = jid.to_string();
    let again = Jid::parse(&printed).expect("a normalized JID parses again");
    assert_eq!(jid, again, "{s:?} printed as {printed:?}");
    assert_eq!(again.to_string(), printed);
    assert_eq!(jid.is_full(), FullJid::parse(&printed).is_ok());
    let bare = jid.bare();
    assert_eq!(BareJid::parse(&bare.to_string()).ok(), Some(bare));
});
