//! The OS image's Wi-Fi from the firmware partition (`image/rootfs-overlay/usr/local/sbin/
//! hearth-wifi`, run at boot by `hearth-wifi.service`), run here on the build machine
//! against a temporary "FAT partition" and root directory, with Debian's own
//! `wpa_passphrase` (package wpasupplicant, as in the image). `image/test-image.sh`
//! boots the image with such a file and checks the same on the real disk.
//!
//! The key the file's passphrase becomes is checked against IEEE 802.11i's definition
//! (PBKDF2-HMAC-SHA1, 4096 rounds, the SSID as salt, 32 bytes) computed by Python's
//! hashlib, not by wpa_passphrase itself.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = "image/rootfs-overlay/usr/local/sbin/hearth-wifi";
const CONF: &str = "etc/wpa_supplicant/wpa_supplicant-wlan0.conf";
const WANTS: &str =
    "etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service";

struct Card {
    _dir: tempfile::TempDir,
    fw: PathBuf,
    root: PathBuf,
}

impl Card {
    fn new() -> Card {
        let dir = tempfile::tempdir().unwrap();
        let fw = dir.path().join("firmware");
        let root = dir.path().join("root");
        fs::create_dir_all(&fw).unwrap();
        fs::create_dir_all(&root).unwrap();
        Card {
            _dir: dir,
            fw,
            root,
        }
    }

    fn put(&self, name: &str, text: &str) {
        fs::write(self.fw.join(name), text).unwrap();
    }

    fn run(&self) -> Output {
        assert!(
            Command::new("sh")
                .args(["-c", "command -v wpa_passphrase"])
                .output()
                .unwrap()
                .status
                .success(),
            "wpa_passphrase not found: apt-get install wpasupplicant (.ci/run does)"
        );
        let out = Command::new("sh")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT))
            .arg(&self.fw)
            .arg(&self.root)
            .output()
            .unwrap();
        println!(
            "stdout: {}stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn conf(&self) -> String {
        fs::read_to_string(self.root.join(CONF)).unwrap()
    }

    fn on_card(&self, name: &str) -> bool {
        self.fw.join(name).exists()
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// IEEE 802.11i's PSK: PBKDF2-HMAC-SHA1(passphrase, ssid, 4096, 32), by Python's hashlib.
fn psk(passphrase: &str, ssid: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.pbkdf2_hmac('sha1', sys.argv[1].encode(), sys.argv[2].encode(), 4096, 32).hex())",
            passphrase,
            ssid,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn wpa2_network_is_written_as_its_psk_and_the_file_is_removed() {
    let card = Card::new();
    // As saved by Notepad: CRLF, no newline at the end; quotes and spaces kept in values.
    card.put(
        "hearth-wifi.txt",
        "# our Wi-Fi\r\ncountry = gb\r\nssid=Our \"Home\" 5G\r\npassword=\" correct horse = battery\"",
    );
    let out = card.run();
    assert!(out.status.success());
    assert!(!card.on_card("hearth-wifi.txt"), "the secret stays on FAT");
    assert!(!card.on_card("hearth-wifi-error.txt"));
    assert_eq!(mode(&card.root.join(CONF)), 0o600);
    let conf = card.conf();
    assert!(!conf.contains("horse"), "passphrase in the clear:\n{conf}");
    assert!(conf.contains("\ncountry=GB\n"), "{conf}");
    assert!(
        conf.contains(&format!("\tssid={}\n", hex("Our \"Home\" 5G"))),
        "{conf}"
    );
    let key = psk(" correct horse = battery", "Our \"Home\" 5G");
    assert!(
        conf.contains(&format!("\tpsk={key}\n")),
        "{conf}\nwant {key}"
    );
    assert!(!conf.contains("scan_ssid"), "{conf}");
    let network =
        fs::read_to_string(card.root.join("etc/systemd/network/20-wireless.network")).unwrap();
    assert!(network.contains("Name=wlan0") && network.contains("DHCP=yes"));
    let wants = fs::read_link(card.root.join(WANTS)).unwrap();
    assert_eq!(
        wants,
        Path::new("/lib/systemd/system/wpa_supplicant@.service")
    );
    let regdom =
        fs::read_to_string(card.root.join("etc/modprobe.d/hearth-wifi-country.conf")).unwrap();
    assert_eq!(regdom, "options cfg80211 ieee80211_regdom=GB\n");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Our \"Home\" 5G configured for wlan0 (country GB)"),
        "{said}"
    );
    assert!(!said.contains("horse"));
}

