//! argon2id password checks for SASL PLAIN (RFC 4616, offered only inside TLS), and the
//! service that bounds them (DESIGN.md "Numbers it is built to": "a fixed number of
//! argon2id checks at once, the rest queued or refused, their memory reused").
//!
//! A check is the one expensive thing a stranger can make the server do: 19 MiB of memory
//! and tens of milliseconds of a core (hundreds on a Pi), also for names that do not exist
//! (they are checked against [`DUMMY_HASH`], so timing does not tell which names exist).
//! [`PasswordChecks`] runs them on `[auth] password_checks_at_once` threads with
//! `[auth] password_check_queue` places in front; a check past those is refused at once,
//! and the login gets `<temporary-auth-failure/>` (RFC 6120 §6.5.8) without any hashing.
//!
//! Memory: each checking thread keeps one argon2 work area and reuses it for every check;
//! the thread ends after [`IDLE_EXIT`] without checks, and its work area goes back to the
//! OS with it. The area is reserved larger than glibc's largest mmap threshold, so it is
//! always its own mapping, unmapped on free, and the reserve beyond what argon2 touches
//! never becomes resident (see [`ALWAYS_MAPPED_BYTES`]).
//!
//! Storage only hands back the stored PHC string (`Accounts::password_hash`); hashing
//! never runs under the database lock or on the storage threads.
//!
//! What is stored for a new password is derived here too ([`Credentials`]): the argon2id
//! PHC string and the SCRAM keys (RFC 5802 §3); storage only stores what it is given.

use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::pool::{Pool, PoolConfig, PoolError};
use crate::stream::sasl::{ScramCredentials, ScramHash, prepare_password, random_salt};

/// argon2id memory cost in KiB: 19 MiB. With [`ARGON2_T_COST`] = 2 and [`ARGON2_P_COST`] = 1
/// this is OWASP's first recommended argon2id setting (Password Storage Cheat Sheet), and the
/// `argon2` crate's default. Stored hashes carry their own parameters, so changing these later
/// does not break existing accounts.
pub const ARGON2_M_COST_KIB: u32 = 19 * 1024;
/// argon2id passes over memory; see [`ARGON2_M_COST_KIB`].
pub const ARGON2_T_COST: u32 = 2;
/// argon2id lanes: one, since a Pi has few cores and they serve other logins meanwhile.
pub const ARGON2_P_COST: u32 = 1;

/// Random salt length (RFC 4086 randomness from the OS).
const SALT_LEN: usize = 16;

/// Checked instead of a real hash when the user does not exist, so that a PLAIN attempt for an
/// unknown name costs the same argon2 work and does not reveal which names exist. A hash of a
/// random password nobody knows, with the current parameters (a test checks they match).
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$f7W9wxp07qjoKTRFIPBZEA$\
    LUQN0wc8zzAj7lkPonbdbQyLPm8etGdr/SA9lDAhC38";

/// A checking thread with no check to do for this long ends, and its 19 MiB go back to the
/// OS: an idle server stays small, while a burst of logins (a household after a reboot)
/// reuses one work area per thread.
pub const IDLE_EXIT: Duration = Duration::from_secs(10);

/// The work area is reserved at least this large. glibc serves an allocation from its own
/// `mmap` only above a threshold that it raises after each such block is freed, up to
/// `DEFAULT_MMAP_THRESHOLD_MAX` (32 MiB on 64-bit, 512 KiB on 32-bit). A freed 19 MiB
/// mapping would raise it to 19 MiB, the next 19 MiB would come from a malloc arena, and
/// arenas keep freed memory. Above 32 MiB the area is always mapped and unmapped on free;
/// the 14 MiB beyond what argon2 touches are address space only, never resident.
const ALWAYS_MAPPED_BYTES: usize = 33 << 20;

/// A stored hash asking for more memory than this is refused as unreadable, not obeyed:
/// 256 MiB is half a Pi Zero 2 W.
const MAX_M_COST_KIB: usize = 256 * 1024;

/// Why a password could not be checked (a wrong password is `Ok(false)`, not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordError {
    /// Every checking thread is busy and the queue is full: try again later.
    Busy,
    /// The stored hash is unreadable, or argon2 or the random generator failed.
    Crypto(String),
    /// A new password that cannot be stored: empty, or refused by PRECIS OpaqueString
    /// (RFC 8265 §4.2).
    Invalid(String),
}

