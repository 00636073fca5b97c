//! Noticing membership changes and telling the members' online clients.
//!
//! The household is changed by `hearth household add|remove`, a separate process on the
//! same database, or by an invite; the server notices by reading the members every
//! [`POLL`] (a one-table read of a few rows: nothing is written, so the SD card is not
//! worn) and then, for every pair of members that starts or stops sharing the household,
//! does what a subscription change does: a roster push to each side's interested
//! resources with the item as the roster view now shows it (RFC 6121 §2.1.6: the item
//! with `subscription='both'`, or its removal, or the user's own item as stored), then
//! presence: each side's current presence to the other (§3.1.5), or unavailable from
//! each available resource (§3.2.2) unless a subscription of their own still lets it
//! through. Blocking (XEP-0191) wins both ways: nothing flows between a pair where either
//! blocked the other.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::features::household::Household as _;
use crate::features::subscription::PresenceFlow;
use crate::jid::BareJid;
use crate::router::im::{Im, on_pool};

/// What hears of the household's changes ([`watch`]): given who joined and who left.
pub type Follower<'a> = dyn Fn(Vec<String>, Vec<String>) -> Following<'a> + Sync + 'a;

/// What a [`Follower`] does about one change.
pub type Following<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// How often the running server reads the members.
pub const POLL: Duration = Duration::from_secs(2);

/// The members last seen, to compare the next read with.
pub struct Watcher {
    known: Vec<String>,
}

impl Watcher {
    /// A watcher that takes the household as it is now as known: at start-up nobody is
    /// online to be told anything.
    pub async fn start(im: Im<'_>) -> Watcher {
        let known = on_pool(im.storage, |s| s.household_members())
            .await
            .unwrap_or_else(|e| {
                log::error!("household: storage: {e}");
                Vec::new()
            });
        Watcher { known }
    }

    /// The members as last read.
    pub fn members(&self) -> &[String] {
        &self.known
    }

    /// Reads the members and acts on what changed since the last read; returns who
    /// joined and who left. A failed read changes nothing; the next one tries again.
    pub async fn check(&mut self, im: Im<'_>) -> (Vec<String>, Vec<String>) {
        let now = match on_pool(im.storage, |s| s.household_members()).await {
            Ok(now) => now,
            Err(e) => {
                log::error!("household: storage: {e}");
                return Default::default();
            }
        };
        if now == self.known {
            return Default::default();
        }
        let before = std::mem::replace(&mut self.known, now);
        changed(im, &before, &self.known).await;
        let joined = self
            .known
            .iter()
            .filter(|m| !before.contains(m))
            .cloned()
            .collect();
        let left = before
            .into_iter()
            .filter(|m| !self.known.contains(m))
            .collect();
        (joined, left)
    }
}

/// Runs forever: a [`Watcher`] checking every `every` — but reading the members only
/// when the database file changed since the last read (its and its WAL's size and time,
/// one `stat` each). An idle server so does no storage work at all, and its storage pool
/// lets its threads go (DESIGN.md: an idle server holds no threads it does not need).
///
/// `followers` hear of every change as (joined, left) — at start, every member as
/// joined — after the members' clients were told: the household's group chat room
/// follows it this way.
pub async fn watch(im: Im<'_>, every: Duration, followers: &Follower<'_>) {
    let mut w = Watcher::start(im).await;
    if !w.members().is_empty() {
        followers(w.members().to_vec(), Vec::new()).await;
    }
    let path = im.storage.path().to_owned();
    let mut stamp = db_stamp(&path);
    loop {
        smol::Timer::after(every).await;
        // Taken before the read: a change after it shows in the next stamp.
        let now = db_stamp(&path);
        if now.is_some() && now == stamp {
            continue;
        }
        stamp = now;
        let (joined, left) = w.check(im).await;
        if !joined.is_empty() || !left.is_empty() {
            followers(joined, left).await;
        }
    }
}

/// Size and modification time of the database file and its write-ahead log (where
/// every commit lands first); `None` when they cannot be read (then the members are
/// read every time).
fn db_stamp(db: &std::path::Path) -> Option<[(u64, std::time::SystemTime); 2]> {
    let stat = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    };
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    // No WAL file (before the first write, or after a clean close) reads as empty.
    let wal = stat(std::path::Path::new(&wal)).unwrap_or((0, std::time::UNIX_EPOCH));
    Some([stat(db)?, wal])
}

/// The household went from `before` to `after` (both sorted): pushes and presence for
/// every pair of members that started or stopped sharing it.
async fn changed(im: Im<'_>, before: &[String], after: &[String]) {
    let joined: Vec<&String> = after.iter().filter(|m| !before.contains(m)).collect();
    let left: Vec<&String> = before.iter().filter(|m| !after.contains(m)).collect();
    log::info!("household: {} joined, {} left", joined.len(), left.len());
    let mut everyone: Vec<&String> = before.iter().chain(after).collect();
    everyone.sort();
    everyone.dedup();
    for (i, a) in everyone.iter().enumerate() {
        for b in everyone.iter().skip(i + 1) {
            let was = before.contains(a) && before.contains(b);
            let is = after.contains(a) && after.contains(b);
            if was != is {
                pair(im, a, b, is).await;
            }
        }
    }
}

/// `a` and `b` started (`joined`) or stopped sharing the household.
async fn pair(im: Im<'_>, a: &str, b: &str, joined: bool) {
    let (Ok(a_jid), Ok(b_jid)) = (
        BareJid::new(Some(a), im.router.domain()),
        BareJid::new(Some(b), im.router.domain()),
    ) else {
        return;
    };
    // §2.1.6 first, so a client knows the contact before its presence arrives (§3.1.5).
    im.push_view(a, &b_jid).await;
    im.push_view(b, &a_jid).await;
    // XEP-0191: checks both blocklists.
    if !im.presence_allowed(a, &b_jid).await {
        return;
    }
    for (owner, contact) in [(a, &b_jid), (b, &a_jid)] {
        if joined {
            im.presence_flow(owner, contact, PresenceFlow::Start).await;
        } else if !im.still_sees(owner, contact).await {
            im.presence_flow(owner, contact, PresenceFlow::Stop).await;
        }
    }
}
