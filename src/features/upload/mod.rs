//! XEP-0363: HTTP File Upload — photo sharing (issue 20). A client asks the component
//! `upload.<domain>` for a *slot* (§4): a PUT URL to send the file to and a GET URL to
//! share; the file goes over hearth's own HTTPS listener (`net::http`, port 5443) and is
//! kept beside the database, in `<data_dir>/uploads/`.
//!
//! What it does, as Prosody's `mod_http_file_share` and ejabberd's `mod_http_upload` do:
//! - The component is routed as a router `Service` ([`UploadService`]): disco#info (§2:
//!   identity `store/file`, feature `urn:xmpp:http:upload:0` and the XEP-0128 form with
//!   `max-file-size`, §3) to anyone; the server's disco#items lists it (§2) through this
//!   module ([`Upload`]).
//! - Slots only for this server's own accounts (§4); anyone else gets `forbidden`. The
//!   request is checked ([`parse_request`], [`check_request`]): a bad file name or size
//!   is `bad-request` or `not-acceptable`; a file over `[upload] max_file_size` is
//!   `not-acceptable` with `<file-too-large/>` and the limit (§4.1); a type outside
//!   `[upload] allowed_types` is `not-acceptable`; past the account's upload quota
//!   (`[upload] quota_bytes_per_account`, counted as the sum of declared sizes of its
//!   files and open slots, each at least a disk block, with at most
//!   [`store::MAX_OPEN_SLOTS`] waiting) `resource-constraint` (§4.1, "quota reached").
//! - A slot is a random 128-bit token stored with what the client declared; the PUT must
//!   carry exactly that size (and type), is written streaming to a temporary file that is
//!   renamed into place when complete, and works once ([`files`]).
//! - Files expire `[upload] expire_after_secs` after their upload (default 30 days;
//!   Prosody keeps them a week, ejabberd forever: a family's archive keeps a year of
//!   history and a photo should stay viewable for a while), slots never used after
//!   [`SLOT_LIFETIME_SECS`]; a periodic sweep deletes them and their files and so frees
//!   the quota. An account's removal deletes its files ([`Hook::AccountRemoved`]).

pub mod files;
pub mod store;

use std::sync::Arc;

use crate::features::disco::Identity;
use crate::features::forms::{Field, Form, FormType};
use crate::features::{Doc, Hook, HookCx, HookFuture, IqCx, Module, Spec, Status, Target};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::router::{Origin, Router, Service};
use crate::stanza::{ErrorType, IqType, Kind, Stanza, StanzaCondition, StanzaError};
use crate::xml::Element;

/// XEP-0363's namespace.
pub const NS: &str = "urn:xmpp:http:upload:0";

/// How long a slot waits for its PUT to start before the sweep deletes it (and its
/// reserved size leaves the quota).
pub const SLOT_LIFETIME_SECS: i64 = 600;

/// The longest file name accepted, in bytes (a file system's usual limit).
pub const MAX_FILENAME_BYTES: usize = 255;

/// Slot requests waiting for the storage task; more get `resource-constraint`.
pub const QUEUE: usize = 64;

/// `[upload]`: the component and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadConfig {
    /// Whether `upload.<domain>` exists at all (it also needs `[http]`).
    pub enabled: bool,
    /// The largest file accepted, in bytes (§4.1, announced in disco, §3).
    pub max_file_size: u64,
    /// What one account may keep uploaded, in bytes (its files and open slots).
    pub quota_bytes_per_account: u64,
    /// Seconds a file is kept after its upload; 0 keeps it until its account goes.
    pub expire_after_secs: u64,
    /// MIME types accepted (`"image/jpeg"`, or `"image/*"` for a family); empty: any.
    pub allowed_types: Vec<String>,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: true,
            // ejabberd's default; a phone's video fits, and Prosody's 10 MiB does not.
            max_file_size: 100 * 1024 * 1024,
            quota_bytes_per_account: 1024 * 1024 * 1024,
            expire_after_secs: 30 * 86_400,
            allowed_types: Vec::new(),
        }
    }
}

