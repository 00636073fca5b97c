//! The stream negotiation core (RFC 6120 §4) shared by the stream machines: the
//! client-to-server one ([`super::c2s`]) and the server-to-server ones to come.
//!
//! It owns what every XMPP stream has whatever sits on it: the stream header in
//! both directions (§4.2, §4.7) and its checks (content namespace, `to` host,
//! version), the `<stream:features/>` wrapper around what the machine offers at
//! each stage (§4.3.2), restarts after STARTTLS and SASL (§4.3.3), stream errors
//! (§4.9) and the closing handshake (§4.4). It knows nothing of TLS, SASL, bind
//! or stanzas: the machine decides what each stage offers and what a first-level
//! element means; the core hands it the elements once the stream is open.
//!
//! Sans-IO like the machines: it writes [`Wire`] actions into the machine's own
//! action list (any type that is `From<Wire>`), so a machine and its core share
//! one ordered output.
//!
//! Both ends of a connection are covered: [`Role::Receiving`] (we accepted the
//! TCP connection: the peer's header comes first, ours answers it) for c2s and
//! incoming s2s, and [`Role::Initiating`] (we connected: our header goes first,
//! §4.2) for outgoing s2s.

use std::sync::Arc;

use crate::jid;
use crate::ns;
use crate::stanza::{StreamCondition, StreamError};
use crate::xml::{Element, Event, StreamHeader};

/// What the core asks of the connection loop. A machine's action type embeds
/// these through `From<Wire>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Write these bytes.
    Send(String),
    /// The stream restarts (§4.3.3): drop the framer's state; the next thing
    /// read is a new header.
    ResetFramer,
    /// Close the connection (after writing what came before).
    Close,
}

/// Which end of the connection this stream is (RFC 6120 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We accepted the connection: the peer opens, our header answers it with
    /// a fresh stream id (§4.7.3). A client's stream; an incoming s2s stream.
    Receiving,
    /// We opened the connection: our header goes first, without an id, and
    /// names the peer in `to` (§4.7.2); the peer's answer carries the id.
    /// An outgoing s2s stream.
    Initiating,
}

/// Where the stream itself is, whatever the machine's stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the peer's header: at the start, or after a restart.
    AwaitingHeader,
    /// Both headers are out: first-level elements go to the machine.
    Open,
    /// We sent `</stream:stream>` (§4.4) and wait for the peer's.
    Closing,
    /// Over: nothing more is read or written.
    Closed,
}

/// What an accepted peer header said (§4.7), for the machine to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHeader {
    /// `from` as sent: a client's JID if it gave one, a server's domain.
    /// Unchecked: whether it must match anything is the machine's call
    /// (s2s authenticates it with SASL EXTERNAL or dialback).
    pub from: Option<String>,
    /// `to`, normalized when receiving (then it is our domain).
    pub to: Option<String>,
    /// `id`: the receiving side's stream id, as an initiating side sees it
    /// (dialback's key depends on it, XEP-0220 §2.1.1).
    pub id: Option<String>,
    /// The version offered, `(major, minor)`; at least 1.0 (§4.7.5).
    pub version: (u32, u32),
    /// `xml:lang`, the default language of the peer's text (§4.7.4).
    pub lang: Option<String>,
}

/// What a framer event meant, once the core has done its part.
#[derive(Debug)]
pub enum Incoming {
    /// The peer's header was accepted (ours is out when receiving): the
    /// machine now offers its features for the stage ([`Negotiation::send_features`])
    /// or, initiating, waits for the peer's.
    Opened(PeerHeader),
    /// A first-level element for the machine: a negotiation element or a
    /// stanza. Never a `<stream:error/>`, which the core handles.
    Element(Element),
    /// Nothing for the machine: the core answered (a close, a stream error,
    /// a header out of place) or the stream is over.
    Handled,
}

