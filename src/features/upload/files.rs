//! XEP-0363's files on disk: slots given (§4), the PUT written streaming to
//! `uploads/<token>.part` and renamed to `uploads/<token>` when complete, the GET read
//! back a chunk at a time, and the sweep that expires them. Protocol-agnostic: the HTTP
//! listener (`net::http`) maps requests and answers onto these calls.
//!
//! File I/O runs on a small pool of its own (never on the executor, never on
//! `smol::unblock`'s hundreds of threads), one chunk per job: an upload holds at most
//! one chunk in memory (hyper's read buffer, at most [`CHUNK_BYTES`]-ish), a download
//! [`READ_AHEAD`] chunks.

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::store::{NewSlot, UploadRow, UploadStore as _};
use super::{
    Refusal, SLOT_LIFETIME_SECS, SlotJob, UploadConfig, check_request, error_reply, refusal_error,
    slot_element,
};
use crate::jid::Jid;
use crate::pool::{Pool, PoolConfig};
use crate::router::{Origin, Router};
use crate::stanza::{Kind, Stanza, StanzaCondition, StanzaError};
use crate::storage::{Storage, StorageError, unix_now};

/// The most a download reads from the file at once.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks a download reads ahead of what the connection has written.
pub const READ_AHEAD: usize = 2;

/// The folder beside the database that holds the files.
pub const DIR: &str = "uploads";

/// `<data_dir>/uploads` for the database file `db`.
pub fn uploads_dir(db: &Path) -> PathBuf {
    db.parent().unwrap_or(Path::new(".")).join(DIR)
}

/// An HTTP answer other than success: the status and a short reason for the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub reason: &'static str,
}

impl Failure {
    const fn new(status: u16, reason: &'static str) -> Failure {
        Failure { status, reason }
    }
}

const NOT_FOUND: Failure = Failure::new(404, "no such file");
const INTERNAL: Failure = Failure::new(500, "the server could not store or read the file");
const DISK_FULL: Failure = Failure::new(507, "the server's disk is full");

/// A write error as HTTP sees it: a full disk (or quota) is 507 (RFC 4918 §11.5).
fn write_failure(e: &std::io::Error) -> Failure {
    // ENOSPC and EDQUOT on Linux.
    if e.kind() == std::io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(28 | 122)) {
        DISK_FULL
    } else {
        INTERNAL
    }
}

/// A token as the slots are given: 32 lowercase hex digits (and nothing a path could
/// misread).
pub fn is_token(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn new_token() -> Option<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Removes `token`'s file and any partial upload of it; a file already gone is fine.
pub fn remove_file(dir: &Path, token: &str) {
    if !is_token(token) {
        return;
    }
    for name in [token.to_owned(), format!("{token}.part")] {
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!(
                "upload: cannot remove {}…: {e}",
                name.get(..8).unwrap_or("")
            ),
        }
    }
}

/// `Content-Disposition` for a served file (RFC 6266 §4): `inline` for images a browser
/// shows safely (not SVG, which can carry script), `attachment` otherwise; the name as
/// an ASCII `filename` and the exact one as RFC 8187 `filename*`.
pub fn content_disposition(filename: &str, content_type: &str) -> String {
    let inline = content_type.starts_with("image/") && content_type != "image/svg+xml";
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut ext = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            ext.push(char::from(b));
        } else {
            ext.push_str(&format!("%{b:02X}"));
        }
    }
    let kind = if inline { "inline" } else { "attachment" };
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{ext}")
}

/// The upload side of the server, shared by the slot task and the HTTP listener.
pub struct Uploads {
    pub cfg: UploadConfig,
    /// `<data_dir>/uploads`.
    pub dir: PathBuf,
    /// What slot URLs start with: `https://<domain>:5443` or `[http] public_url`.
    pub base_url: String,
    storage: Storage,
    /// Threads for file I/O.
    io: Pool,
    /// Tokens with a PUT in progress: a second PUT is refused, the sweep leaves them.
    busy: Mutex<HashSet<String>>,
}

