//! Wires hearth together: storage, TLS, router and features, the
//! executor, the listeners, and the signals that reload or stop it.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use smol::stream::StreamExt as _;
use smol::{Async, Executor, Timer};

use crate::auth::Auth;
use crate::config::Config;
use crate::features::Registry;
use crate::features::register::{Register, Registrar};
use crate::net::Shared;
use crate::net::component::ComponentSlot;
use crate::net::limits::{Admission, ConnectionLimits};
use crate::net::listen::Peers;
use crate::net::s2s::{S2s, S2sSettings};
use crate::net::tls::TlsSetup;
use crate::password::PasswordCheckConfig;
use crate::router::Router;
use crate::storage::{Accounts as _, Storage};
use crate::stream::c2s::C2sPolicy;
use crate::stream::component::ComponentPolicy;
use crate::stream::s2s::{DialbackSecret, S2sPolicy};
use crate::stream::sasl::Mechanism;
use crate::stream::throttle::{Throttle, ThrottleConfig};
use crate::xml::Limits;

/// How long shutdown waits for connections to finish their goodbyes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Stack of each executor worker thread: 1 MiB, half of Rust's default. Tasks keep
/// their state on the heap, so the stack holds only the current poll; and a stack under
/// 2 MiB can never be backed by a transparent huge page, which on kernels with THP
/// "always" (Debian's) makes a 2 MiB stack on a 2 MiB boundary cost 2 MiB resident.
/// The unit sets `RUST_MIN_STACK` to the same for threads other crates start.
const WORKER_STACK_BYTES: usize = 1 << 20;

/// Elements per first-level element before authentication: `<starttls/>`,
/// `<auth/>` and `<response/>` are one each.
const MAX_ELEMENTS_UNAUTHENTICATED: usize = 16;

/// Why the server could not start.
#[derive(Debug)]
pub enum ServeError {
    Storage(crate::storage::StorageError),
    Tls(crate::net::tls::TlsError),
    Listen(SocketAddr, std::io::Error),
    Signals(std::io::Error),
    /// Started as root without `--allow-root` / `allow_root = true`.
    Root,
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Storage(e) => write!(f, "{e}"),
            ServeError::Tls(e) => write!(f, "{e}"),
            ServeError::Listen(a, e) => write!(f, "cannot listen on {a}: {e}"),
            ServeError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            ServeError::Root => write!(
                f,
                "refusing to serve as root: run hearth as its own user (the systemd unit \
                 does), or pass --allow-root (allow_root = true in the config file)"
            ),
        }
    }
}

impl std::error::Error for ServeError {}

/// Binds a listener, naming the address in the error.
fn bind(addr: SocketAddr) -> Result<(SocketAddr, Async<TcpListener>), ServeError> {
    crate::net::listen::bind(addr).map_err(|e| ServeError::Listen(addr, e))
}