/// A slot request (§4), checked for form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRequest {
    pub filename: String,
    pub size: u64,
    /// The MIME type declared, or `application/octet-stream` when none was.
    pub content_type: String,
}

/// Reads `<request xmlns='urn:xmpp:http:upload:0' filename size content-type/>` (§4).
/// A missing or malformed attribute is `bad-request`; a file name that could not be a
/// file's (empty, too long, a path, control characters) is `not-acceptable`.
pub fn parse_request(el: &Element) -> Result<SlotRequest, StanzaError> {
    let bad = |why: &str| StanzaError::new(StanzaCondition::BadRequest).with_text(why);
    let filename = el
        .attr("filename")
        .ok_or_else(|| bad("the request needs a filename"))?;
    if !is_acceptable_filename(filename) {
        return Err(StanzaError::new(StanzaCondition::NotAcceptable).with_text(
            "the file name must be 1 to 255 bytes, with no '/', '\\' or control characters",
        ));
    }
    let size = el
        .attr("size")
        .ok_or_else(|| bad("the request needs a size"))?;
    let size: u64 = size
        .parse()
        .ok()
        .filter(|_| size.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            StanzaError::new(StanzaCondition::NotAcceptable)
                .with_text("the size must be a whole number of bytes")
        })?;
    let content_type = match el.attr("content-type") {
        None | Some("") => "application/octet-stream".to_owned(),
        Some(t) => {
            let t = t.trim().to_ascii_lowercase();
            if !is_mime_type(&t) {
                return Err(bad("the content-type is not a MIME type (type/subtype)"));
            }
            t
        }
    };
    Ok(SlotRequest {
        filename: filename.to_owned(),
        size,
        content_type,
    })
}

/// A name a file could have in any file system a phone saves it to: not empty, not a
/// path, no control characters, not `.` or `..`.
pub fn is_acceptable_filename(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILENAME_BYTES
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// `type/subtype` with RFC 6838 §4.2 name characters, no parameters.
pub fn is_mime_type(t: &str) -> bool {
    let name = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    matches!(t.split_once('/'), Some((a, b)) if name(a) && name(b))
}

/// Whether `allowed` (`[upload] allowed_types`) lets `content_type` in: empty allows
/// everything, `"image/*"` a whole type.
pub fn is_allowed_type(allowed: &[String], content_type: &str) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|a| match a.strip_suffix("/*") {
            Some(top) => content_type
                .split_once('/')
                .is_some_and(|(t, _)| t.eq_ignore_ascii_case(top)),
            None => a.eq_ignore_ascii_case(content_type),
        })
}

/// Why a slot is refused, before storage is asked (§4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over `max_file_size`: `not-acceptable` with `<file-too-large/>`.
    TooLarge { max: u64 },
    /// A type not in `allowed_types`.
    TypeNotAllowed,
    /// The account's quota would be passed: `resource-constraint`.
    Quota { quota: u64, used: u64 },
}

/// The rules of §4.1 for `req` from an account that already keeps `used` bytes.
pub fn check_request(cfg: &UploadConfig, req: &SlotRequest, used: u64) -> Result<(), Refusal> {
    if req.size > cfg.max_file_size {
        return Err(Refusal::TooLarge {
            max: cfg.max_file_size,
        });
    }
    if !is_allowed_type(&cfg.allowed_types, &req.content_type) {
        return Err(Refusal::TypeNotAllowed);
    }
    if used.saturating_add(req.size) > cfg.quota_bytes_per_account {
        return Err(Refusal::Quota {
            quota: cfg.quota_bytes_per_account,
            used,
        });
    }
    Ok(())
}

/// The `<error/>` element for a refusal (§4.1's examples).
pub fn refusal_error(r: &Refusal) -> Element {
    match r {
        Refusal::TooLarge { max } => {
            let mut e = StanzaError::new(StanzaCondition::NotAcceptable)
                .with_text(format!("the file is larger than {max} bytes"))
                .to_element();
            e.push_child(
                Element::new("file-too-large", NS)
                    .with_child(Element::new("max-file-size", NS).with_text(max.to_string())),
            );
            e
        }
        Refusal::TypeNotAllowed => StanzaError::new(StanzaCondition::NotAcceptable)
            .with_text("files of this type are not accepted here")
            .to_element(),
        Refusal::Quota { quota, used } => {
            let mut err = StanzaError::new(StanzaCondition::ResourceConstraint).with_text(format!(
                "quota reached: {used} of {quota} bytes are in use; old files expire"
            ));
            err.kind = ErrorType::Wait;
            err.to_element()
        }
    }
}

