//! The XML framer (RFC 6120 §4, §11) on arbitrary bytes, fed whole and in
//! chunks: it must never panic, never buffer more than a stanza's limit
//! plus one chunk, and give the same answer however the input is cut.
#![no_main]

use hearth::xml::{Event, Framer, Limits};
use libfuzzer_sys::fuzz_target;

/// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_stanza_bytes: 2048,
    max_depth: 8,
    max_attrs: 8,
    max_elements: 64,
};

/// Feeds `chunks` and drains events after each; returns the events and
/// whether the stream failed.
fn run<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Event>, bool) {
    let mut framer = Framer::new(LIMITS);
    let mut events = Vec::new();
    for chunk in chunks {
        if framer.feed(chunk).is_err() {
            return (events, true);
        }
        assert!(framer.buffered() <= LIMITS.max_stanza_bytes.max(4096) + chunk.len());
        loop {
            match framer.next_event() {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(_) => return (events, true),
            }
        }
    }
    (events, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let (whole, whole_failed) = run(std::iter::once(input));
    let size = usize::from(cut % 64) + 1;
    let (chunked, chunked_failed) = run(input.chunks(size));
    assert_eq!(
        whole_failed, chunked_failed,
        "fails whole vs in chunks of {size}"
    );
    if !whole_failed {
        assert_eq!(whole, chunked, "events whole vs in chunks of {size}");
    }
});
