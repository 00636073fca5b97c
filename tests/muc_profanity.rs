//! XEP-0045 with profanity, a terminal client, driven in tmux: it connects to hearth,
//! joins a room another client (slixmpp) made, says something there and shows what the
//! room says back.

mod common;

use common::clients::{RunningClient, check_slixmpp, python};
use common::{Server, ServerOpts};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const PW: &str = "a fine password";

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is needed: apt-get install tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tmux session running profanity, killed on drop.
struct Profanity {
    name: String,
}

impl Profanity {
    fn start(home: &std::path::Path) -> Profanity {
        assert!(
            Command::new("profanity").arg("--version").output().is_ok(),
            "profanity is needed: run .ci/run, or apt-get install profanity"
        );
        let name = format!("hearth-muc-{}", std::process::id());
        let cmd = format!(
            "env HOME={h} XDG_CONFIG_HOME={h}/config XDG_DATA_HOME={h}/data TERM=xterm profanity",
            h = home.display()
        );
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &name,
            "-x",
            "200",
            "-y",
            "50",
            &cmd,
        ]);
        Profanity { name }
    }

    fn keys(&self, text: &str) {
        tmux(&["send-keys", "-t", &self.name, "-l", text]);
        tmux(&["send-keys", "-t", &self.name, "Enter"]);
    }

    fn screen(&self) -> String {
        tmux(&["capture-pane", "-p", "-t", &self.name])
    }

    fn wait_for(&self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.screen().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("profanity never showed {what:?}:\n{}", self.screen());
    }
}

impl Drop for Profanity {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.name]);
    }
}

#[test]
fn profanity_joins_a_room_and_talks() {
    let server = Server::start(ServerOpts::default());
    server.add_user("alice", PW);
    server.add_user("bob", PW);
    let room = format!("lounge@conference.{}", server.domain());
    // bob (slixmpp) makes the room and answers what profanity says.
    check_slixmpp();
    let addr = server.c2s_addr();
    let steps = json!([
        {"do": "join", "room": room, "nick": "bob"},
        {"do": "instant", "room": room},
        {"do": "ready"},
        {"do": "wait_body", "room": room, "body": "hello from profanity"},
        {"do": "say", "room": room, "body": "hi profanity"},
        {"do": "sleep", "s": 3},
    ]);
    let mut cmd = Command::new(python());
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/muc_slixmpp.py"))
        .args(["--host", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string()])
        .arg("--cafile")
        .arg(server.cert_path())
        .args(["--jid", &format!("{}/slix", server.jid("bob"))])
        .args(["--password", PW, "--timeout", "40"])
        .args(["--steps", &steps.to_string()]);
    let mut bob = RunningClient::command(cmd);
    bob.wait_for_event("ready", Duration::from_secs(20));

    let home = server.scratch_dir().join("profanity-home");
    std::fs::create_dir_all(&home).unwrap();
    let p = Profanity::start(&home);
    p.wait_for("Profanity", Duration::from_secs(10));
    p.keys(&format!(
        "/connect {} server {} port {} tls trust",
        server.jid("alice"),
        addr.ip(),
        addr.port()
    ));
    p.wait_for("password", Duration::from_secs(10));
    p.keys(PW);
    p.wait_for("logged in", Duration::from_secs(15));
    p.keys(&format!("/join {room} nick alice"));
    p.wait_for("bob", Duration::from_secs(15));
    p.keys("hello from profanity");
    p.wait_for("hi profanity", Duration::from_secs(15));
    let run = bob.finish();
    assert!(run.succeeded(), "{run}");
}