impl fmt::Display for PasswordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordError::Busy => f.write_str("too many password checks waiting"),
            PasswordError::Crypto(e) => write!(f, "password hashing: {e}"),
            PasswordError::Invalid(why) => write!(f, "invalid password: {why}"),
        }
    }
}

impl std::error::Error for PasswordError {}

/// How many checks run and wait (`[auth]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCheckConfig {
    /// Checks running at once, each on its own thread with its own 19 MiB.
    pub at_once: usize,
    /// Checks accepted and waiting for a thread; more are refused.
    pub queue: usize,
}

/// The bounded argon2id checking service; cheap to clone.
#[derive(Clone)]
pub struct PasswordChecks {
    pool: Pool,
}

impl PasswordChecks {
    pub fn new(config: PasswordCheckConfig) -> PasswordChecks {
        PasswordChecks {
            pool: Pool::new(PoolConfig {
                name: "hearth-password",
                threads: config.at_once,
                queue: config.queue,
                idle_exit: IDLE_EXIT,
            }),
        }
    }

    /// Checks `password` against `stored` (the account's PHC string, `None` for no such
    /// account: then [`DUMMY_HASH`] is checked and the answer is `false`). Refused with
    /// [`PasswordError::Busy`] at once when the queue is full; dropping the future before
    /// its turn means no hashing is done for it.
    pub async fn check(
        &self,
        stored: Option<String>,
        password: String,
    ) -> Result<bool, PasswordError> {
        let work = self
            .pool
            .try_run(move || verify(stored.as_deref(), &password))
            .map_err(|_| PasswordError::Busy)?;
        match work.await {
            Ok(result) => result,
            Err(PoolError::Busy) => Err(PasswordError::Busy),
            Err(PoolError::Failed) => Err(PasswordError::Crypto("the check failed".into())),
        }
    }

    /// Derives what is stored for a new password ([`Credentials::derive`]: one argon2id
    /// hash, the same work as a check) on the same bounded threads, so a stranger
    /// registering accounts (XEP-0077), a user changing a password or an admin adding one
    /// (XEP-0133) costs no more than a login: [`PasswordError::Busy`] at once when the
    /// queue is full.
    pub async fn derive(
        &self,
        password: String,
        scram_keys: bool,
    ) -> Result<Credentials, PasswordError> {
        let work = self
            .pool
            .try_run(move || Credentials::derive(&password, scram_keys))
            .map_err(|_| PasswordError::Busy)?;
        match work.await {
            Ok(result) => result,
            Err(PoolError::Busy) => Err(PasswordError::Busy),
            Err(PoolError::Failed) => Err(PasswordError::Crypto("the derivation failed".into())),
        }
    }

    /// Checking threads alive now.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }
}

/// Checks `password` against `stored` on the calling thread (see [`PasswordChecks::check`]).
/// The password is PRECIS-prepared first (RFC 8265 §4.2); one PRECIS refuses can never have
/// been stored, and refusing it early reveals nothing about the user, since it is decided
/// before the stored hash is looked at.
pub fn verify(stored: Option<&str>, password: &str) -> Result<bool, PasswordError> {
    let Ok(prepared) = prepare_password(password) else {
        return Ok(false);
    };
    match stored {
        Some(phc) => verify_prepared(phc, &prepared),
        None => {
            // Same work as a real check, result ignored: see DUMMY_HASH.
            let _ = verify_prepared(DUMMY_HASH, &prepared);
            Ok(false)
        }
    }
}

/// A new argon2id PHC string for an already PRECIS-prepared password, with the current
/// parameters and a fresh salt.
pub fn hash(prepared: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt)
        .map_err(|e| PasswordError::Crypto(format!("no randomness from the OS: {e}")))?;
    let params =
        Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None).map_err(crypto)?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(prepared.as_bytes(), &salt, &mut out, memory)
    })?
    .map_err(crypto)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(crypto)?,
        salt: Some(salt.as_slice().try_into().map_err(crypto)?),
        hash: Some(Output::new(&out).map_err(crypto)?),
    };
    Ok(phc.to_string())
}