#[test]
fn open_hidden_network_and_raw_psk() {
    let card = Card::new();
    card.put("hearth-wifi.txt", "ssid=cafe\ncountry=DE\nhidden=yes\n");
    assert!(card.run().status.success());
    let conf = card.conf();
    assert!(
        conf.contains("\tkey_mgmt=NONE\n") && conf.contains("\tscan_ssid=1\n"),
        "{conf}"
    );

    let card = Card::new();
    let raw = "0123456789abcdef".repeat(4);
    card.put("hearth-wifi.txt", &format!("ssid=lab\npassword={raw}\n"));
    let out = card.run();
    assert!(out.status.success());
    assert!(card.conf().contains(&format!("\tpsk={raw}\n")));
    assert!(!card.conf().contains("country="));
    assert!(!card.root.join("etc/modprobe.d").exists());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no country given"));
}

/// Each bad file: nothing configured, the file (and its secret) still removed, and a
/// reason on the card that does not repeat the password.
#[test]
fn bad_files_are_refused_removed_and_explained_on_the_card() {
    let cases = [
        (
            "ssid=home\npassword=short7!\n",
            "password must be 8 to 63 characters",
        ),
        (
            &format!("ssid=home\npassword={}\n", "x".repeat(64)),
            "8 to 63",
        ),
        ("ssid=home\npassword=caf\u{e9} au lait\n", "printable ASCII"),
        ("password=long enough\n", "ssid must be 1 to 32 bytes"),
        (
            &format!("ssid={}\n", "n".repeat(33)),
            "ssid must be 1 to 32 bytes",
        ),
        ("ssid=home\ncountry=Britain\n", "two-letter code"),
        (
            "ssid=home\nwifi_password=long enough\n",
            "unknown key 'wifi_password'",
        ),
        ("ssid=home\npassword long enough\n", "without '='"),
        ("ssid=home\nhidden=maybe\n", "hidden must be yes or no"),
    ];
    for (file, why) in cases {
        let card = Card::new();
        card.put("hearth-wifi.txt", file);
        let out = card.run();
        assert!(!out.status.success(), "{file:?} accepted");
        assert!(
            !card.on_card("hearth-wifi.txt"),
            "{file:?} left on the card"
        );
        let error = fs::read_to_string(card.fw.join("hearth-wifi-error.txt")).unwrap();
        assert!(error.contains(why), "{file:?}: {error}");
        assert!(!error.contains("long enough") && !error.contains("short7"));
        assert!(!card.root.join(CONF).exists(), "{file:?} configured");
        assert!(!card.root.join(WANTS).exists());
    }
}

/// Older Raspberry Pi OS releases took a whole wpa_supplicant.conf from the boot
/// partition; people still follow those guides.
#[test]
fn raspberry_pi_os_style_wpa_supplicant_conf_is_installed_as_it_is() {
    let card = Card::new();
    let text = "country=FR\r\nnetwork={\r\n ssid=\"maison\"\r\n psk=\"mot de passe\"\r\n}\r\n";
    card.put("wpa_supplicant.conf", text);
    assert!(card.run().status.success());
    assert!(!card.on_card("wpa_supplicant.conf"));
    assert_eq!(card.conf(), text.replace('\r', ""));
    assert_eq!(mode(&card.root.join(CONF)), 0o600);
    assert!(fs::read_link(card.root.join(WANTS)).is_ok());
}

/// Both kinds of file: hearth-wifi.txt is applied and the other deleted unused, so
/// neither passphrase stays on the card.
#[test]
fn with_both_files_hearth_wifi_txt_wins_and_both_leave_the_card() {
    let card = Card::new();
    card.put(
        "wpa_supplicant.conf",
        "network={\n ssid=\"old\"\n psk=\"old secret\"\n}\n",
    );
    card.put(
        "hearth-wifi.txt",
        "ssid=new\npassword=new secret\ncountry=NL\n",
    );
    let out = card.run();
    assert!(out.status.success());
    assert!(!card.on_card("wpa_supplicant.conf") && !card.on_card("hearth-wifi.txt"));
    let conf = card.conf();
    assert!(conf.contains(&format!("\tssid={}\n", hex("new"))), "{conf}");
    assert!(!conf.contains("secret"), "{conf}");
}

#[test]
fn nothing_on_the_card_changes_nothing() {
    let card = Card::new();
    assert!(card.run().status.success());
    assert_eq!(fs::read_dir(&card.root).unwrap().count(), 0);
    assert_eq!(fs::read_dir(&card.fw).unwrap().count(), 0);
}