/// Runs the server until SIGTERM or SIGINT.
pub fn serve(cfg: Config) -> Result<(), ServeError> {
    let started = Instant::now();
    if crate::service::refuse_root(cfg.allow_root) {
        return Err(ServeError::Root);
    }
    let storage = Storage::open(&cfg.data_dir)
        .map_err(ServeError::Storage)?
        .with_scram_keys(cfg.auth.scram_keys);
    let tls = TlsSetup::load(&cfg).map_err(ServeError::Tls)?;
    let domain: Arc<str> = cfg.domain.as_str().into();
    let mechanisms = if cfg.auth.scram_keys {
        vec![
            Mechanism::ScramSha256Plus,
            Mechanism::ScramSha1Plus,
            Mechanism::ScramSha256,
            Mechanism::ScramSha1,
            Mechanism::Plain,
        ]
    } else {
        vec![Mechanism::Plain]
    };
    let auth = Auth::new(
        storage.clone(),
        PasswordCheckConfig {
            at_once: cfg.auth.password_checks_at_once,
            queue: cfg.auth.password_check_queue,
        },
    );
    for admin in &cfg.admins {
        // Not fatal: the owner may add the account after naming it.
        let user = admin.local().unwrap_or_default();
        if !storage.account_exists(user).unwrap_or(true) {
            log::warn!("admins: {admin} is not an account here yet (hearth user add {user})");
        }
    }
    let registrar = Arc::new(Registrar::new(cfg.registration, auth.passwords().clone()));
    let modules = Registry::configured(
        &cfg.household,
        crate::features::adhoc::Adhoc::new(cfg.admins.clone(), auth.password_checks())
            .with_registration(registrar.is_offered()),
        Register::new(registrar.clone()),
        &cfg.archive,
        &cfg.modules,
    );
    // A renamed household group changes the members' rosters: new versions (RFC 6121 §2.6).
    {
        use crate::features::household::Household as _;
        storage
            .show_household_as(&cfg.household.group)
            .map_err(ServeError::Storage)?;
    }
    let policy = Arc::new(C2sPolicy {
        domain: domain.clone(),
        mechanisms,
        max_auth_failures: 5,
        strict_channel_binding: cfg.auth.strict_channel_binding,
        // XEP-0198's `<sm/>` only when stream management is on.
        module_features: modules
            .stream_features()
            .into_iter()
            .filter(|f| cfg.stream_management.enabled || f.ns() != crate::stream::sm::NS)
            .collect(),
        registration: cfg.registration.policy,
        stream_management: cfg.stream_management.enabled,
    });
    let mut listeners = Vec::new();
    // MQTT for sensors (issue 21), bound with the others so a taken port stops the start.
    let mut mqtt_listeners = Vec::new();
    if cfg.mqtt.enabled {
        for (list, tls) in [(&cfg.mqtt.listen, false), (&cfg.mqtt.tls_listen, true)] {
            for &a in list {
                let (addr, l) = bind(a)?;
                mqtt_listeners.push((addr, l, tls));
            }
        }
    }
    for &a in &cfg.c2s.listen {
        listeners.push((bind(a)?, false, Peers::Clients));
    }
    for &a in &cfg.c2s.direct_tls_listen {
        listeners.push((bind(a)?, true, Peers::Clients));
    }
    let s2s = if cfg.s2s.enabled {
        for &a in &cfg.s2s.listen {
            listeners.push((bind(a)?, false, Peers::Servers));
        }
        for &a in &cfg.s2s.direct_tls_listen {
            listeners.push((bind(a)?, true, Peers::Servers));
        }
        if cfg.domain.ends_with(".local") {
            log::info!(
                "federation: {} is a .local name, which other servers cannot find; \
                 set a public domain to federate, or federation = false",
                cfg.domain
            );
        }
        Some(Arc::new(S2s::new(S2sSettings {
            policy: Arc::new(S2sPolicy {
                domain: domain.clone(),
                require_tls: cfg.s2s.require_tls,
                require_valid_certificates: cfg.s2s.require_valid_certificates,
                secret: DialbackSecret::random(),
                // The group chat service federates too (XEP-0045 rooms for other
                // servers' users).
                services: if cfg.modules.muc.enabled {
                    vec![cfg.modules.muc.domain.as_str().into()]
                } else {
                    Vec::new()
                },
            }),
            routes: cfg.s2s.routes.clone(),
            resolvers: cfg.s2s.resolvers.clone(),
            idle_timeout: cfg.s2s.idle_timeout,
            max_stanza_bytes: cfg.s2s.max_stanza_bytes,
            max_elements: cfg.limits.max_elements_per_stanza,
            max_queued_bytes: cfg.limits.max_queued_bytes,
        })))
    } else {
        None
    };
    let signals = async_signal::Signals::new([
        async_signal::Signal::Term,
        async_signal::Signal::Int,
        async_signal::Signal::Hup,
    ])
    .map_err(ServeError::Signals)?;

    let (shutdown_tx, shutdown_rx) = async_channel::bounded::<()>(1);
    let max = cfg.c2s.max_stanza_bytes;
    for &a in &cfg.components.listen {
        listeners.push((bind(a)?, false, Peers::Components));
    }
    for &a in &cfg.websocket.listen {
        listeners.push((bind(a)?, cfg.websocket.tls, Peers::WebSockets));
    }
    let mut router = Router::new(domain.clone())
        .with_max_resources(cfg.limits.max_resources_per_account)
        .with_quota(cfg.limits.quota);
    // The HTTPS listener (issue 20) and XEP-0363's `upload.<domain>` on it.
    let mut http_listeners = Vec::new();
    if cfg.http.enabled {
        for &a in &cfg.http.listen {
            http_listeners.push(bind(a)?);
        }
    }
    let http_base = cfg.http.public_url.clone().unwrap_or_else(|| {
        let port = http_listeners
            .first()
            .map_or(crate::config::DEFAULT_HTTP_PORT, |(a, _)| a.port());
        crate::net::http::default_base_url(&cfg.domain, port)
    });
    let uploads = if !http_listeners.is_empty() && cfg.modules.upload.enabled {
        use crate::features::upload;
        let (tx, rx) = async_channel::bounded(upload::QUEUE);
        let files = upload::files::Uploads::new(
            cfg.modules.upload.clone(),
            storage.clone(),
            http_base.clone(),
        )
        .map_err(|source| {
            ServeError::Storage(crate::storage::StorageError::CreateDir {
                path: upload::files::uploads_dir(storage.path()),
                source,
            })
        })?;
        if let Some(svc) =
            upload::UploadService::new(domain.clone(), cfg.modules.upload.max_file_size, tx)
        {
            router = router.with_service(&upload::component_domain(&domain), Arc::new(svc));
        }
        Some((files, rx))
    } else {
        None
    };
    let mut component_slots = Vec::new();
    for (d, _) in &cfg.components.secrets {
        let slot = Arc::new(ComponentSlot::new(
            d.as_str().into(),
            cfg.limits.max_queued_bytes,
        ));
        router = router.with_service(d, slot.clone());
        component_slots.push(slot);
    }
    let components = (!cfg.components.secrets.is_empty())
        .then(|| Arc::new(ComponentPolicy::new(cfg.components.secrets.clone())));
    if let Some(s2s) = &s2s {
        router = router.with_remote(s2s.clone());
    }
    // XEP-0045: the group chat service, its persistent rooms read now.
    let muc = &cfg.modules.muc;
    let mut muc_service = None;
    if muc.enabled && !cfg.components.secrets.iter().any(|(d, _)| *d == muc.domain) {
        let service = crate::features::muc::MucService::new(
            &muc.domain,
            &domain,
            muc.clone(),
            Some(storage.clone()),
        )
        .map_err(ServeError::Storage)?;
        muc_service = Some(service.clone());
        router = router.with_service(&muc.domain, service);
    }
    let shared = Arc::new(Shared {
        router,
        storage,
        modules,
        tls: RwLock::new(Arc::new(tls)),
        policy,
        limits_unauthenticated: Limits {
            max_stanza_bytes: cfg.c2s.max_stanza_bytes_unauthenticated,
            // STARTTLS, SASL and their answers are single elements.
            max_elements: MAX_ELEMENTS_UNAUTHENTICATED,
            ..Limits::default()
        },
        limits_authenticated: Limits {
            max_stanza_bytes: max,
            max_elements: cfg.limits.max_elements_per_stanza,
            ..Limits::default()
        },
        negotiation_timeout: cfg.c2s.negotiation_timeout,
        admission: Admission::new(ConnectionLimits {
            max_total: cfg.limits.max_connections,
            max_per_address: cfg.limits.max_connections_per_address,
            per_address_per_minute: cfg.limits.connections_per_minute_per_address,
            burst_per_address: cfg.limits.connection_burst_per_address,
        }),
        limits: cfg.limits.clone(),
        throttle: Mutex::new(Throttle::new(ThrottleConfig {
            free_attempts: cfg.auth.max_failures_before_delay,
            ..ThrottleConfig::default()
        })),
        auth,
        registrar,
        shutdown_rx,
        s2s,
        components,
        component_slots,
        sm: crate::net::sm::SmTable::new(cfg.stream_management.clone()),
    });

    let ex = Arc::new(Executor::new());
    shared.sm.start(&ex);
    if let Some(s2s) = &shared.s2s {
        s2s.start(&shared, &ex);
    }
    // Worker threads run the executor until the shutdown channel closes.
    let mut workers = Vec::new();
    for i in 1..cfg.threads {
        let ex = ex.clone();
        let stop = shared.shutdown_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("hearth-{i}"))
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || smol::block_on(ex.run(async { while stop.recv().await.is_ok() {} })));
        match t {
            Ok(t) => workers.push(t),
            Err(e) => log::warn!("could not start worker thread {i}: {e}"),
        }
    }

    // LAN advertisement for what was actually bound, on mdns-sd's own thread.
    let advertiser = if cfg.mdns.enabled {
        let bound = |direct: bool| -> Vec<SocketAddr> {
            listeners
                .iter()
                .filter(|(_, d, p)| *d == direct && *p == Peers::Clients)
                .map(|((a, _), _, _)| *a)
                .collect()
        };
        crate::mdns::Advertiser::start(&crate::mdns::Settings {
            domain: cfg.domain.clone(),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
            starttls: bound(false),
            direct_tls: bound(true),
            interfaces: cfg.mdns.interfaces.clone(),
        })
    } else {
        None
    };

    // The open-connection count, for shutdown to wait on.
    let live = Arc::new(AtomicUsize::new(0));
    let next_id = Arc::new(AtomicU64::new(1));
    let websocket_ports: Vec<u16> = listeners
        .iter()
        .filter(|(_, _, peers)| *peers == Peers::WebSockets)
        .map(|((addr, _), _, _)| addr.port())
        .collect();
    for ((addr, listener), direct, peers) in listeners {
        crate::net::listen::accept(&ex, listener, addr, direct, peers, &shared, &live, &next_id);
    }
    let uploads = uploads.map(|(files, rx)| {
        let shared = shared.clone();
        let f = files.clone();
        ex.spawn(async move { f.serve_slots(&shared.router, rx).await })
            .detach();
        ex.spawn(files.clone().sweep_forever()).detach();
        files
    });
    if !http_listeners.is_empty() {
        // XEP-0156: the `[websocket]` listeners are announced too (after the HTTPS
        // listener's own `/xmpp-websocket`), by the ports they were bound on.
        let mut websocket_listener_urls: Vec<String> = websocket_ports
            .iter()
            .filter_map(|&port| {
                crate::net::http::websocket_listener_url(&cfg.domain, port, cfg.websocket.tls)
            })
            .collect();
        websocket_listener_urls.dedup();
        let http = Arc::new(crate::net::http::Http {
            base_url: http_base,
            uploads,
            websocket_listener_urls,
            admission: Admission::new(ConnectionLimits {
                max_total: cfg.limits.max_connections,
                max_per_address: cfg.limits.max_connections_per_address,
                per_address_per_minute: cfg.limits.connections_per_minute_per_address,
                burst_per_address: cfg.limits.connection_burst_per_address,
            }),
            ex: ex.clone(),
        });
        for (addr, listener) in http_listeners {
            crate::net::http::accept(&ex, listener, addr, &shared, &http, &live, &next_id);
        }
    }
    crate::net::mqtt::conn::start(
        &ex,
        &shared,
        &cfg.mqtt,
        cfg.modules.devices.presence_interval,
        mqtt_listeners,
        &live,
        &next_id,
    );
    log::info!(
        "hearth {} serving {} (data in {}), ready in {} ms",
        env!("CARGO_PKG_VERSION"),
        domain,
        cfg.data_dir.display(),
        started.elapsed().as_millis()
    );
    // Every listener is bound: tell systemd (Type=notify), and prove the executor is
    // alive every half WatchdogSec= so a wedged server gets restarted.
    let notifier = Arc::new(crate::service::Notifier::from_env());
    notifier.ready(&format!("serving {domain}"));
    if let Some(every) = notifier.watchdog_interval() {
        let n = notifier.clone();
        ex.spawn(async move {
            loop {
                Timer::after(every).await;
                n.watchdog();
            }
        })
        .detach();
    }

    // Membership changes made by `hearth household` (another process) or an invite reach
    // the members' clients as roster pushes and presence.
    {
        let shared = shared.clone();
        let admins = cfg.admins.clone();
        ex.spawn(async move {
            let im = crate::router::im::Im {
                router: &shared.router,
                storage: &shared.storage,
                modules: &shared.modules,
                conn: 0,
            };
            use crate::features::household::Following;
            // The household's room follows the household (XEP-0045 members): its people,
            // not its device accounts (a thermometer does not chat).
            let (muc_service, shared, admins) = (&muc_service, &shared, &admins);
            let follow = move |joined: Vec<String>, left: Vec<String>| -> Following<'_> {
                Box::pin(async move {
                    let Some(muc) = muc_service else { return };
                    let all = joined.clone();
                    let people = crate::router::im::on_pool(&shared.storage, move |s| {
                        use crate::features::device::Devices as _;
                        let mut people = Vec::new();
                        for n in joined {
                            if !s.is_device(&n)? {
                                people.push(n);
                            }
                        }
                        Ok(people)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        log::error!("household: storage: {e}");
                        all
                    });
                    let (room, added, removed) =
                        muc.household_changed(&shared.router, &people, &left, admins);
                    // XEP-0402: the room in their bookmarks, so their apps join it.
                    let Some(room) = room else { return };
                    let im = crate::router::im::Im {
                        router: &shared.router,
                        storage: &shared.storage,
                        modules: &shared.modules,
                        conn: 0,
                    };
                    for (users, add) in [(added, true), (removed, false)] {
                        for user in users {
                            let set = crate::features::bookmarks::set_room_bookmark(
                                &im,
                                &user,
                                &room,
                                "Household",
                                add,
                            );
                            if !set.await {
                                log::warn!("household: the room's bookmark for {user} not set");
                            }
                        }
                    }
                }) as Following<'_>
            };
            crate::features::household::watch(im, crate::features::household::POLL, &follow).await
        })
        .detach();
    }

    // Deferred writes (the message archive's rows) are committed a few milliseconds'
    // worth at a time, by this task.
    {
        let shared = shared.clone();
        ex.spawn(async move { shared.storage.flush_deferred_forever().await })
            .detach();
    }
    // XEP-0313: archived messages past `[archive] retention_days` expire, hourly.
    {
        let shared = shared.clone();
        let archive = cfg.archive;
        ex.spawn(async move {
            let im = crate::router::im::Im {
                router: &shared.router,
                storage: &shared.storage,
                modules: &shared.modules,
                conn: 0,
            };
            crate::features::mam::expire(im, archive).await
        })
        .detach();
    }

    let cfg = Arc::new(cfg);
    smol::block_on(ex.run(async {
        let mut signals = signals;
        while let Some(sig) = signals.next().await {
            match sig {
                Ok(async_signal::Signal::Hup) => match TlsSetup::load(&cfg) {
                    Ok(t) => {
                        *shared.tls.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
                        log::info!("SIGHUP: TLS certificate reloaded");
                    }
                    Err(e) => log::error!("SIGHUP: keeping the old certificate: {e}"),
                },
                Ok(sig) => {
                    log::info!("{sig:?}: shutting down");
                    break;
                }
                Err(e) => log::warn!("signal stream: {e}"),
            }
        }
        notifier.stopping();
        // Every connection closes its stream with system-shutdown.
        shutdown_tx.close();
        let until = Instant::now() + SHUTDOWN_GRACE;
        while live.load(Ordering::Acquire) > 0 && Instant::now() < until {
            Timer::after(Duration::from_millis(20)).await;
        }
        // Sessions waiting to be resumed (XEP-0198) leave what they hold offline.
        shared.sm.end_all(&shared).await;
    }));
    // Goodbye packets once clients are gone; off the executor, which has stopped.
    if let Some(a) = advertiser {
        a.stop();
    }
    for w in workers {
        let _ = w.join();
    }
    // Archive rows still queued (deferred writes) are committed before the process ends.
    shared.storage.flush_deferred();
    log::info!("stopped");
    Ok(())
}