/// PBKDF2 iterations for new SCRAM keys: RFC 7677 §4 asks for at least 4096, and clients
/// must recompute them at every login (a phone, an ESP32), so no more.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// The hashes hearth keeps SCRAM keys for (RFC 5802, RFC 7677).
pub const SCRAM_HASHES: [ScramHash; 2] = [ScramHash::Sha1, ScramHash::Sha256];

/// Everything stored for one password (DESIGN.md "Credentials"), derived before storage
/// is touched: the password itself never reaches storage.
pub struct Credentials {
    /// argon2id PHC string of the PRECIS-prepared password, for PLAIN.
    pub phc: String,
    /// SCRAM keys (RFC 5802 §3) per hash, each with its own salt; empty when SCRAM keys
    /// are off.
    pub scram: Vec<(ScramHash, ScramCredentials)>,
}

impl Credentials {
    /// Derives what is stored for `password`: the argon2id hash and, when `scram_keys`,
    /// SaltedPassword → StoredKey and ServerKey for [`SCRAM_HASHES`] (PBKDF2 with
    /// [`SCRAM_ITERATIONS`] and a fresh salt each, RFC 5802 §3). Slow (argon2id): not for
    /// an async task.
    pub fn derive(password: &str, scram_keys: bool) -> Result<Credentials, PasswordError> {
        if password.is_empty() {
            return Err(PasswordError::Invalid("it is empty".into()));
        }
        let prepared =
            prepare_password(password).map_err(|e| PasswordError::Invalid(e.to_string()))?;
        let phc = hash(&prepared)?;
        let mut scram = Vec::new();
        if scram_keys {
            for h in SCRAM_HASHES {
                let salt = random_salt().map_err(|e| {
                    PasswordError::Crypto(format!("no randomness from the OS: {e}"))
                })?;
                let creds = ScramCredentials::derive(h, password, &salt, SCRAM_ITERATIONS)
                    .map_err(|e| PasswordError::Invalid(e.to_string()))?;
                scram.push((h, creds));
            }
        }
        Ok(Credentials { phc, scram })
    }
}

/// Checks a prepared password against a PHC string, with the parameters the string
/// carries, in this thread's reused work area.
fn verify_prepared(phc: &str, prepared: &str) -> Result<bool, PasswordError> {
    let unreadable =
        |e: &dyn fmt::Display| PasswordError::Crypto(format!("stored hash unreadable: {e}"));
    let parsed = PasswordHash::new(phc).map_err(|e| unreadable(&e))?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err(unreadable(&"no salt or no hash"));
    };
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).map_err(|e| unreadable(&e))?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| unreadable(&e))?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(|e| unreadable(&e))?;
    if params.block_count() > MAX_M_COST_KIB {
        return Err(unreadable(&"memory cost above 256 MiB"));
    }
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut buf = [0u8; Output::MAX_LENGTH];
    let out = buf
        .get_mut(..expected.len())
        .ok_or_else(|| unreadable(&"hash too long"))?;
    with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(prepared.as_bytes(), salt, &mut *out, memory)
    })?
    .map_err(crypto)?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(out).map_err(crypto)? == *expected)
}

fn crypto(e: impl fmt::Display) -> PasswordError {
    PasswordError::Crypto(e.to_string())
}

