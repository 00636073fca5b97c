//! XEP-0363's rules without sockets: requests, refusals, URLs, dispositions, the
//! service's answers, storage with a real SQLite file, and the PUT/GET/sweep cycle.

use super::files::{Uploads, content_disposition, is_token};
use super::store::{NewSlot, UploadRow, UploadStore as _};
use super::*;
use crate::storage::{Accounts as _, unix_now};

fn req(attrs: &[(&str, &str)]) -> Element {
    let mut e = Element::new("request", NS);
    for (k, v) in attrs {
        e.set_attr(*k, *v);
    }
    e
}

fn cond(e: StanzaError) -> &'static str {
    e.condition.name()
}

#[test]
fn requests_are_read_as_section_4_says() {
    let r = parse_request(&req(&[
        ("filename", "très jolie.jpg"),
        ("size", "23456"),
        ("content-type", "Image/JPEG"),
    ]))
    .unwrap();
    assert_eq!(r.filename, "très jolie.jpg");
    assert_eq!(r.size, 23456);
    assert_eq!(r.content_type, "image/jpeg");
    let r = parse_request(&req(&[("filename", "a"), ("size", "0")])).unwrap();
    assert_eq!(r.content_type, "application/octet-stream");
    let no_name = parse_request(&req(&[("size", "1")])).unwrap_err();
    assert_eq!(cond(no_name), "bad-request");
    let no_size = parse_request(&req(&[("filename", "a")])).unwrap_err();
    assert_eq!(cond(no_size), "bad-request");
    for name in ["", ".", "..", "a/b", "a\\b", "a\nb", &"x".repeat(256)] {
        let e = parse_request(&req(&[("filename", name), ("size", "1")])).unwrap_err();
        assert_eq!(cond(e), "not-acceptable", "{name:?}");
    }
    for size in ["-1", "+1", "1.0", " 1", "18446744073709551616"] {
        let e = parse_request(&req(&[("filename", "a"), ("size", size)])).unwrap_err();
        assert_eq!(cond(e), "not-acceptable", "{size:?}");
    }
    for ty in [
        "image",
        "image/",
        "/jpeg",
        "text/html; charset=utf-8",
        "a b/c",
    ] {
        let e = parse_request(&req(&[
            ("filename", "a"),
            ("size", "1"),
            ("content-type", ty),
        ]))
        .unwrap_err();
        assert_eq!(cond(e), "bad-request", "{ty:?}");
    }
}

#[test]
fn refusals_follow_section_4_1() {
    let cfg = UploadConfig {
        max_file_size: 100,
        quota_bytes_per_account: 250,
        allowed_types: vec!["image/*".into(), "text/plain".into()],
        ..UploadConfig::default()
    };
    let slot = |size: u64, ty: &str| SlotRequest {
        filename: "f".into(),
        size,
        content_type: ty.into(),
    };
    assert_eq!(check_request(&cfg, &slot(100, "image/png"), 150), Ok(()));
    assert_eq!(
        check_request(&cfg, &slot(101, "image/png"), 0),
        Err(Refusal::TooLarge { max: 100 })
    );
    assert_eq!(
        check_request(&cfg, &slot(1, "video/mp4"), 0),
        Err(Refusal::TypeNotAllowed)
    );
    assert_eq!(check_request(&cfg, &slot(1, "text/plain"), 0), Ok(()));
    assert_eq!(
        check_request(&cfg, &slot(100, "image/png"), 151),
        Err(Refusal::Quota {
            quota: 250,
            used: 151
        })
    );
    let e = refusal_error(&Refusal::TooLarge { max: 100 });
    assert_eq!(e.attr("type"), Some("modify"));
    let max = e
        .get_child("file-too-large", NS)
        .and_then(|f| f.get_child("max-file-size", NS))
        .unwrap();
    assert_eq!(max.text(), "100");
    let e = refusal_error(&Refusal::Quota { quota: 1, used: 1 });
    assert_eq!(e.attr("type"), Some("wait"));
    assert!(e.has_child("resource-constraint", ns::STANZA_ERRORS));
    assert!(is_allowed_type(&[], "anything/at-all"));
    assert!(!is_allowed_type(&["image/*".into()], "imagex/png"));
}

#[test]
fn urls_and_dispositions_are_encoded() {
    let s = slot_element("https://kitchen.local:5443/", "ab", "photo 1 (é).jpg");
    let put = s.get_child("put", NS).unwrap().attr("url").unwrap();
    assert_eq!(
        put,
        "https://kitchen.local:5443/upload/ab/photo%201%20%28%C3%A9%29.jpg"
    );
    assert_eq!(
        content_disposition("a \"b\".png", "image/png"),
        "inline; filename=\"a _b_.png\"; filename*=UTF-8''a%20%22b%22.png"
    );
    assert!(content_disposition("x.svg", "image/svg+xml").starts_with("attachment;"));
    assert!(content_disposition("x.html", "text/html").starts_with("attachment;"));
    assert!(is_token("0123456789abcdef0123456789abcdef"));
    assert!(!is_token("0123456789ABCDEF0123456789abcdef"));
    assert!(!is_token("../../../../../../../../hearth.db"));
}

