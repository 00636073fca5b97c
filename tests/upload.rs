//! XEP-0363 HTTP File Upload and hearth's HTTPS listener (issue 20, "Photo sharing"):
//! slixmpp's xep_0363 plugin finds `upload.<domain>` in disco, gets a slot and PUTs a
//! photo; another user fetches it and gets the same bytes; go-sendxmpp `-h` is the
//! second client library. Raw slot requests and raw HTTP check the refusals (size, type,
//! quota, bad names, strangers' tokens, a PUT that does not match its slot), expiry,
//! an account's removal, XEP-0156 host-meta and CORS.

mod common;

use std::time::{Duration, Instant};

use common::client::{Conn, NS_STANZA_ERRORS, new_id};
use common::clients::{aioxmpp_spawn, slixmpp};
use common::http;
use common::xml::Node;
use common::{Server, ServerOpts};

const PW: &str = "a fine password";
const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

fn server_with(upload_toml: &str, http_toml: &str) -> Server {
    let server = Server::start(ServerOpts {
        extra_toml: format!("\n[upload]\n{upload_toml}"),
        http_toml: http_toml.into(),
        ..ServerOpts::default()
    });
    for u in ["alice", "bob"] {
        server.add_user(u, PW);
    }
    server
}

fn login(server: &Server, user: &str) -> Conn {
    Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        user,
        PW,
        Some("phone"),
    )
}

/// Pseudo-random bytes (a photo's worth of entropy, reproducible).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Asks a slot; the reply iq.
fn request_slot(c: &mut Conn, server: &Server, attrs: &str) -> Node {
    let id = new_id("slot");
    c.send(&format!(
        "<iq type='get' id='{id}' to='upload.{}'><request xmlns='{NS_UPLOAD}' {attrs}/></iq>",
        server.domain()
    ));
    c.expect_iq_reply(&id)
}

/// The PUT URL's path (`/upload/<token>/<name>`) of a slot reply.
fn slot_path(reply: &Node) -> String {
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    let slot = reply.child("slot", NS_UPLOAD).expect("a <slot/>");
    let put = slot.child("put", NS_UPLOAD).unwrap().attr("url").unwrap();
    let get = slot.child("get", NS_UPLOAD).unwrap().attr("url").unwrap();
    assert_eq!(put, get);
    let rest = put.strip_prefix("https://").expect("an https URL");
    rest[rest.find('/').unwrap()..].to_owned()
}

fn put(server: &Server, path: &str, ty: &str, body: &[u8]) -> http::Response {
    http::request(
        server,
        &format!(
            "PUT {path} HTTP/1.1\r\nContent-Type: {ty}\r\nContent-Length: {}",
            body.len()
        ),
        body,
    )
}

fn get(server: &Server, path: &str) -> http::Response {
    http::request(server, &format!("GET {path} HTTP/1.1"), b"")
}

