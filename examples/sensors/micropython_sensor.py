"""A sensor for hearth with nothing but a socket: MicroPython on an ESP32 (or CPython).

No XMPP library: it opens a TCP connection, upgrades it with STARTTLS, logs in with
SASL PLAIN (RFC 4616, only ever inside TLS), binds a resource, sends one presence with
the reading, and closes. About 100 lines of protocol, written to run on MicroPython
(socket, ssl, binascii) and on CPython alike; tests/device.rs runs this file with
CPython (Debian has no MicroPython for Linux) against a real hearth.

On the board: set the constants below (or call report() from main.py after Wi-Fi is
up). hearth keeps the last reading for the household while the board deep-sleeps.
"""

try:
    import usocket as socket
except ImportError:
    import socket
import ssl
import binascii

HOST = "home.local"        # the Pi; hearth answers mDNS for it
PORT = 5222
DOMAIN = "home.local"      # hearth's domain
USER = "thermo"            # `hearth device add thermo --household`
PASSWORD = "the password hearth device add printed"
CAFILE = None              # CPython: hearth's tls/cert.pem to pin it. MicroPython: see
                           # ssl.SSLContext.load_verify_locations(cadata=...) for yours
NS = "urn:hearth:telemetry:0"


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")


class Link:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, text):
        data = text.encode()
        while data:
            n = self.sock.write(data) if hasattr(self.sock, "write") else self.sock.send(data)
            data = data[n:] if n else data

    def until(self, *marks):
        """Reads until one of `marks` (bytes) is in what came; returns what came."""
        while True:
            for m in marks:
                i = self.buf.find(m)
                if i >= 0:
                    got, self.buf = self.buf[: i + len(m)], self.buf[i + len(m):]
                    return got
            chunk = self.sock.read(512) if hasattr(self.sock, "read") else self.sock.recv(512)
            if not chunk:
                raise OSError("connection closed: " + repr(self.buf[-200:]))
            self.buf += chunk


def open_stream(link, domain):
    link.send("<?xml version='1.0'?><stream:stream to='%s' version='1.0' "
              "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>" % domain)
    return link.until(b"</stream:features>")


def tls_wrap(sock, domain, cafile):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
    else:
        # No pinned certificate: encrypted but not authenticated. Pin hearth's (its
        # SHA-256 fingerprint is printed by `hearth check`) on anything you keep.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(sock, server_hostname=domain)


def report(readings, host=HOST, port=PORT, domain=DOMAIN, user=USER, password=PASSWORD,
           cafile=CAFILE, resource="sensor"):
    """readings: [(name, value, unit)]. Sends them as one presence; raises on failure."""
    addr = socket.getaddrinfo(host, port)[0][-1]
    sock = socket.socket()
    sock.connect(addr)
    link = Link(sock)
    features = open_stream(link, domain)
    if b"urn:ietf:params:xml:ns:xmpp-tls" not in features:
        raise OSError("no STARTTLS offered")
    link.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    if b"<proceed" not in link.until(b"<proceed", b"<failure"):
        raise OSError("STARTTLS refused")
    link = Link(tls_wrap(sock, domain, cafile))
    features = open_stream(link, domain)
    if b"PLAIN" not in features:
        raise OSError("SASL PLAIN not offered")
    creds = binascii.b2a_base64(("\0%s\0%s" % (user, password)).encode()).strip().decode()
    link.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
              % creds)
    answer = link.until(b"<success", b"</failure>")
    if b"<success" not in answer:
        raise OSError("login refused: " + answer.decode())
    link.until(b"/>", b"</success>")
    open_stream(link, domain)
    link.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
              "<resource>%s</resource></bind></iq>" % esc(resource))
    link.until(b"</iq>")
    values = "".join(
        "<value name='%s'%s>%s</value>"
        % (esc(n), (" unit='%s'" % esc(u)) if u else "", esc(v))
        for n, v, u in readings
    )
    status = " · ".join(("%s %s" % (v, u)).strip() for _, v, u in readings)
    link.send("<presence id='r'><status>%s</status><telemetry xmlns='%s'>%s</telemetry>"
              "</presence>" % (esc(status), NS, values))
    # The server's echo of our presence (RFC 6121 §4.2.2), or its error.
    echo = link.until(b"</presence>")
    if b"type='error'" in echo or b'type="error"' in echo:
        raise OSError("presence refused: " + echo.decode())
    link.send("</stream:stream>")
    try:
        link.until(b"</stream:stream>")
    except OSError:
        pass
    sock.close()
    return status


if __name__ == "__main__":
    import sys
    argv = getattr(sys, "argv", [])
    if len(argv) > 6:
        # CPython: micropython_sensor.py HOST PORT DOMAIN USER PASSWORD CAFILE NAME=VALUE[:UNIT]...
        readings = []
        for r in argv[7:]:
            name, _, rest = r.partition("=")
            value, _, unit = rest.partition(":")
            readings.append((name, value, unit))
        print("reported", report(readings, host=argv[1], port=int(argv[2]), domain=argv[3],
                                 user=argv[4], password=argv[5], cafile=argv[6] or None))
    else:
        print("reported", report([("temperature", "21.5", "°C")]))