/// The stream layer of one connection: headers, restarts, errors, closing.
#[derive(Debug)]
pub struct Negotiation {
    role: Role,
    /// The content namespace both headers declare: `jabber:client` or
    /// `jabber:server` (§4.8.2). A peer header declaring another is refused.
    content_ns: &'static str,
    /// Our domain: `from` on our header, and the only `to` accepted when receiving.
    local: Arc<str>,
    /// The peer's domain: given when initiating; when receiving, taken from
    /// the peer's `from` if [`Negotiation::naming_peer`] asked for it.
    peer: Option<Arc<str>>,
    /// Whether a receiving side names the peer in its header's `to`
    /// (§4.7.2 SHOULD; s2s does, c2s has not so far).
    names_peer: bool,
    /// Extra prefixes our header declares, such as `db` for dialback
    /// (XEP-0220 §2.1.1).
    declarations: Vec<(&'static str, &'static str)>,
    state: State,
    /// Whether our header for the current stream has been written.
    header_sent: bool,
    /// The current stream's id: ours when receiving, the peer's when initiating.
    id: Option<String>,
    /// A receiving side that serves several domains (external components, XEP-0114):
    /// any of them is accepted as `to`, and becomes [`Negotiation::local`].
    accepted: Option<Arc<[Arc<str>]>>,
    /// Headers without `version` are the norm (XEP-0114 §3 streams predate
    /// RFC 6120's version 1.0): accepted, and ours carries none.
    versionless: bool,
}

impl Negotiation {
    /// The side that accepted the connection, for content namespace
    /// `content_ns`, serving `local` (normalized).
    pub fn receiving(content_ns: &'static str, local: Arc<str>) -> Negotiation {
        Negotiation::new(Role::Receiving, content_ns, local, None)
    }

    /// The side that opened the connection to `peer` (a normalized domain).
    /// Call [`Negotiation::open`] to write the first header.
    pub fn initiating(content_ns: &'static str, local: Arc<str>, peer: Arc<str>) -> Negotiation {
        Negotiation::new(Role::Initiating, content_ns, local, Some(peer))
    }

    fn new(
        role: Role,
        content_ns: &'static str,
        local: Arc<str>,
        peer: Option<Arc<str>>,
    ) -> Negotiation {
        Negotiation {
            role,
            content_ns,
            local,
            peer,
            names_peer: false,
            declarations: Vec::new(),
            state: State::AwaitingHeader,
            header_sent: false,
            id: None,
            accepted: None,
            versionless: false,
        }
    }

    /// A receiving side for any of `domains` (XEP-0114: the component's domain is the
    /// header's `to`).
    pub fn serving_any(mut self, domains: Arc<[Arc<str>]>) -> Negotiation {
        self.accepted = Some(domains);
        self
    }

    /// Streams without a version (XEP-0114 §3).
    pub fn versionless(mut self) -> Negotiation {
        self.versionless = true;
        self
    }

    /// A receiving side that puts the peer's `from` (a valid domain) in its
    /// header's `to` (RFC 6120 §4.7.2), as s2s should.
    pub fn naming_peer(mut self) -> Negotiation {
        self.names_peer = true;
        self
    }

    /// Declares `xmlns:{prefix}='{uri}'` on our headers (XEP-0220 §2.1.1
    /// wants `db` declared for dialback).
    pub fn declaring(mut self, prefix: &'static str, uri: &'static str) -> Negotiation {
        self.declarations.push((prefix, uri));
        self
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The content namespace of the stream.
    pub fn content_ns(&self) -> &'static str {
        self.content_ns
    }

    /// Our domain.
    pub fn local(&self) -> &Arc<str> {
        &self.local
    }

    /// The peer's domain, when known (see [`Negotiation::naming_peer`]).
    pub fn peer(&self) -> Option<&Arc<str>> {
        self.peer.as_ref()
    }

    /// The current stream's id (§4.7.3), once headers are exchanged.
    pub fn stream_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// True while the stream waits for the peer's (re)opening header.
    pub fn is_awaiting_header(&self) -> bool {
        self.state == State::AwaitingHeader
    }

