#!/usr/bin/env python3
"""Create benchmark accounts on an XMPP server by in-band registration (XEP-0077).

Used by bench/compare.sh for Prosody and ejabberd: one prosodyctl/ejabberdctl process per
account costs ~0.5 s each, XEP-0077 over one TLS connection per account costs the server
one SCRAM derivation. Standard library only; loopback benchmarks only (certificates are
not checked).

    register.py register --port P --domain D --pattern 'load{}' --count N --password-file F
    register.py register --port P --domain 'v{}.test' --domains M --pattern 's2s{}' --count N ...
        the same accounts on each of M domains of one server (the s2s scenario)
    register.py probe    --port P --domain D --user load0
        prints the SCRAM-SHA-1 server-first-message (shows the iteration count i=)
"""

import argparse
import base64
import os
import re
import socket
import ssl
import sys
import threading

TIMEOUT = 30.0
HEADER = (
    "<?xml version='1.0'?><stream:stream to='{d}' version='1.0' "
    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)

# One context for all connections, without loading the system's CA store (nothing is
# verified: loopback benchmark servers with self-signed certificates).
CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


class Conn:
    def __init__(self, host, port, domain):
        self.domain = domain
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buf = ""
        self.send(HEADER.format(d=domain))
        self.read_until("</stream:features>")
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until("<proceed")
        self.sock = CTX.wrap_socket(self.sock, server_hostname=domain)
        self.buf = ""
        self.send(HEADER.format(d=domain))
        self.features = self.read_until("</stream:features>")

    def send(self, s):
        self.sock.sendall(s.encode())

    def read_until(self, pattern):
        """Reads until `pattern` (a regex) matches; returns the buffer up to the match end."""
        rx = re.compile(pattern, re.S)
        for _ in range(10000):  # bounded: each recv returns at least one byte or fails
            m = rx.search(self.buf)
            if m:
                out, self.buf = self.buf[: m.end()], self.buf[m.end():]
                return out
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("stream closed; got: " + self.buf[-300:])
            self.buf += data.decode(errors="replace")
        raise ConnectionError("no match for " + pattern)

    def close(self):
        try:
            self.send("</stream:stream>")
            self.sock.close()
        except OSError:
            pass


def register_one(args, domain, name, password):
    c = Conn(args.host, args.port, domain)
    try:
        c.send(
            "<iq type='set' id='r1'><query xmlns='jabber:iq:register'>"
            f"<username>{name}</username><password>{password}</password>"
            "</query></iq>"
        )
        reply = c.read_until(r"<iq[^>]*id=['\"]r1['\"].*?(/>|</iq>)")
        if "type='result'" in reply or 'type="result"' in reply:
            return None
        if "<conflict" in reply:
            return None  # already there (a re-run): fine
        return reply
    finally:
        c.close()


def cmd_register(args):
    with open(args.password_file) as f:
        password = f.read()
    if "{}" in args.domain:
        domains = [args.domain.replace("{}", str(d)) for d in range(args.domains)]
    else:
        domains = [args.domain]
    names = [(d, args.pattern.replace("{}", str(i))) for d in domains for i in range(args.count)]
    failures = []
    lock = threading.Lock()
    it = iter(names)

    def worker():
        while True:
            with lock:
                domain, name = next(it, (None, None))
            if name is None:
                return
            try:
                err = register_one(args, domain, name, password)
            except Exception as e:  # report and go on: the caller checks the count
                err = repr(e)
            if err:
                with lock:
                    failures.append((f"{name}@{domain}", err))

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        print(f"{len(failures)} of {len(names)} registrations failed, e.g. {failures[0]}",
              file=sys.stderr)
        return 1
    return 0


def cmd_probe(args):
    c = Conn(args.host, args.port, args.domain)
    nonce = base64.b64encode(os.urandom(12)).decode()
    first = base64.b64encode(f"n,,n={args.user},r={nonce}".encode()).decode()
    c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{first}</auth>")
    reply = c.read_until(r"</challenge>|<failure.*?</failure>")
    m = re.search(r"<challenge[^>]*>([^<]*)</challenge>", reply)
    c.close()
    if not m:
        print("no challenge: " + reply, file=sys.stderr)
        return 1
    print(base64.b64decode(m.group(1)).decode())
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["register", "probe"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", required=True, help="a domain, or a pattern with {}")
    p.add_argument("--domains", type=int, default=1, help="domains 0..N of a pattern")
    p.add_argument("--pattern", default="load{}")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--password-file")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--user", default="load0")
    args = p.parse_args()
    return cmd_register(args) if args.cmd == "register" else cmd_probe(args)


if __name__ == "__main__":
    sys.exit(main())
