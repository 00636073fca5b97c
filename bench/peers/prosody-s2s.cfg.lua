-- Prosody 0.12 (Debian 12) for the s2s scenario of bench/compare.sh: federation on, its
-- own domain. The script fills in @DIR@ (this instance's directory), @DOMAIN@, @PORT@
-- (c2s), @S2S_PORT@, @CERT@ and @KEY@; for the instance that hosts many domains it
-- appends more VirtualHost lines. It runs in a mount namespace whose /etc/resolv.conf
-- names the run's dnsmasq. Everything else is as in prosody.cfg.lua.

pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
log = { warn = "@DIR@/prosody.log" }

network_backend = "epoll"
network_settings = { tcp_backlog = 1024; nagle = false }

interfaces = { "127.0.0.1" }
c2s_ports = { @PORT@ }
c2s_direct_tls_ports = { }
s2s_ports = { @S2S_PORT@ }
s2s_direct_tls_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }

modules_enabled = {
	"roster";       -- RFC 6121 rosters
	"saslauth";     -- SASL
	"tls";          -- STARTTLS
	"dialback";     -- XEP-0220: how the servers of this run authenticate each other
	"disco";        -- XEP-0030
	"blocklist";    -- XEP-0191
	"ping";         -- XEP-0199
	"register";     -- XEP-0077: how compare.sh creates the accounts
}

allow_registration = true
min_seconds_between_registrations = 0
registration_throttle_max = 100000
registration_throttle_period = 1

c2s_require_encryption = true
-- TLS on every link, as hearth and ejabberd require; the certificates are self-signed,
-- so none is valid and dialback authenticates (s2s_secure_auth would refuse that).
s2s_require_encryption = true
s2s_secure_auth = false
allow_unencrypted_plain_auth = false

storage = "internal"
authentication = "internal_hashed"
default_iteration_count = 4096

-- libunbound answers NXDOMAIN itself for the RFC 6761 name test. (a default local
-- zone): "transparent" lets it ask the run's dnsmasq (tests/common/peers.rs found this).
unbound = {
	options = { ["local-zone:"] = "test. transparent" };
}

-- A self-signed certificate for @DOMAIN@ made by compare.sh, of the run's key type (also
-- used for any further VirtualHost: dialback does not look at it).
certificates = "@DIR@/certs"
ssl = {
	certificate = "@CERT@";
	key = "@KEY@";
}

VirtualHost "@DOMAIN@"