impl Uploads {
    /// Creates `dir` (mode 0700) if needed.
    pub fn new(
        cfg: UploadConfig,
        storage: Storage,
        base_url: String,
    ) -> std::io::Result<Arc<Uploads>> {
        let dir = uploads_dir(storage.path());
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir)?;
        Ok(Arc::new(Uploads {
            cfg,
            dir,
            base_url: base_url.trim_end_matches('/').to_owned(),
            storage,
            io: Pool::new(PoolConfig {
                name: "hearth-files",
                threads: 2,
                queue: 64,
                idle_exit: Duration::from_secs(30),
            }),
            busy: Mutex::new(HashSet::new()),
        }))
    }

    fn busy(&self) -> MutexGuard<'_, HashSet<String>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn file_io<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Failure> {
        self.io.run(f).await.map_err(|_| INTERNAL)
    }

    /// §4: gives `job`'s account a slot, or says why not; the answer as an iq.
    pub async fn slot(&self, job: &SlotJob) -> Result<String, Element> {
        let refuse = |r: &Refusal| refusal_error(r);
        check_request(&self.cfg, &job.slot, 0).map_err(|r| refuse(&r))?;
        let internal = || {
            StanzaError::new(StanzaCondition::InternalServerError)
                .with_text("the upload service could not store the slot")
                .to_element()
        };
        let token = new_token().ok_or_else(internal)?;
        let row = UploadRow {
            token: token.clone(),
            localpart: job.from.local().unwrap_or_default().to_owned(),
            filename: job.slot.filename.clone(),
            size: job.slot.size,
            content_type: job.slot.content_type.clone(),
            stored: None,
            expires: None,
            created: unix_now(),
        };
        let quota = self.cfg.quota_bytes_per_account;
        let given = self
            .storage
            .run_blocking(move |s| s.upload_new_slot(&row, quota))
            .await;
        match given {
            Ok(NewSlot::Given) => Ok(token),
            Ok(NewSlot::OverQuota { used }) => Err(refuse(&Refusal::Quota { quota, used })),
            Ok(NewSlot::NoAccount) => Err(StanzaError::new(StanzaCondition::Forbidden)
                .with_text("no such account")
                .to_element()),
            Err(e) => {
                log::warn!("upload: slot for {}: {e}", job.from);
                Err(internal())
            }
        }
    }

    /// Starts the PUT of `token`: the slot must exist, be unused and not expired, and
    /// the request must declare its size (`Content-Length`, the slot's) and, if it names
    /// one, the slot's type.
    pub async fn begin_put(
        self: &Arc<Self>,
        token: &str,
        content_length: Option<u64>,
        content_type: Option<&str>,
    ) -> Result<PutFile, Failure> {
        if !is_token(token) {
            return Err(Failure::new(403, "not an upload slot"));
        }
        let t = token.to_owned();
        let row = self
            .storage
            .run_blocking(move |s| s.upload_get(&t))
            .await
            .map_err(|_| INTERNAL)?
            .ok_or(Failure::new(403, "not an upload slot (or it expired)"))?;
        if row.stored.is_some() {
            return Err(Failure::new(409, "this slot was used already"));
        }
        if row.created < unix_now() - SLOT_LIFETIME_SECS {
            return Err(Failure::new(403, "the upload slot expired"));
        }
        match content_length {
            None => return Err(Failure::new(411, "Content-Length is required")),
            Some(n) if n > row.size => {
                return Err(Failure::new(413, "larger than the slot's size"));
            }
            Some(n) if n != row.size => {
                return Err(Failure::new(400, "Content-Length is not the slot's size"));
            }
            Some(_) => {}
        }
        if let Some(ct) = content_type {
            let ct = ct.split(';').next().unwrap_or("").trim();
            if !ct.eq_ignore_ascii_case(&row.content_type)
                && row.content_type != "application/octet-stream"
            {
                return Err(Failure::new(400, "Content-Type is not the slot's"));
            }
        }
        if !self.busy().insert(token.to_owned()) {
            return Err(Failure::new(409, "this slot is being uploaded already"));
        }
        let mut put = PutFile {
            uploads: self.clone(),
            token: token.to_owned(),
            file: None,
            pending: Vec::new(),
            size: row.size,
            written: 0,
            done: false,
        };
        let path = self.dir.join(format!("{token}.part"));
        let file = self
            .file_io(move || {
                let mut o = std::fs::OpenOptions::new();
                o.write(true).create(true).truncate(true);
                std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                o.open(path)
            })
            .await?
            .map_err(|e| write_failure(&e))?;
        put.file = Some(file);
        Ok(put)
    }

    /// Opens `token`'s file for a GET.
    pub async fn open_get(&self, token: &str) -> Result<Download, Failure> {
        if !is_token(token) {
            return Err(NOT_FOUND);
        }
        let t = token.to_owned();
        let row = self
            .storage
            .run_blocking(move |s| s.upload_get(&t))
            .await
            .map_err(|_| INTERNAL)?
            .ok_or(NOT_FOUND)?;
        if row.stored.is_none() || row.expires.is_some_and(|e| e <= unix_now()) {
            return Err(NOT_FOUND);
        }
        let path = self.dir.join(token);
        let (file, len) = self
            .file_io(move || {
                let f = std::fs::File::open(path)?;
                let len = f.metadata()?.len();
                Ok::<_, std::io::Error>((f, len))
            })
            .await?
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    NOT_FOUND
                } else {
                    INTERNAL
                }
            })?;
        Ok(Download {
            file: Arc::new(file),
            len,
            row,
        })
    }

    /// Reads up to `max` bytes of `file` at `offset`.
    pub async fn read_at(
        &self,
        file: &Arc<std::fs::File>,
        offset: u64,
        max: usize,
    ) -> std::io::Result<Vec<u8>> {
        let f = file.clone();
        self.io
            .run(move || {
                let mut buf = vec![0u8; max];
                let n = f.read_at(&mut buf, offset)?;
                buf.truncate(n);
                Ok(buf)
            })
            .await
            .map_err(std::io::Error::other)?
    }

    /// Deletes what expired: files past `expire_after_secs`, slots never used within
    /// [`SLOT_LIFETIME_SECS`], and files no row names (their account was deleted by
    /// `hearth user del`, or the server stopped mid-upload). Returns how many went.
    pub async fn sweep(self: &Arc<Self>) -> Result<usize, StorageError> {
        let now = unix_now();
        let keep: Vec<String> = self.busy().iter().cloned().collect();
        let tokens = self
            .storage
            .run_blocking(move |s| s.upload_expire(now, now - SLOT_LIFETIME_SECS, &keep))
            .await?;
        let mut n = tokens.len();
        let dir = self.dir.clone();
        let storage = self.storage.clone();
        let this = self.clone();
        let orphans = self
            .io
            .run(move || {
                for t in &tokens {
                    remove_file(&dir, t);
                }
                let mut orphans = 0;
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    return orphans;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    let token = name.strip_suffix(".part").unwrap_or(name);
                    // Asked now, not before the scan: a PUT may have begun meanwhile.
                    if !is_token(token) || this.busy().contains(token) {
                        continue;
                    }
                    // A partial file not in progress is a PUT that never finished.
                    let stale =
                        name.ends_with(".part") || !storage.upload_exists(token).unwrap_or(true);
                    if stale && std::fs::remove_file(entry.path()).is_ok() {
                        orphans += 1;
                    }
                }
                orphans
            })
            .await
            .unwrap_or(0);
        n += orphans;
        Ok(n)
    }

    /// How often [`Uploads::sweep`] runs: a quarter of the expiry, at most every few
    /// minutes (unused slots), at least every second.
    pub fn sweep_interval(&self) -> Duration {
        let secs = match self.cfg.expire_after_secs {
            0 => 300,
            e => (e / 4).clamp(1, 300),
        };
        Duration::from_secs(secs)
    }

    /// Sweeps forever.
    pub async fn sweep_forever(self: Arc<Self>) {
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => log::info!("upload: {n} expired file(s) or slot(s) removed"),
                Err(e) => log::warn!("upload: sweep failed: {e}"),
            }
            smol::Timer::after(self.sweep_interval()).await;
        }
    }

    /// Answers slot requests from `rx` until it closes: a slot, or the error (§4.1).
    pub async fn serve_slots(
        self: Arc<Self>,
        router: &Router,
        rx: async_channel::Receiver<SlotJob>,
    ) {
        let host = router.domain().to_owned();
        let Ok(me) = Jid::parse(&super::component_domain(&host)) else {
            return;
        };
        while let Ok(job) = rx.recv().await {
            let reply = match self.slot(&job).await {
                Ok(token) => {
                    log::debug!("upload: slot for {} ({} bytes)", job.from, job.slot.size);
                    let request = Stanza {
                        kind: Kind::Iq,
                        el: job.request.clone(),
                        to: None,
                    };
                    request.iq_result(Some(slot_element(
                        &self.base_url,
                        &token,
                        &job.slot.filename,
                    )))
                }
                Err(error) => error_reply(&job.request, error),
            };
            let to = reply.attr("to").and_then(|t| Jid::parse(t).ok());
            let _ = router.route(
                Origin::Service(&me),
                Stanza {
                    kind: Kind::Iq,
                    el: reply,
                    to,
                },
            );
        }
    }
}

