//! `hearth check` from the command line: what it prints and its exit codes (0 good,
//! 2 bad configuration, 3 certificate, 4 port, 5 database).

use std::net::TcpListener;
use std::process::Command;

fn check(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hearth.toml");
    std::fs::write(
        &path,
        config.replace("@DIR@", &dir.path().display().to_string()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn exit_codes_say_what_is_wrong() {
    let good = "domain = \"c.example\"\ndata_dir = \"@DIR@/data\"\nfederation = false\nmdns = false\n\
                [c2s]\nlisten = [\"127.0.0.1:0\"]\ndirect_tls_listen = []\n\
                [http]\nlisten = [\"127.0.0.1:0\"]\n";
    let (code, out) = check(good);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok       configuration: serving c.example"),
        "{out}"
    );

    let (code, out) = check("domian = \"typo\"\n");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown key \"domian\""), "{out}");

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let busy = good.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let (code, out) = check(&busy);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("is in use"), "{out}");

    let missing_cert =
        format!("{good}[tls]\ncert = \"@DIR@/none.pem\"\nkey = \"@DIR@/none.key\"\n");
    let (code, out) = check(&missing_cert);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("none.pem: file not found"), "{out}");
}