#[test]
fn the_component_answers_disco_with_the_form() {
    let q = info_query(1234);
    let id = q.get_child("identity", ns::DISCO_INFO).unwrap();
    assert_eq!(id.attr("category"), Some("store"));
    assert_eq!(id.attr("type"), Some("file"));
    assert!(
        q.children()
            .any(|f| f.name() == "feature" && f.attr("var") == Some(NS))
    );
    let form = q.get_child("x", "jabber:x:data").unwrap();
    assert!(form.to_xml_in(ns::CLIENT).contains("<value>1234</value>"));
}

fn temp_storage() -> (tempfile::TempDir, crate::storage::Storage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::storage::Storage::open(dir.path()).unwrap();
    storage.create_account("alice", "pw").unwrap();
    (dir, storage)
}

fn row(token: &str, size: u64) -> UploadRow {
    UploadRow {
        token: token.into(),
        localpart: "alice".into(),
        filename: "f.bin".into(),
        size,
        content_type: "application/octet-stream".into(),
        stored: None,
        expires: None,
        created: unix_now(),
    }
}

#[test]
fn the_quota_counts_files_and_open_slots_and_frees_on_expiry() {
    let (_d, s) = temp_storage();
    assert!(matches!(
        s.upload_new_slot(&row("t1", 6000), 10_000).unwrap(),
        NewSlot::Given
    ));
    assert!(matches!(
        s.upload_new_slot(&row("t2", 4001), 10_000).unwrap(),
        NewSlot::OverQuota { used: 6000 }
    ));
    // An empty file counts as a block.
    assert!(matches!(
        s.upload_new_slot(&row("t2", 0), 10_000).unwrap(),
        NewSlot::OverQuota { used: 6000 }
    ));
    let mut nobody = row("t3", 1);
    nobody.localpart = "nobody".into();
    assert!(matches!(
        s.upload_new_slot(&nobody, 100).unwrap(),
        NewSlot::NoAccount
    ));
    assert!(s.upload_stored("t1", 10, Some(20)).unwrap());
    assert!(!s.upload_stored("t1", 10, Some(20)).unwrap(), "once only");
    assert_eq!(s.upload_used("alice").unwrap(), 6000);
    assert_eq!(s.upload_expire(19, 0, &[]).unwrap(), Vec::<String>::new());
    assert_eq!(s.upload_expire(20, 0, &[]).unwrap(), vec!["t1".to_owned()]);
    assert_eq!(s.upload_used("alice").unwrap(), 0);
    // An unused slot goes after its lifetime, unless a PUT is in progress.
    s.upload_new_slot(&row("t4", 5), 10_000).unwrap();
    let later = unix_now() + 1;
    assert!(
        s.upload_expire(0, later, &["t4".into()])
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.upload_expire(0, later, &[]).unwrap(),
        vec!["t4".to_owned()]
    );
    // At most MAX_OPEN_SLOTS wait for their PUT.
    for i in 0..super::store::MAX_OPEN_SLOTS {
        let r = s
            .upload_new_slot(&row(&format!("o{i}"), 1), u64::MAX)
            .unwrap();
        assert!(matches!(r, NewSlot::Given));
    }
    assert!(matches!(
        s.upload_new_slot(&row("one-more", 1), u64::MAX).unwrap(),
        NewSlot::OverQuota { .. }
    ));
    // The account's rows go with it.
    assert!(s.upload_exists("o0").unwrap());
    s.delete_account("alice").unwrap();
    assert!(!s.upload_exists("o0").unwrap());
}