use crate::xml::Element;

/// How much of an upload's body is gathered before it is written (one file-thread trip).
const WRITE_BATCH: usize = 256 * 1024;

/// A PUT in progress. Dropped unfinished (a refusal, a broken connection), it removes
/// its partial file: nothing half-stored is left.
pub struct PutFile {
    uploads: Arc<Uploads>,
    token: String,
    file: Option<std::fs::File>,
    /// Received, not written yet: the body's frames (16 KiB or less each) gathered to
    /// [`WRITE_BATCH`] so the file thread is asked once per batch, not once per frame.
    pending: Vec<u8>,
    size: u64,
    written: u64,
    done: bool,
}

impl PutFile {
    /// Appends `data`; past the declared size the upload is refused (413). Written to
    /// the file a batch at a time ([`WRITE_BATCH`]): at most that much of an upload is
    /// in memory.
    pub async fn write(&mut self, data: bytes::Bytes) -> Result<(), Failure> {
        let len = data.len() as u64;
        if self.written.saturating_add(len) > self.size {
            return Err(Failure::new(413, "more data than the slot's size"));
        }
        self.written += len;
        if self.pending.is_empty() && data.len() >= WRITE_BATCH {
            return self.write_out(data.to_vec()).await;
        }
        self.pending.extend_from_slice(&data);
        if self.pending.len() >= WRITE_BATCH {
            let batch = std::mem::take(&mut self.pending);
            return self.write_out(batch).await;
        }
        Ok(())
    }