fn files_in(server: &Server) -> Vec<String> {
    std::fs::read_dir(server.data_dir().join("uploads"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn error_condition(reply: &Node) -> (String, String) {
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    let err = reply
        .child("error", common::client::NS_CLIENT)
        .expect("<error/>");
    (
        err.condition(NS_STANZA_ERRORS).unwrap_or("").to_owned(),
        err.attr("type").unwrap_or("").to_owned(),
    )
}

/// slixmpp's plugin does all of §2–§5: disco#items of the server, disco#info of each
/// item, the slot, the PUT (aiohttp, verifying the certificate for the domain); bob's
/// download has the same bytes, the type, an inline disposition and nosniff.
#[test]
fn slixmpp_uploads_a_photo_and_another_user_fetches_it() {
    let server = server_with("", "");
    let photo = bytes(300_000, 7);
    let path = server.scratch_dir().join("holiday photo é.jpg");
    std::fs::write(&path, &photo).unwrap();
    let run = slixmpp(&server, "alice", PW, "SCRAM-SHA-256").run(&[
        "upload",
        "--file",
        path.to_str().unwrap(),
    ]);
    run.assert_ok();
    let up = run.expect_event("uploaded");
    assert_eq!(
        up["service"],
        format!("upload.{}", server.domain()),
        "{run}"
    );
    assert_eq!(up["max_file_size"], 100 * 1024 * 1024, "{run}");
    let url = up["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!(
            "https://{}:{}/upload/",
            server.domain(),
            server.http_port()
        )),
        "{url}"
    );
    assert!(url.ends_with("/holiday%20photo%20%C3%A9.jpg"), "{url}");

    let run = slixmpp(&server, "bob", PW, "SCRAM-SHA-256").run(&["download", "--url", &url]);
    run.assert_ok();
    let down = run.expect_event("downloaded");
    assert_eq!(down["status"], 200, "{run}");
    assert_eq!(down["size"], photo.len(), "{run}");
    assert_eq!(down["sha256"], sha256_hex(&photo), "{run}");
    let h = &down["headers"];
    assert_eq!(h["content-type"], "image/jpeg", "{run}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{run}");
    assert_eq!(h["access-control-allow-origin"], "*", "{run}");
    let disp = h["content-disposition"].as_str().unwrap();
    assert!(
        disp.starts_with("inline; filename=\"holiday photo _.jpg\""),
        "{disp}"
    );
    assert!(
        disp.contains("filename*=UTF-8''holiday%20photo%20%C3%A9.jpg"),
        "{disp}"
    );
    // One file on disk, named by its token, nothing partial.
    let files = files_in(&server);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(!files[0].ends_with(".part"), "{files:?}");
}

/// aioxmpp's own `httpupload` (a second library, strict about iq addressing): disco,
/// slot, PUT; the GET serves the same bytes. Over the size: `not-acceptable`.
#[test]
fn aioxmpp_uploads_a_file() {
    let server = server_with("max_file_size = 200000\n", "");
    let doc = bytes(150_000, 13);
    let file = server.scratch_dir().join("report.pdf");
    std::fs::write(&file, &doc).unwrap();
    let run = aioxmpp_spawn(
        &server,
        &server.jid("alice"),
        PW,
        &[
            "--upload",
            file.to_str().unwrap(),
            "--content-type",
            "application/pdf",
        ],
    )
    .finish();
    run.assert_ok();
    let up = run.expect_event("uploaded");
    assert_eq!(up["status"], 201, "{run}");
    assert_eq!(
        up["service"],
        format!("upload.{}", server.domain()),
        "{run}"
    );
    let url = up["url"].as_str().unwrap();
    let path = &url[url.find("/upload/").unwrap()..];
    let r = get(&server, path);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, doc);
    assert_eq!(r.header("content-type"), Some("application/pdf"));
    let big = server.scratch_dir().join("big.pdf");
    std::fs::write(&big, bytes(200_001, 1)).unwrap();
    let run = aioxmpp_spawn(
        &server,
        &server.jid("alice"),
        PW,
        &["--upload", big.to_str().unwrap()],
    )
    .finish();
    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(
        run.expect_event("error")["condition"],
        "not-acceptable",
        "{run}"
    );
}

/// The plugin's refusals come from the server when it does not know the limit itself
/// (`--skip-discovery`): over `max_file_size` and over the quota.
#[test]
fn slixmpp_is_refused_over_size_and_over_quota() {
    let server = server_with(
        "max_file_size = 100000\nquota_bytes_per_account = 150000\n",
        "",
    );
    let big = server.scratch_dir().join("big.bin");
    std::fs::write(&big, bytes(100_001, 1)).unwrap();
    let run = slixmpp(&server, "alice", PW, "SCRAM-SHA-256").run(&[
        "upload",
        "--file",
        big.to_str().unwrap(),
        "--skip-discovery",
    ]);
    assert_eq!(run.code(), Some(1), "{run}");
    let fail = run.expect_event("error");
    assert_eq!(fail["condition"], "not-acceptable", "{run}");
    // With discovery the plugin reads max-file-size from the XEP-0128 form and refuses
    // by itself.
    let run = slixmpp(&server, "alice", PW, "SCRAM-SHA-256").run(&[
        "upload",
        "--file",
        big.to_str().unwrap(),
    ]);
    assert_eq!(run.expect_event("error")["reason"], "file too big", "{run}");

    let ok = server.scratch_dir().join("ok.bin");
    std::fs::write(&ok, bytes(90_000, 2)).unwrap();
    let args = ["upload", "--file", ok.to_str().unwrap()];
    slixmpp(&server, "alice", PW, "SCRAM-SHA-256")
        .run(&args)
        .assert_ok();
    let run = slixmpp(&server, "alice", PW, "SCRAM-SHA-256").run(&args);
    assert_eq!(run.code(), Some(1), "{run}");
    let fail = run.expect_event("error");
    assert_eq!(fail["condition"], "resource-constraint", "{run}");
    assert_eq!(fail["type"], "wait", "{run}");
    // Another account's quota is its own.
    slixmpp(&server, "bob", PW, "SCRAM-SHA-256")
        .run(&args)
        .assert_ok();
}