/// An iq error reply to `request` carrying `error` (an `<error/>` element).
pub fn error_reply(request: &Element, error: Element) -> Element {
    let mut reply = Element::new("iq", ns::CLIENT).with_attr("type", "error");
    for (from, to) in [("id", "id"), ("from", "to"), ("to", "from")] {
        if let Some(v) = request.attr(from) {
            reply.set_attr(to, v);
        }
    }
    reply.with_child(error)
}

/// Percent-encodes a file name for a URL path segment (RFC 3986 §2.3: only unreserved
/// characters stay as they are).
pub fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `<slot/>` answer (§4): where to PUT and where the file will be.
pub fn slot_element(base_url: &str, token: &str, filename: &str) -> Element {
    let url = format!(
        "{}/upload/{token}/{}",
        base_url.trim_end_matches('/'),
        encode_path_segment(filename)
    );
    Element::new("slot", NS)
        .with_child(Element::new("put", NS).with_attr("url", url.clone()))
        .with_child(Element::new("get", NS).with_attr("url", url))
}

/// The component's disco#info (§2, §3): `store/file`, the feature, and the XEP-0128
/// form with the largest file.
pub fn info_query(max_file_size: u64) -> Element {
    let mut q = crate::features::disco::info_query(
        Identity {
            category: "store",
            ty: "file",
            name: "HTTP File Upload",
        },
        &[ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING, NS],
        None,
    );
    q.push_child(
        Form::new(FormType::Result, NS)
            .field(Field::new("max-file-size", "text-single").value(max_file_size.to_string()))
            .to_element(),
    );
    q
}

/// A slot request on its way to the storage task.
pub struct SlotJob {
    /// The asking session (a local account's).
    pub from: FullJid,
    /// The iq, to answer.
    pub request: Element,
    pub slot: SlotRequest,
}

/// `upload.<domain>` in the router's domain table: answers disco and ping itself and
/// queues slot requests for the task that owns storage ([`files::serve_slots`]), since
/// a service must not block.
pub struct UploadService {
    jid: Jid,
    /// Only this domain's accounts get slots.
    host: Arc<str>,
    max_file_size: u64,
    queue: async_channel::Sender<SlotJob>,
}

impl UploadService {
    pub fn new(
        host: Arc<str>,
        max_file_size: u64,
        queue: async_channel::Sender<SlotJob>,
    ) -> Option<UploadService> {
        let jid = Jid::parse(&component_domain(&host)).ok()?;
        Some(UploadService {
            jid,
            host,
            max_file_size,
            queue,
        })
    }

    fn answer(&self, router: &Router, el: Element) {
        let to = el.attr("to").and_then(|t| Jid::parse(t).ok());
        let stanza = Stanza {
            kind: Kind::Iq,
            el,
            to,
        };
        // An iq is never stored offline: nothing comes back.
        let _ = router.route(Origin::Service(&self.jid), stanza);
    }
}

/// The component's domain for a host: `upload.<domain>`.
pub fn component_domain(host: &str) -> String {
    format!("upload.{host}")
}