#[test]
fn a_put_is_streamed_then_served_and_a_cut_one_leaves_nothing() {
    let (dir, s) = temp_storage();
    let cfg = UploadConfig::default();
    let uploads = Uploads::new(cfg, s.clone(), "https://h".into()).unwrap();
    let token = "0123456789abcdef0123456789abcdef";
    s.upload_new_slot(&row(token, 10), 1 << 20).unwrap();
    smol::block_on(async {
        // Wrong sizes are refused before anything is written.
        assert_eq!(
            uploads
                .begin_put(token, Some(11), None)
                .await
                .err()
                .map(|f| f.status),
            Some(413)
        );
        assert_eq!(
            uploads
                .begin_put(token, None, None)
                .await
                .err()
                .map(|f| f.status),
            Some(411)
        );
        // Cut: dropped before the end, nothing stays.
        let mut p = uploads.begin_put(token, Some(10), None).await.unwrap();
        assert_eq!(
            uploads
                .begin_put(token, Some(10), None)
                .await
                .err()
                .map(|f| f.status),
            Some(409),
            "one PUT at a time"
        );
        p.write(bytes::Bytes::from_static(b"01234")).await.unwrap();
        drop(p);
        assert_eq!(
            std::fs::read_dir(dir.path().join("uploads"))
                .unwrap()
                .count(),
            0
        );
        // Too much: refused as it comes.
        let mut p = uploads.begin_put(token, Some(10), None).await.unwrap();
        p.write(bytes::Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        assert_eq!(
            p.write(bytes::Bytes::from_static(b"x"))
                .await
                .err()
                .map(|f| f.status),
            Some(413)
        );
        drop(p);
        // Right.
        let mut p = uploads.begin_put(token, Some(10), None).await.unwrap();
        p.write(bytes::Bytes::from_static(b"01234")).await.unwrap();
        p.write(bytes::Bytes::from_static(b"56789")).await.unwrap();
        p.finish().await.unwrap();
        let d = uploads.open_get(token).await.unwrap();
        assert_eq!(d.len, 10);
        assert_eq!(uploads.read_at(&d.file, 3, 4).await.unwrap(), b"3456");
        assert_eq!(
            uploads
                .begin_put(token, Some(10), None)
                .await
                .err()
                .map(|f| f.status),
            Some(409)
        );
        // A file no row names (its account deleted by `hearth user del`) is swept.
        std::fs::write(
            dir.path()
                .join("uploads")
                .join("ffffffffffffffffffffffffffffffff"),
            b"x",
        )
        .unwrap();
        assert_eq!(uploads.sweep().await.unwrap(), 1);
        assert!(uploads.open_get(token).await.is_ok());
    });
}

/// Records what the router hands a service (here: the upload component's answers).
#[derive(Default)]
struct Recorder {
    got: std::sync::Mutex<Vec<Element>>,
}

impl Service for Recorder {
    fn receive(&self, _router: &Router, _origin: Origin<'_>, stanza: Stanza) {
        self.got.lock().unwrap().push(stanza.el);
    }
}

/// §4: slots for local accounts only (queued for storage); anyone else, `forbidden`;
/// disco#info for anyone.
#[test]
fn the_service_gives_slots_to_local_accounts_only() {
    let (tx, rx) = async_channel::bounded(QUEUE);
    let svc = Arc::new(UploadService::new("home.example".into(), 1000, tx).unwrap());
    let watch = Arc::new(Recorder::default());
    let router = Router::new("home.example".into())
        .with_service("upload.home.example", svc.clone())
        .with_service("watch.example.org", watch.clone());
    let iq = |from: &str, payload: Element| {
        let el = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", "q1")
            .with_attr("from", from)
            .with_attr("to", "upload.home.example")
            .with_child(payload);
        Stanza::from_client(el).unwrap()
    };
    let slot = || req(&[("filename", "a.jpg"), ("size", "10")]);
    let alice = FullJid::parse("alice@home.example/phone").unwrap();
    svc.receive(&router, Origin::Local(&alice), iq(alice.as_str(), slot()));
    let job = rx.try_recv().expect("a local account's request is queued");
    assert_eq!(job.from, alice);
    assert_eq!(job.slot.size, 10);

    let stranger = Jid::parse("watch.example.org").unwrap();
    svc.receive(
        &router,
        Origin::Service(&stranger),
        iq("watch.example.org", slot()),
    );
    svc.receive(
        &router,
        Origin::Service(&stranger),
        iq("watch.example.org", Element::new("query", ns::DISCO_INFO)),
    );
    assert!(rx.try_recv().is_err(), "nothing queued for a stranger");
    let got = watch.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    let err = got[0].get_child("error", ns::CLIENT).expect("an error");
    assert!(err.has_child("forbidden", ns::STANZA_ERRORS), "{got:?}");
    assert_eq!(got[1].attr("type"), Some("result"));
    assert!(got[1].get_child("query", ns::DISCO_INFO).is_some());
}

/// A full disk: 507 and nothing half-stored. The partial file is made a link to
/// `/dev/full`, whose writes fail with ENOSPC as a full file system's do.
#[test]
fn a_full_disk_is_507_and_leaves_nothing() {
    let (dir, s) = temp_storage();
    let uploads = Uploads::new(UploadConfig::default(), s.clone(), "https://h".into()).unwrap();
    let token = "abcdef0123456789abcdef0123456789";
    s.upload_new_slot(&row(token, 10), 1 << 20).unwrap();
    let part = dir.path().join("uploads").join(format!("{token}.part"));
    std::os::unix::fs::symlink("/dev/full", &part).unwrap();
    smol::block_on(async {
        let mut p = uploads.begin_put(token, Some(10), None).await.unwrap();
        // The OS may buffer: the failure comes at a write or at the sync.
        let r = match p.write(bytes::Bytes::from_static(b"0123456789")).await {
            Ok(()) => p.finish().await,
            Err(f) => Err(f),
        };
        assert_eq!(r.err().map(|f| f.status), Some(507));
    });
    assert!(!part.exists() && std::fs::symlink_metadata(&part).is_err());
    assert_eq!(
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(s.upload_get(token).unwrap().and_then(|r| r.stored), None);
}