thread_local! {
    /// This thread's argon2 work area, kept between checks and freed when the thread ends.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `blocks` argon2 blocks of this thread's work area.
fn with_memory<R>(blocks: usize, f: impl FnOnce(&mut [Block]) -> R) -> Result<R, PasswordError> {
    MEMORY.with_borrow_mut(|memory| {
        if memory.capacity() < blocks {
            // Free the old area before mapping the new one.
            *memory = Vec::new();
            let reserve = blocks.max(ALWAYS_MAPPED_BYTES / Block::SIZE);
            memory.try_reserve_exact(reserve).map_err(|e| {
                PasswordError::Crypto(format!("no memory for argon2 ({blocks} KiB): {e}"))
            })?;
        }
        memory.resize(blocks, Block::new());
        Ok(f(&mut memory[..]))
    })
}

/// Frees this thread's work area now (for the admin CLI and tests; checking threads free
/// theirs when they end).
pub fn free_memory() {
    MEMORY.with_borrow_mut(|memory| *memory = Vec::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5802 §3: the stored keys are exactly SCRAM's derivation from the password, with
    /// a salt of their own per hash; nothing of the password is kept in clear.
    #[test]
    fn credentials_are_argon2id_and_scram_keys() {
        let c = Credentials::derive("pencil", true).unwrap();
        assert!(verify(Some(&c.phc), "pencil").unwrap());
        assert_eq!(
            c.scram.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
            SCRAM_HASHES
        );
        for (h, keys) in &c.scram {
            assert_eq!(keys.iterations, SCRAM_ITERATIONS);
            assert_eq!(keys.salt.len(), crate::stream::sasl::SALT_LEN);
            let expected =
                ScramCredentials::derive(*h, "pencil", &keys.salt, SCRAM_ITERATIONS).unwrap();
            assert!(*keys == expected, "{h:?}");
        }
        assert_ne!(c.scram[0].1.salt, c.scram[1].1.salt);

        let off = Credentials::derive("pencil", false).unwrap();
        assert!(off.scram.is_empty());
        assert!(matches!(
            Credentials::derive("", true),
            Err(PasswordError::Invalid(_))
        ));
        assert!(matches!(
            Credentials::derive("a\u{7}b", true),
            Err(PasswordError::Invalid(_))
        ));
    }

    #[test]
    fn hash_then_verify() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify(Some(&phc), "correct horse").unwrap());
        assert!(!verify(Some(&phc), "correct horse ").unwrap());
        assert!(!verify(None, "correct horse").unwrap());
    }

    #[test]
    fn verifies_hashes_made_by_the_argon2_crate() {
        // Hashes written before the work area was ours, with other parameters too.
        use argon2::password_hash::PasswordHasher as _;
        let params = Params::new(8 * 1024, 1, 1, None).unwrap();
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(b"pw", b"saltsaltsalt")
            .unwrap()
            .to_string();
        assert!(verify(Some(&other), "pw").unwrap());
        assert!(!verify(Some(&other), "pW").unwrap());
        // The work area grows back for the larger default after a smaller one.
        let phc = hash("pw").unwrap();
        assert!(verify(Some(&phc), "pw").unwrap());
        free_memory();
    }

    #[test]
    fn dummy_hash_has_current_parameters() {
        // If the parameters change, regenerate DUMMY_HASH so unknown users cost the same.
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        let params = Params::try_from(&parsed).unwrap();
        assert_eq!(params.m_cost(), ARGON2_M_COST_KIB);
        assert_eq!(params.t_cost(), ARGON2_T_COST);
        assert_eq!(params.p_cost(), ARGON2_P_COST);
        assert!(!verify_prepared(DUMMY_HASH, "anything").unwrap());
    }

    #[test]
    fn unreadable_hashes_are_errors_not_matches() {
        for bad in [
            "garbage",
            "$argon2id$v=19$m=19456,t=2,p=1$f7W9wxp07qjoKTRFIPBZEA",
            "$argon2id$v=19$m=4194304,t=2,p=1$f7W9wxp07qjoKTRFIPBZEA$\
             LUQN0wc8zzAj7lkPonbdbQyLPm8etGdr/SA9lDAhC38",
        ] {
            assert!(
                matches!(verify(Some(bad), "pw"), Err(PasswordError::Crypto(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn service_refuses_past_its_queue() {
        use smol::future::poll_once;
        let checks = PasswordChecks::new(PasswordCheckConfig {
            at_once: 1,
            queue: 1,
        });
        let phc = hash("pw").unwrap();
        let mut a = Box::pin(checks.check(Some(phc.clone()), "pw".into()));
        let mut b = Box::pin(checks.check(None, "pw".into()));
        let mut c = Box::pin(checks.check(Some(phc.clone()), "pw".into()));
        // One runs, one waits, and with one thread and one place in the queue the third
        // is refused at once.
        smol::block_on(async {
            assert!(poll_once(&mut a).await.is_none());
            assert!(poll_once(&mut b).await.is_none());
            assert_eq!(poll_once(&mut c).await, Some(Err(PasswordError::Busy)));
            assert_eq!(a.await, Ok(true));
            assert_eq!(b.await, Ok(false));
            // Room again.
            assert_eq!(checks.check(Some(phc), "pw".into()).await, Ok(true));
        });
        assert_eq!(checks.threads(), 1);
    }
}