    /// Writes `batch` on a file thread; the buffer comes back for the next batch.
    async fn write_out(&mut self, batch: Vec<u8>) -> Result<(), Failure> {
        let Some(mut f) = self.file.take() else {
            return Err(INTERNAL);
        };
        let (f, mut batch, r) = self
            .uploads
            .file_io(move || {
                let r = f.write_all(&batch);
                (f, batch, r)
            })
            .await?;
        r.map_err(|e| {
            log::warn!(
                "upload: writing {}…: {e}",
                self.token.get(..8).unwrap_or("")
            );
            write_failure(&e)
        })?;
        self.file = Some(f);
        if self.pending.is_empty() {
            batch.clear();
            self.pending = batch;
        }
        Ok(())
    }

    /// Completes the upload: exactly the declared size, synced to the disk, renamed into
    /// place and marked stored (its expiry starts now).
    pub async fn finish(mut self) -> Result<(), Failure> {
        if self.written != self.size {
            return Err(Failure::new(400, "less data than the slot's size"));
        }
        if !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            self.write_out(batch).await?;
        }
        let Some(f) = self.file.take() else {
            return Err(INTERNAL);
        };
        let dir = self.uploads.dir.clone();
        let token = self.token.clone();
        self.uploads
            .file_io(move || {
                f.sync_all()?;
                drop(f);
                std::fs::rename(dir.join(format!("{token}.part")), dir.join(&token))?;
                std::fs::File::open(&dir)?.sync_all()
            })
            .await?
            .map_err(|e| write_failure(&e))?;
        let now = unix_now();
        let expires = match self.uploads.cfg.expire_after_secs {
            0 => None,
            s => Some(now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX))),
        };
        let t = self.token.clone();
        let marked = self
            .uploads
            .storage
            .run_blocking(move |s| s.upload_stored(&t, now, expires))
            .await;
        match marked {
            Ok(true) => {
                self.done = true;
                Ok(())
            }
            Ok(false) => Err(Failure::new(410, "the slot expired during the upload")),
            Err(e) => {
                log::warn!("upload: {}…: {e}", self.token.get(..8).unwrap_or(""));
                Err(INTERNAL)
            }
        }
    }
}

impl Drop for PutFile {
    fn drop(&mut self) {
        self.uploads.busy().remove(&self.token);
        if !self.done {
            drop(self.file.take());
            remove_file(&self.uploads.dir, &self.token);
        }
    }
}

/// A stored file opened for a GET.
pub struct Download {
    pub file: Arc<std::fs::File>,
    pub len: u64,
    pub row: UploadRow,
}