    /// True when both headers are out and the stream has not begun to close.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// True once we sent `</stream:stream>` ourselves.
    pub fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing | State::Closed)
    }

    /// True when the stream is over: nothing more is accepted.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Initiating side: writes our header (§4.2) if it is not out yet. A
    /// receiving side's header answers the peer's, so this does nothing there.
    pub fn open<A: From<Wire>>(&mut self, out: &mut Vec<A>) {
        if self.role == Role::Initiating && self.state == State::AwaitingHeader {
            self.send_header_if_needed(out);
        }
    }

    /// Reacts to one framer event: checks and answers headers, answers a
    /// close or a stream error, and hands everything else to the machine.
    pub fn on_event<A: From<Wire>>(&mut self, ev: Event, out: &mut Vec<A>) -> Incoming {
        if self.state == State::Closed {
            return Incoming::Handled;
        }
        match ev {
            Event::Open(h) => self.on_header(&h, out),
            Event::Close => {
                self.on_peer_close(out);
                Incoming::Handled
            }
            Event::Stanza(el) if el.is("error", ns::STREAM) => {
                // §4.9.1.3: the peer gave up on the stream; close our side.
                if self.state != State::Closing {
                    out.push(Wire::Send("</stream:stream>".into()).into());
                }
                self.close_now(out);
                Incoming::Handled
            }
            Event::Stanza(_) if self.state == State::AwaitingHeader => {
                // Content before the header of a (restarted) stream.
                self.fail(StreamError::new(StreamCondition::NotWellFormed), out);
                Incoming::Handled
            }
            // While closing, what the peer still sends is the machine's to
            // process or drop (§4.4); it must write nothing back.
            Event::Stanza(el) => Incoming::Element(el),
        }
    }

    /// RFC 6120 §4.7: checks the peer's header. On success our header goes
    /// out (receiving) and the stream is open; otherwise a stream error.
    fn on_header<A: From<Wire>>(&mut self, h: &StreamHeader, out: &mut Vec<A>) -> Incoming {
        if self.state != State::AwaitingHeader {
            // A second header inside an open stream is not XML we accept.
            self.fail(StreamError::new(StreamCondition::NotWellFormed), out);
            return Incoming::Handled;
        }
        // §4.8.2: the content namespace is the kind of stream.
        if h.default_ns() != self.content_ns {
            let text = format!("the content namespace must be {}", self.content_ns);
            self.fail(
                StreamError::new(StreamCondition::InvalidNamespace).with_text(text),
                out,
            );
            return Incoming::Handled;
        }
        let to = match self.role {
            // §4.7.2: the initiating entity MUST put the receiving domain in 'to'.
            Role::Receiving => {
                let to = h
                    .attr("to")
                    .and_then(|to| jid::normalize_domain(to).ok())
                    .filter(|d| match &self.accepted {
                        Some(list) => list.iter().any(|a| **a == **d),
                        None => **d == *self.local,
                    });
                if let Some(d) = &to
                    && self.accepted.is_some()
                {
                    self.local = Arc::from(d.as_str());
                }
                if to.is_none() {
                    let text = format!("this server is {}", self.local);
                    self.fail(
                        StreamError::new(StreamCondition::HostUnknown).with_text(text),
                        out,
                    );
                    return Incoming::Handled;
                }
                to
            }
            Role::Initiating => h.attr("to").map(str::to_owned),
        };
        // §4.7.5: we speak 1.0; an absent version means a pre-RFC peer.
        let parsed = match (h.attr("version"), self.versionless) {
            (None, true) => Some((0, 9)),
            (v, _) => version(v).filter(|(major, _)| *major >= 1),
        };
        let Some(version) = parsed else {
            self.fail(
                StreamError::new(StreamCondition::UnsupportedVersion)
                    .with_text("XMPP version 1.0 is required"),
                out,
            );
            return Incoming::Handled;
        };
        let from = h.attr("from").map(str::to_owned);
        match self.role {
            Role::Receiving => {
                if self.names_peer {
                    self.peer = from
                        .as_deref()
                        .and_then(|f| jid::normalize_domain(f).ok())
                        .map(Arc::from);
                }
                self.send_header_if_needed(out);
            }
            Role::Initiating => self.id = h.attr("id").map(str::to_owned),
        }
        self.state = State::Open;
        Incoming::Opened(PeerHeader {
            from,
            to,
            id: h.attr("id").map(str::to_owned),
            version,
            lang: h.attr("xml:lang").map(str::to_owned),
        })
    }

    /// `<stream:features/>` with what the machine offers at this stage
    /// (§4.3.2): receiving side, right after [`Incoming::Opened`].
    pub fn send_features<A: From<Wire>>(&mut self, features: &[Element], out: &mut Vec<A>) {
        if self.state != State::Open {
            return;
        }
        let mut s = String::from("<stream:features>");
        for f in features {
            f.write_to(&mut s, "");
        }
        s.push_str("</stream:features>");
        out.push(Wire::Send(s).into());
    }

    /// A stream restart (§4.3.3) after TLS or SASL success: the framer starts
    /// over, both sides send new headers (the initiating side's goes now).
    pub fn restart<A: From<Wire>>(&mut self, out: &mut Vec<A>) {
        if self.is_closing() {
            return;
        }
        out.push(Wire::ResetFramer.into());
        self.header_sent = false;
        self.id = None;
        self.state = State::AwaitingHeader;
        self.open(out);
    }

    /// Closes the stream with a stream error (§4.9.1): our header first if it
    /// was not yet sent (§4.9.1.1), the error, `</stream:stream>`, then the
    /// connection. After our own `</stream:stream>` no error can follow, so
    /// the connection just closes.
    pub fn fail<A: From<Wire>>(&mut self, err: StreamError, out: &mut Vec<A>) {
        match self.state {
            State::Closed => return,
            State::Closing => {}
            State::AwaitingHeader | State::Open => {
                self.send_header_if_needed(out);
                out.push(Wire::Send(format!("{}</stream:stream>", err.to_xml())).into());
            }
        }
        self.close_now(out);
    }

    /// The server is stopping (SIGTERM): `system-shutdown` (§4.9.3.19).
    pub fn shutdown<A: From<Wire>>(&mut self, out: &mut Vec<A>) {
        self.fail(
            StreamError::new(StreamCondition::SystemShutdown).with_text("the server is stopping"),
            out,
        );
    }

    /// Starts the closing handshake (§4.4): `</stream:stream>` goes out and
    /// the connection stays up until the peer's closing tag arrives (the
    /// loop's timers bound the wait).
    pub fn close<A: From<Wire>>(&mut self, out: &mut Vec<A>) {
        if self.is_closing() {
            return;
        }
        self.send_header_if_needed(out);
        out.push(Wire::Send("</stream:stream>".into()).into());
        self.state = State::Closing;
    }

    /// The peer's `</stream:stream>` (§4.4): answered with ours, unless ours
    /// went first; either way the handshake is complete.
    fn on_peer_close<A: From<Wire>>(&mut self, out: &mut Vec<A>) {
        if self.state != State::Closing {
            self.send_header_if_needed(out);
            out.push(Wire::Send("</stream:stream>".into()).into());
        }
        self.close_now(out);
    }

    fn close_now<A: From<Wire>>(&mut self, out: &mut Vec<A>) {
        out.push(Wire::Close.into());
        self.state = State::Closed;
    }

    fn send_header_if_needed<A: From<Wire>>(&mut self, out: &mut Vec<A>) {
        if !self.header_sent {
            let xml = self.header_xml();
            out.push(Wire::Send(xml).into());
            self.header_sent = true;
        }
    }

    /// Our header (§4.7): `from` our domain; receiving, a fresh `id`;
    /// `to` the peer when it is known and named.
    fn header_xml(&mut self) -> String {
        let mut s = String::with_capacity(256);
        s.push_str("<?xml version='1.0'?><stream:stream xmlns='");
        s.push_str(self.content_ns);
        s.push_str("' xmlns:stream='http://etherx.jabber.org/streams' ");
        for (prefix, uri) in &self.declarations {
            s.push_str("xmlns:");
            s.push_str(prefix);
            s.push_str("='");
            crate::xml::escape_attr(uri, &mut s);
            s.push_str("' ");
        }
        if self.role == Role::Receiving {
            // §4.7.3: the receiving entity MUST include an id; an initiating one MUST NOT.
            let id = super::new_stream_id();
            s.push_str("id='");
            s.push_str(&id);
            s.push_str("' ");
            self.id = Some(id);
        }
        s.push_str("from='");
        crate::xml::escape_attr(&self.local, &mut s);
        s.push('\'');
        let to = match self.role {
            Role::Initiating => self.peer.as_ref(),
            Role::Receiving => self.peer.as_ref().filter(|_| self.names_peer),
        };
        if let Some(to) = to {
            s.push_str(" to='");
            crate::xml::escape_attr(to, &mut s);
            s.push('\'');
        }
        if !self.versionless {
            s.push_str(" version='1.0'");
        }
        s.push_str(" xml:lang='en'>");
        s
    }
}