/// go-sendxmpp `-h`: uploads the file and sends its URL to bob, who gets the message;
/// the URL serves the same bytes. go-sendxmpp cannot pin a certificate (`-n`) nor
/// resolve the test's domain, so the server's URLs name the loopback address
/// (`[http] public_url`, as behind a reverse proxy).
#[test]
fn go_sendxmpp_uploads_a_file_for_a_contact() {
    // go-sendxmpp's HTTP client verifies the certificate whatever `-n` says, and it
    // trusts `SSL_CERT_FILE`: a certificate that names the loopback address.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=test.local"])
        .args([
            "-addext",
            "subjectAltName=DNS:test.local,DNS:*.test.local,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl")
        .status
        .success();
    assert!(ok, "openssl could not make a certificate");
    let server = Server::start(ServerOpts {
        tls: Some((cert.clone(), key)),
        http_toml: "public_url = \"https://127.0.0.1:{http_port}\"\n".into(),
        ..ServerOpts::default()
    });
    for u in ["alice", "bob"] {
        server.add_user(u, PW);
    }
    let base = format!("https://127.0.0.1:{}", server.http_port());
    let mut bob = login(&server, "bob");
    bob.send("<presence/>");
    let doc = bytes(50_000, 3);
    let file = server.scratch_dir().join("notes.txt");
    std::fs::write(&file, &doc).unwrap();
    let out = std::process::Command::new("go-sendxmpp")
        .args(["-u", &server.jid("alice"), "-p", PW])
        .args(["-j", &format!("127.0.0.1:{}", server.c2s_port())])
        .args(["-n", "--timeout", "10", "-h"])
        .arg(&file)
        .arg(server.jid("bob"))
        .env("HOME", server.scratch_dir())
        .env("SSL_CERT_FILE", &cert)
        .output()
        .expect("go-sendxmpp is installed (.ci/run)");
    assert!(
        out.status.success(),
        "go-sendxmpp failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = bob.expect_matching("the upload's URL", |n| n.name == "message");
    let body = msg
        .child("body", common::client::NS_CLIENT)
        .map(|b| b.text.clone())
        .unwrap_or_default();
    let path = body
        .trim()
        .strip_prefix(&base)
        .unwrap_or_else(|| panic!("not a URL of this server: {msg}"))
        .to_owned();
    let r = get(&server, &path);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, doc);
    // What go-sendxmpp declared for random bytes.
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(
        r.header("content-disposition")
            .unwrap()
            .starts_with("attachment;")
    );
}

/// §4.1's refusals, raw: too large (with the limit), a type not allowed, a bad name,
/// a missing or malformed size, an unknown payload; disco of the component.
#[test]
fn slot_requests_get_the_xeps_errors() {
    let server = server_with(
        "max_file_size = 1000\nallowed_types = [\"image/*\", \"text/plain\"]\n",
        "",
    );
    let mut c = login(&server, "alice");
    let r = request_slot(
        &mut c,
        &server,
        "filename='a.jpg' size='1001' content-type='image/jpeg'",
    );
    assert_eq!(
        error_condition(&r),
        ("not-acceptable".into(), "modify".into())
    );
    let err = r.child("error", common::client::NS_CLIENT).unwrap();
    let max = err
        .child("file-too-large", NS_UPLOAD)
        .and_then(|f| f.child("max-file-size", NS_UPLOAD))
        .expect("<file-too-large><max-file-size/>");
    assert_eq!(max.text, "1000");
    let r = request_slot(
        &mut c,
        &server,
        "filename='a.exe' size='10' content-type='application/x-msdownload'",
    );
    assert_eq!(error_condition(&r).0, "not-acceptable");
    for name in ["", "../x", "a/b", "a\\b", ".."] {
        let r = request_slot(&mut c, &server, &format!("filename='{name}' size='10'"));
        assert_eq!(error_condition(&r).0, "not-acceptable", "{name:?}: {r}");
    }
    let long = "x".repeat(256);
    let r = request_slot(&mut c, &server, &format!("filename='{long}' size='10'"));
    assert_eq!(error_condition(&r).0, "not-acceptable");
    let r = request_slot(&mut c, &server, "filename='a.txt'");
    assert_eq!(error_condition(&r).0, "bad-request");
    for size in ["-1", "ten", "1e3", "99999999999999999999999"] {
        let r = request_slot(&mut c, &server, &format!("filename='a.txt' size='{size}'"));
        assert_eq!(error_condition(&r).0, "not-acceptable", "{size}: {r}");
    }
    let r = request_slot(
        &mut c,
        &server,
        "filename='a.txt' size='1' content-type='not a type'",
    );
    assert_eq!(error_condition(&r).0, "bad-request");
    // Fine: no content-type is application/octet-stream... which is not allowed here.
    let r = request_slot(&mut c, &server, "filename='a.txt' size='1'");
    assert_eq!(error_condition(&r).0, "not-acceptable");
    let r = request_slot(
        &mut c,
        &server,
        "filename='a.txt' size='1' content-type='text/plain'",
    );
    slot_path(&r);
    // Unknown payloads: service-unavailable.
    let id = new_id("x");
    c.send(&format!(
        "<iq type='get' id='{id}' to='upload.{}'><query xmlns='jabber:iq:version'/></iq>",
        server.domain()
    ));
    assert_eq!(
        error_condition(&c.expect_iq_reply(&id)).0,
        "service-unavailable"
    );
    // A message to the component bounces.
    c.send(&format!(
        "<message to='upload.{}' id='m1'><body>hi</body></message>",
        server.domain()
    ));
    let m = c.expect_matching("the bounce", |n| n.name == "message");
    assert_eq!(m.attr("type"), Some("error"), "{m}");

    // Disco: the server lists the component; its info has identity, feature, form.
    let id = new_id("items");
    c.send(&format!(
        "<iq type='get' id='{id}' to='{}'><query xmlns='{NS_DISCO_ITEMS}'/></iq>",
        server.domain()
    ));
    let items = c.expect_iq_reply(&id);
    let q = items.child("query", NS_DISCO_ITEMS).unwrap();
    let upload = format!("upload.{}", server.domain());
    assert!(
        q.children
            .iter()
            .any(|i| i.attr("jid") == Some(upload.as_str())),
        "{items}"
    );
    let id = new_id("info");
    c.send(&format!(
        "<iq type='get' id='{id}' to='{upload}'><query xmlns='{NS_DISCO_INFO}'/></iq>"
    ));
    let info = c.expect_iq_reply(&id);
    let q = info.child("query", NS_DISCO_INFO).unwrap();
    let ident = q.child("identity", NS_DISCO_INFO).unwrap();
    assert_eq!(
        (ident.attr("category"), ident.attr("type")),
        (Some("store"), Some("file"))
    );
    assert!(
        q.children.iter().any(|f| f.attr("var") == Some(NS_UPLOAD)),
        "{info}"
    );
    let form = q.child("x", "jabber:x:data").expect("a XEP-0128 form");
    let field = form
        .children
        .iter()
        .find(|f| f.attr("var") == Some("max-file-size"))
        .expect("max-file-size");
    assert_eq!(field.child("value", "jabber:x:data").unwrap().text, "1000");
}

/// The PUT must match its slot; a slot works once; a body cut or too long leaves
/// nothing behind; unknown tokens and unfinished slots serve nothing.
#[test]
fn puts_must_match_their_slot() {
    let server = server_with("", "");
    let mut c = login(&server, "alice");
    let body = bytes(20_000, 5);
    let path = slot_path(&request_slot(
        &mut c,
        &server,
        "filename='p.png' size='20000' content-type='image/png'",
    ));
    // Not yet uploaded: nothing to GET.
    assert_eq!(get(&server, &path).status, 404);
    // Declared larger than the slot: 413 before a byte is stored.
    let r = http::request(
        &server,
        &format!("PUT {path} HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 20001"),
        &bytes(20_001, 5),
    );
    assert_eq!(r.status, 413, "{r:?}");
    // Another size, another type, no length.
    assert_eq!(
        put(&server, &path, "image/png", &body[..19_999]).status,
        400
    );
    assert_eq!(put(&server, &path, "text/html", &body).status, 400);
    let r = http::request(
        &server,
        &format!("PUT {path} HTTP/1.1\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked"),
        b"0\r\n\r\n",
    );
    assert_eq!(r.status, 411, "{r:?}");
    // A refused PUT on a keep-alive connection: its body is not read, so the answer
    // closes the connection; what follows the body is never taken for a request.
    {
        use std::io::Write;
        let mut s = http::connect(&server);
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/html\r\n\
             Content-Length: 20000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        s.write_all(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.flush().unwrap();
        let all = String::from_utf8_lossy(&http::read_response_lenient(&mut s)).into_owned();
        assert!(all.starts_with("HTTP/1.1 400 "), "{all}");
        assert!(
            all.to_ascii_lowercase().contains("connection: close"),
            "{all}"
        );
        assert_eq!(all.matches("HTTP/1.1 ").count(), 1, "{all}");
    }
    // A body cut short: the connection closes mid-upload, nothing is kept.
    {
        use std::io::Write;
        let mut s = http::connect(&server);
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 20000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body[..5000]).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.conn.send_close_notify();
        let _ = s.flush();
    }
    wait_until(|| files_in(&server).is_empty(), "the partial file removed");
    assert_eq!(get(&server, &path).status, 404);
    // Right: 201, then GET serves it; a second PUT is refused.
    let r = put(&server, &path, "image/png", &body);
    assert_eq!(r.status, 201, "{r:?}");
    let r = get(&server, &path);
    assert_eq!((r.status, r.body.len()), (200, body.len()));
    assert_eq!(r.body, body);
    assert_eq!(r.header("content-length"), Some("20000"));
    assert_eq!(
        r.header("content-disposition")
            .map(|d| d.starts_with("inline")),
        Some(true)
    );
    assert_eq!(put(&server, &path, "image/png", &body).status, 409);
    // Range and ETag.
    let r = http::request(
        &server,
        &format!("GET {path} HTTP/1.1\r\nRange: bytes=10-19"),
        b"",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[10..20]);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/20000"));
    let etag = r.header("etag").unwrap().to_owned();
    let r = http::request(
        &server,
        &format!("GET {path} HTTP/1.1\r\nIf-None-Match: {etag}"),
        b"",
    );
    assert_eq!(r.status, 304);
    // Strangers' tokens.
    assert_eq!(
        get(&server, "/upload/00000000000000000000000000000000/x").status,
        404
    );
    assert_eq!(get(&server, "/upload/../../hearth.db").status, 404);
    assert_eq!(
        put(
            &server,
            "/upload/00000000000000000000000000000000/x",
            "image/png",
            b"x"
        )
        .status,
        403
    );
    assert_eq!(
        put(&server, "/upload/nothex/x", "image/png", b"x").status,
        403
    );
    // An oversized request head: 431, and the server is fine.
    let r = http::request(
        &server,
        &format!("GET {path} HTTP/1.1\r\nX-Big: {}", "a".repeat(40_000)),
        b"",
    );
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(get(&server, &path).status, 200);
    c.assert_alive();
    // The token is a capability: the log (at debug, the tests' level) has a prefix of it
    // at most.
    let token = path
        .trim_start_matches("/upload/")
        .split('/')
        .next()
        .unwrap();
    let log = server.log();
    assert!(log.contains(&format!("/upload/{}", &token[..8])), "{log}");
    assert!(!log.contains(token), "the whole upload token is in the log");
}

fn wait_until(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Files expire (`expire_after_secs`): gone from disk, 404, and the quota is free again.
#[test]
fn files_expire_and_free_the_quota() {
    let server = server_with(
        "expire_after_secs = 2\nquota_bytes_per_account = 30000\n",
        "",
    );
    let mut c = login(&server, "alice");
    let body = bytes(20_000, 9);
    let path = slot_path(&request_slot(
        &mut c,
        &server,
        "filename='a.bin' size='20000'",
    ));
    assert_eq!(
        put(&server, &path, "application/octet-stream", &body).status,
        201
    );
    assert_eq!(get(&server, &path).status, 200);
    let r = request_slot(&mut c, &server, "filename='b.bin' size='20000'");
    assert_eq!(error_condition(&r).0, "resource-constraint");
    wait_until(|| files_in(&server).is_empty(), "the file to expire");
    assert_eq!(get(&server, &path).status, 404);
    let r = request_slot(&mut c, &server, "filename='b.bin' size='20000'");
    slot_path(&r);
}

/// An account's removal (XEP-0077 with slixmpp's plugin) takes its files along.
#[test]
fn removing_an_account_removes_its_files() {
    let server = server_with("", "");
    let mut c = login(&server, "alice");
    let body = bytes(1000, 11);
    let path = slot_path(&request_slot(
        &mut c,
        &server,
        "filename='a.bin' size='1000'",
    ));
    assert_eq!(
        put(&server, &path, "application/octet-stream", &body).status,
        201
    );
    assert_eq!(files_in(&server).len(), 1);
    drop(c);
    slixmpp(&server, "alice", PW, "SCRAM-SHA-256")
        .run(&["unregister"])
        .assert_ok();
    assert!(files_in(&server).is_empty(), "{:?}", files_in(&server));
    assert_eq!(get(&server, &path).status, 404);
}

/// XEP-0156 §3 host-meta (XRD) and host-meta.json, with CORS; a preflight.
#[test]
fn host_meta_and_cors() {
    let server = server_with("", "");
    let ws = format!(
        "wss://{}:{}/xmpp-websocket",
        server.domain(),
        server.http_port()
    );
    let r = get(&server, "/.well-known/host-meta");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/xrd+xml"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let xrd = r.text();
    assert!(
        xrd.contains("<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>"),
        "{xrd}"
    );
    assert!(
        xrd.contains(&format!(
            "rel='urn:xmpp:alt-connections:websocket' href='{ws}'"
        )),
        "{xrd}"
    );
    let r = get(&server, "/.well-known/host-meta.json");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        json["links"][0]["rel"],
        "urn:xmpp:alt-connections:websocket"
    );
    assert_eq!(json["links"][0]["href"], ws);
    for path in [
        "/.well-known/host-meta",
        "/upload/00000000000000000000000000000000/a.jpg",
    ] {
        let r = http::request(
            &server,
            &format!(
                "OPTIONS {path} HTTP/1.1\r\nOrigin: https://web.example\r\n\
                 Access-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: content-type"
            ),
            b"",
        );
        assert_eq!(r.status, 204, "{path}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert!(
            r.header("access-control-allow-methods")
                .unwrap()
                .contains("PUT")
        );
        assert!(
            r.header("access-control-allow-headers")
                .unwrap()
                .contains("Content-Type")
        );
    }
    // RFC 7395 §3.1: a plain GET is no upgrade (426); the WebSocket handshake itself is
    // tested in tests/websocket.rs.
    assert_eq!(get(&server, "/xmpp-websocket").status, 426);
    assert_eq!(get(&server, "/nothing").status, 404);
    let r = http::request(&server, "DELETE /.well-known/host-meta HTTP/1.1", b"");
    assert_eq!(r.status, 405);
    // One keep-alive connection asking without end is slowed: 429 past its burst.
    {
        use std::io::Write;
        let mut s = http::connect(&server);
        let mut reqs = "GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n\r\n".repeat(99);
        reqs.push_str(
            "GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        s.write_all(reqs.as_bytes()).unwrap();
        s.flush().unwrap();
        let all = String::from_utf8_lossy(&http::read_response_lenient(&mut s)).into_owned();
        let ok = all.matches("HTTP/1.1 200 OK").count();
        let slowed = all.matches("HTTP/1.1 429 Too Many Requests").count();
        assert_eq!(ok + slowed, 100, "{all}");
        assert!(slowed > 0 && ok >= 60, "{ok} answered, {slowed} refused");
    }
    // Garbage instead of HTTP: the connection closes, the server goes on.
    {
        use std::io::Write;
        let mut s = http::connect(&server);
        let _ = s.write_all(b"\x00\x01garbage\r\n\r\n");
        let _ = s.flush();
        let _ = http::read_response_lenient(&mut s);
    }
    assert_eq!(get(&server, "/.well-known/host-meta").status, 200);
}

/// `[http] public_url` is what the slot URLs and host-meta say.
#[test]
fn public_url_names_the_urls() {
    let server = server_with("", "public_url = \"https://chat.example.org/\"\n");
    let mut c = login(&server, "alice");
    let r = request_slot(
        &mut c,
        &server,
        "filename='a b.jpg' size='1' content-type='image/jpeg'",
    );
    let put = r
        .child("slot", NS_UPLOAD)
        .and_then(|s| s.child("put", NS_UPLOAD))
        .and_then(|p| p.attr("url"))
        .unwrap()
        .to_owned();
    assert!(put.starts_with("https://chat.example.org/upload/"), "{put}");
    assert!(put.ends_with("/a%20b.jpg"), "{put}");
    let json = get(&server, "/.well-known/host-meta.json").text();
    assert!(
        json.contains("wss://chat.example.org/xmpp-websocket"),
        "{json}"
    );
}

/// What a stranger costs is bounded: a request head dribbled in is cut after the head
/// timeout (10 s), connections from one address past `max_connections_per_address` are
/// closed at once, and the server serves others meanwhile.
#[test]
fn strangers_are_bounded() {
    use std::io::{Read, Write};
    let server = Server::start(ServerOpts {
        extra_toml: "\n[limits]\nmax_connections_per_address = 4\n".into(),
        ..ServerOpts::default()
    });
    // Slowloris: half a request line, then nothing.
    let mut slow = http::connect(&server);
    slow.write_all(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    slow.flush().unwrap();
    let started = Instant::now();
    // Three more are fine; the fifth from the same address is closed unanswered.
    let mut held: Vec<_> = (0..3)
        .map(|_| {
            let mut s = http::connect(&server);
            s.write_all(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s.flush().unwrap();
            let mut b = [0u8; 12];
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"HTTP/1.1 200");
            s
        })
        .collect();
    let refused = std::net::TcpStream::connect(("127.0.0.1", server.http_port())).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(
        matches!((&refused).read(&mut b), Ok(0) | Err(_)),
        "the fifth connection should be closed"
    );
    held.clear();
    let raw = http::read_response_lenient(&mut slow);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(40),
        "cut after {waited:?}"
    );
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"), "{raw:?}");
    assert_eq!(get(&server, "/.well-known/host-meta").status, 200);
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Issue 20: an upload is streamed to disk, never held whole: 64 MiB sent through one
/// PUT moves the server's resident memory by far less than the file (BENCHMARKS.md has
/// the release figures for 100 MiB).
#[test]
fn a_large_upload_keeps_memory_flat() {
    use std::io::Write;
    const SIZE: usize = 64 << 20;
    let server = server_with("", "");
    let pid = server.pid().expect("hearth's pid");
    let mut c = login(&server, "alice");
    let path = slot_path(&request_slot(
        &mut c,
        &server,
        &format!("filename='film.mp4' size='{SIZE}' content-type='video/mp4'"),
    ));
    // Warm up the HTTP path (TLS, hyper, the file threads) with a small upload.
    let small = slot_path(&request_slot(
        &mut c,
        &server,
        "filename='s.bin' size='1000'",
    ));
    assert_eq!(
        put(&server, &small, "application/octet-stream", &bytes(1000, 1)).status,
        201
    );
    let before = vm_rss_kib(pid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(vm_rss_kib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let chunk = bytes(1 << 20, 17);
    let mut s = http::connect(&server);
    s.write_all(
        format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\nContent-Length: {SIZE}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    for _ in 0..SIZE / chunk.len() {
        s.write_all(&chunk).unwrap();
    }
    s.flush().unwrap();
    let r = http::read_response(&mut s);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    let grown = peak.saturating_sub(before);
    eprintln!("VmRSS before {before} KiB, peak during the PUT {peak} KiB (+{grown} KiB)");
    assert!(
        grown < 16 * 1024,
        "RSS grew by {grown} KiB for a 64 MiB upload"
    );
    let stored = std::fs::metadata(
        server
            .data_dir()
            .join("uploads")
            .join(path.split('/').nth(2).unwrap()),
    )
    .unwrap()
    .len();
    assert_eq!(stored, SIZE as u64);
}