impl Service for UploadService {
    fn receive(&self, router: &Router, origin: Origin<'_>, stanza: Stanza) {
        let fail = |cond: StanzaCondition, text: &str| {
            if let Some(reply) = stanza.error_reply(StanzaError::new(cond).with_text(text)) {
                self.answer(router, reply);
            }
        };
        match stanza.kind {
            Kind::Presence => return,
            Kind::Message => {
                return fail(
                    StanzaCondition::ServiceUnavailable,
                    "the upload service takes no messages",
                );
            }
            Kind::Iq => {}
        }
        let Some(ty @ (IqType::Get | IqType::Set)) = stanza.iq_type() else {
            return; // Answers are never answered (RFC 6120 §8.2.3).
        };
        let Some(payload) = stanza.iq_payload() else {
            return fail(StanzaCondition::BadRequest, "an iq request needs a payload");
        };
        match (ty, payload.name(), payload.ns()) {
            (IqType::Get, "query", ns::DISCO_INFO) if payload.attr("node").is_none() => {
                let r = stanza.iq_result(Some(info_query(self.max_file_size)));
                self.answer(router, r);
            }
            (IqType::Get, "query", ns::DISCO_ITEMS) => {
                let r = stanza.iq_result(Some(Element::new("query", ns::DISCO_ITEMS)));
                self.answer(router, r);
            }
            (IqType::Get, "ping", ns::PING) => self.answer(router, stanza.iq_result(None)),
            (IqType::Get, "request", NS) => {
                let from = match origin {
                    Origin::Local(f) if f.domain() == &*self.host => f.clone(),
                    _ => {
                        return fail(
                            StanzaCondition::Forbidden,
                            "only this server's accounts may upload here",
                        );
                    }
                };
                let slot = match parse_request(payload) {
                    Ok(s) => s,
                    Err(e) => {
                        if let Some(r) = stanza.error_reply(e) {
                            self.answer(router, r);
                        }
                        return;
                    }
                };
                let job = SlotJob {
                    from,
                    request: stanza.el.clone(),
                    slot,
                };
                if self.queue.try_send(job).is_err() {
                    fail(
                        StanzaCondition::ResourceConstraint,
                        "too many upload requests at once; try again",
                    );
                }
            }
            _ => fail(
                StanzaCondition::ServiceUnavailable,
                "the upload service does not answer this",
            ),
        }
    }
}

/// The module: the specifications, the component in the server's disco#items, and the
/// removal of an account's files.
pub struct Upload {
    enabled: bool,
}

impl Upload {
    pub fn new(cfg: &UploadConfig) -> Upload {
        Upload {
            enabled: cfg.enabled,
        }
    }
}

impl Module for Upload {
    fn name(&self) -> &'static str {
        "upload"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Xep(363),
                title: "HTTP File Upload",
                version: "1.1.0",
                status: Status::Complete,
                note: "`upload.<domain>` on hearth's HTTPS listener (port 5443); quota, expiry",
            },
            Spec {
                doc: Doc::Xep(156),
                title: "Discovering Alternative XMPP Connection Methods",
                version: "1.4.0",
                status: Status::Partial,
                note: "host-meta (XRD) and host-meta.json on the HTTPS listener, naming the RFC 7395 WebSocket endpoints (the HTTPS listener's first, then the `[websocket]` ports); no BOSH",
            },
        ]
    }

    fn hooks(&self) -> &'static [Hook] {
        &[Hook::AccountRemoved]
    }

    fn disco_items<'a>(&'a self, cx: &'a IqCx<'a>) -> HookFuture<'a, Vec<Element>> {
        let items = if self.enabled && *cx.target == Target::Server {
            vec![
                Element::new("item", ns::DISCO_ITEMS)
                    .with_attr("jid", component_domain(cx.domain()))
                    .with_attr("name", "HTTP File Upload"),
            ]
        } else {
            Vec::new()
        };
        Box::pin(std::future::ready(items))
    }

    fn account_removed<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        account: &'a BareJid,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let Some(user) = account.local().map(str::to_owned) else {
                return;
            };
            let storage = cx.im.storage.clone();
            let dir = files::uploads_dir(storage.path());
            let removed = storage
                .run_blocking(move |s| {
                    use store::UploadStore as _;
                    let tokens = s.upload_delete_account(&user)?;
                    for t in &tokens {
                        files::remove_file(&dir, t);
                    }
                    Ok(tokens.len())
                })
                .await;
            match removed {
                Ok(n) => log::info!("upload: {n} file(s) of {account} removed with it"),
                Err(e) => log::warn!("upload: files of {account} not removed: {e}"),
            }
        })
    }
}

#[cfg(test)]
mod tests;