/// `major.minor` of a `version` attribute (§4.7.5); a missing minor is 0.
fn version(v: Option<&str>) -> Option<(u32, u32)> {
    let mut parts = v?.split('.');
    let major = parts.next()?.parse::<u32>().ok()?;
    let minor = parts
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{Framer, Limits};

    const DOMAIN: &str = "home.local";

    /// A core under test with a framer for the peer's XML.
    struct T {
        core: Negotiation,
        framer: Framer,
    }

    impl T {
        fn receiving(content_ns: &'static str) -> T {
            T {
                core: Negotiation::receiving(content_ns, DOMAIN.into()),
                framer: Framer::new(Limits::default()),
            }
        }

        /// Feeds peer XML; returns the wire actions and what the machine got.
        fn feed(&mut self, xml: &str) -> (Vec<Wire>, Vec<Incoming>) {
            self.framer.feed(xml.as_bytes()).unwrap();
            let mut out = Vec::new();
            let mut got = Vec::new();
            while let Some(ev) = self.framer.next_event().unwrap() {
                let n = out.len();
                got.push(self.core.on_event(ev, &mut out));
                if out[n..].contains(&Wire::ResetFramer) {
                    self.framer.reset();
                }
            }
            (out, got)
        }
    }

    fn sent(actions: &[Wire]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Wire::Send(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn header(ns: &str, attrs: &str) -> String {
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='{ns}' \
             xmlns:stream='http://etherx.jabber.org/streams' {attrs}>"
        )
    }

    fn client_header() -> String {
        header(ns::CLIENT, "to='home.local' version='1.0'")
    }

    fn attr<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
        let start = xml.find(&format!(" {name}='"))? + name.len() + 3;
        xml[start..].split('\'').next()
    }

    #[test]
    fn good_header_is_answered_with_ours_and_opens() {
        let mut t = T::receiving(ns::CLIENT);
        let (out, got) = t.feed(&header(
            ns::CLIENT,
            "to='Home.Local' from='ann@home.local' version='1.2' xml:lang='de'",
        ));
        let s = sent(&out);
        assert!(
            s.starts_with(
                "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                 xmlns:stream='http://etherx.jabber.org/streams' id='"
            ),
            "{s}"
        );
        assert!(s.ends_with("' from='home.local' version='1.0' xml:lang='en'>"));
        let id = attr(&s, "id").unwrap();
        assert_eq!(t.core.stream_id(), Some(id));
        assert!(t.core.is_open());
        let [Incoming::Opened(h)] = &got[..] else {
            panic!("{got:?}")
        };
        assert_eq!(h.to.as_deref(), Some("home.local"));
        assert_eq!(h.from.as_deref(), Some("ann@home.local"));
        assert_eq!(h.version, (1, 2));
        assert_eq!(h.lang.as_deref(), Some("de"));
        assert_eq!(h.id, None);

        let mut out = Vec::<Wire>::new();
        t.core
            .send_features(&[Element::new("bind", ns::BIND)], &mut out);
        assert_eq!(
            sent(&out),
            "<stream:features><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/></stream:features>"
        );
        let (_, got) = t.feed("<presence/>");
        assert!(matches!(&got[..], [Incoming::Element(el)] if el.is("presence", ns::CLIENT)));
    }

    /// Each refused header: our header first (§4.9.1.1), the error, the close.
    #[test]
    fn header_errors_come_after_our_header() {
        let cases = [
            (
                header(ns::SERVER, "to='home.local' version='1.0'"),
                "<invalid-namespace",
            ),
            (
                header(ns::CLIENT, "to='elsewhere.example' version='1.0'"),
                "<host-unknown",
            ),
            (header(ns::CLIENT, "version='1.0'"), "<host-unknown"),
            (
                header(ns::CLIENT, "to='home.local'"),
                "<unsupported-version",
            ),
            (
                header(ns::CLIENT, "to='home.local' version='0.9'"),
                "<unsupported-version",
            ),
            (
                header(ns::CLIENT, "to='home.local' version='one'"),
                "<unsupported-version",
            ),
        ];
        for (xml, condition) in cases {
            let mut t = T::receiving(ns::CLIENT);
            let (out, got) = t.feed(&xml);
            let s = sent(&out);
            assert!(s.starts_with("<?xml version='1.0'?><stream:stream"), "{s}");
            assert!(s.contains(condition), "{condition} in {s}");
            assert!(s.ends_with("</stream:stream>"), "{s}");
            assert_eq!(out.last(), Some(&Wire::Close));
            assert!(matches!(&got[..], [Incoming::Handled]));
            assert!(t.core.is_closed());
            // Nothing more is accepted.
            let mut more = Vec::<Wire>::new();
            let got = t.core.on_event(Event::Close, &mut more);
            assert!(matches!(got, Incoming::Handled) && more.is_empty());
        }
    }

    #[test]
    fn server_namespace_is_the_only_one_an_s2s_stream_accepts() {
        let mut t = T::receiving(ns::SERVER);
        let (out, _) = t.feed(&client_header());
        assert!(sent(&out).contains("the content namespace must be jabber:server"));

        let mut t = T::receiving(ns::SERVER);
        let (out, got) = t.feed(&header(
            ns::SERVER,
            "to='home.local' from='example.org' version='1.0'",
        ));
        let s = sent(&out);
        assert!(s.contains("xmlns='jabber:server'"), "{s}");
        // Not named unless asked for.
        assert_eq!(attr(&s, "to"), None);
        assert!(
            matches!(&got[..], [Incoming::Opened(h)] if h.from.as_deref() == Some("example.org"))
        );
    }

    #[test]
    fn a_peer_named_in_our_answer_and_extra_declarations() {
        let mut t = T::receiving(ns::SERVER);
        t.core = Negotiation::receiving(ns::SERVER, DOMAIN.into())
            .naming_peer()
            .declaring("db", "jabber:server:dialback");
        let (out, _) = t.feed(&header(
            ns::SERVER,
            "to='home.local' from='Example.ORG' version='1.0'",
        ));
        let s = sent(&out);
        assert!(s.contains(" xmlns:db='jabber:server:dialback' "), "{s}");
        assert_eq!(attr(&s, "from"), Some("home.local"));
        assert_eq!(attr(&s, "to"), Some("example.org"));
        assert_eq!(t.core.peer().map(|p| &**p), Some("example.org"));
    }

    #[test]
    fn errors_before_and_after_our_header() {
        // Before any header (e.g. too many connections): our header, then the error.
        let mut core = Negotiation::receiving(ns::CLIENT, DOMAIN.into());
        let mut out = Vec::<Wire>::new();
        core.fail(
            StreamError::new(StreamCondition::ResourceConstraint),
            &mut out,
        );
        let s = sent(&out);
        assert!(s.starts_with("<?xml"), "{s}");
        assert!(s.contains("<resource-constraint"));
        assert_eq!(out.last(), Some(&Wire::Close));
        // Only once.
        let mut again = Vec::<Wire>::new();
        core.fail(StreamError::new(StreamCondition::Conflict), &mut again);
        assert!(again.is_empty());

        // After our header: no second header.
        let mut t = T::receiving(ns::CLIENT);
        t.feed(&client_header());
        let mut out = Vec::<Wire>::new();
        t.core
            .fail(StreamError::new(StreamCondition::Conflict), &mut out);
        let s = sent(&out);
        assert!(s.starts_with("<stream:error><conflict"), "{s}");
        assert!(s.ends_with("</stream:error></stream:stream>"), "{s}");
        assert_eq!(out, [Wire::Send(s.clone()), Wire::Close]);
    }

    #[test]
    fn content_before_the_header_or_a_second_header_is_not_well_formed() {
        let mut t = T::receiving(ns::CLIENT);
        t.feed(&client_header());
        let mut out = Vec::<Wire>::new();
        let h = StreamHeader {
            attrs: vec![
                ("to".into(), DOMAIN.into()),
                ("version".into(), "1.0".into()),
            ],
            default_ns: ns::CLIENT.into(),
        };
        t.core.on_event(Event::Open(h), &mut out);
        assert!(sent(&out).starts_with("<stream:error><not-well-formed"));
        assert!(t.core.is_closed());

        let mut core = Negotiation::receiving(ns::CLIENT, DOMAIN.into());
        let mut out = Vec::<Wire>::new();
        core.on_event(
            Event::Stanza(Element::new("presence", ns::CLIENT)),
            &mut out,
        );
        let s = sent(&out);
        assert!(
            s.starts_with("<?xml") && s.contains("<not-well-formed"),
            "{s}"
        );
    }

    #[test]
    fn restart_wants_a_new_header_and_gives_a_new_id() {
        let mut t = T::receiving(ns::CLIENT);
        t.feed(&client_header());
        let first = t.core.stream_id().unwrap().to_owned();
        let mut out = Vec::<Wire>::new();
        t.core.restart(&mut out);
        assert_eq!(out, [Wire::ResetFramer]);
        t.framer.reset();
        assert!(t.core.is_awaiting_header());
        assert_eq!(t.core.stream_id(), None);
        // An element where the new header belongs.
        let mut t2 = T::receiving(ns::CLIENT);
        t2.feed(&client_header());
        t2.core.restart(&mut Vec::<Wire>::new());
        t2.framer.reset();
        let mut out = Vec::<Wire>::new();
        t2.core
            .on_event(Event::Stanza(Element::new("auth", ns::SASL)), &mut out);
        let s = sent(&out);
        assert!(
            s.starts_with("<?xml") && s.contains("<not-well-formed"),
            "{s}"
        );

        // The new header is checked like the first and answered with a new id.
        let (out, got) = t.feed(&client_header());
        let s = sent(&out);
        assert!(s.starts_with("<?xml"), "{s}");
        assert!(matches!(&got[..], [Incoming::Opened(_)]));
        assert_ne!(t.core.stream_id(), Some(first.as_str()));
    }

    #[test]
    fn close_handshake_either_way() {
        // The peer closes: answered with ours, then the connection closes.
        let mut t = T::receiving(ns::CLIENT);
        t.feed(&client_header());
        let (out, got) = t.feed("</stream:stream>");
        assert_eq!(out, [Wire::Send("</stream:stream>".into()), Wire::Close]);
        assert!(matches!(&got[..], [Incoming::Handled]));
        assert!(t.core.is_closed());

        // We close: ours goes out, the connection waits for theirs.
        let mut t = T::receiving(ns::CLIENT);
        t.feed(&client_header());
        let mut out = Vec::<Wire>::new();
        t.core.close(&mut out);
        assert_eq!(out, [Wire::Send("</stream:stream>".into())]);
        assert!(t.core.is_closing() && !t.core.is_closed());
        // What the peer still sends is the machine's to handle or drop.
        let (out, got) = t.feed("<message/>");
        assert!(out.is_empty());
        assert!(matches!(&got[..], [Incoming::Element(_)]));
        // An error now cannot be written after our closing tag.
        let mut out = Vec::<Wire>::new();
        t.core
            .fail(StreamError::new(StreamCondition::Conflict), &mut out);
        assert_eq!(out, [Wire::Close]);

        let mut t = T::receiving(ns::CLIENT);
        t.feed(&client_header());
        t.core.close(&mut Vec::<Wire>::new());
        let (out, _) = t.feed("</stream:stream>");
        assert_eq!(out, [Wire::Close]);
        assert!(t.core.is_closed());
    }

    #[test]
    fn the_peers_stream_error_is_answered_with_our_close() {
        let mut t = T::receiving(ns::CLIENT);
        t.feed(&client_header());
        let (out, got) = t.feed(
            "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
        );
        assert_eq!(out, [Wire::Send("</stream:stream>".into()), Wire::Close]);
        assert!(matches!(&got[..], [Incoming::Handled]));
    }

    #[test]
    fn shutdown_is_system_shutdown() {
        let mut t = T::receiving(ns::CLIENT);
        t.feed(&client_header());
        let mut out = Vec::<Wire>::new();
        t.core.shutdown(&mut out);
        assert!(sent(&out).contains("<system-shutdown"));
        assert_eq!(out.last(), Some(&Wire::Close));
    }

    #[test]
    fn initiating_side_opens_first_and_restarts_with_a_new_header() {
        let mut core = Negotiation::initiating(ns::SERVER, DOMAIN.into(), Arc::from("example.org"))
            .declaring("db", "jabber:server:dialback");
        let mut framer = Framer::new(Limits::default());
        let mut out = Vec::<Wire>::new();
        core.open(&mut out);
        core.open(&mut out);
        assert_eq!(
            out,
            [Wire::Send(
                "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
                 xmlns:stream='http://etherx.jabber.org/streams' \
                 xmlns:db='jabber:server:dialback' from='home.local' to='example.org' \
                 version='1.0' xml:lang='en'>"
                    .into()
            )]
        );
        // Our header round-trips through our own framer.
        let Wire::Send(ours) = &out[0] else {
            unreachable!()
        };
        framer.feed(ours.as_bytes()).unwrap();
        let Some(Event::Open(h)) = framer.next_event().unwrap() else {
            panic!("no header")
        };
        assert_eq!(h.default_ns(), ns::SERVER);
        assert_eq!(h.attr("to"), Some("example.org"));
        assert_eq!(h.attr("id"), None, "§4.7.3: no id from the initiating side");

        // The answer carries the id; it is not our `to` that is checked.
        let answer = header(
            ns::SERVER,
            "from='example.org' to='home.local' id='abc123' version='1.0'",
        );
        let mut framer = Framer::new(Limits::default());
        framer.feed(answer.as_bytes()).unwrap();
        let ev = framer.next_event().unwrap().unwrap();
        let mut out = Vec::<Wire>::new();
        let got = core.on_event(ev, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert!(matches!(got, Incoming::Opened(h) if h.id.as_deref() == Some("abc123")));
        assert_eq!(core.stream_id(), Some("abc123"));
        assert!(core.is_open());

        // After TLS or SASL: reset, and our new header at once.
        let mut out = Vec::<Wire>::new();
        core.restart(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Wire::ResetFramer);
        assert!(matches!(&out[1], Wire::Send(s) if s.starts_with("<?xml")));
        assert!(core.is_awaiting_header());

        // An answer in the wrong namespace or version fails without a second header.
        let mut out = Vec::<Wire>::new();
        let h = StreamHeader {
            attrs: vec![("id".into(), "x".into())],
            default_ns: ns::SERVER.into(),
        };
        core.on_event(Event::Open(h), &mut out);
        let s = sent(&out);
        assert!(s.starts_with("<stream:error><unsupported-version"), "{s}");
        assert_eq!(out.last(), Some(&Wire::Close));
    }

    #[test]
    fn version_parsing() {
        assert_eq!(version(Some("1.0")), Some((1, 0)));
        assert_eq!(version(Some("1")), Some((1, 0)));
        assert_eq!(version(Some("2.13")), Some((2, 13)));
        assert_eq!(version(Some("")), None);
        assert_eq!(version(Some(".1")), None);
        assert_eq!(version(None), None);
    }
}
