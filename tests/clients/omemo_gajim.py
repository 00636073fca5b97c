#!/usr/bin/python3
"""Legacy OMEMO (eu.siacs.conversations.axolotl) with Gajim's stack: python-nbxmpp's
OMEMO module for the XMPP side and python-axolotl (Debian's python3-axolotl, the Signal
protocol library the gajim-omemo plugin uses) for the keys and sessions. The glue between
the two (AES-128-GCM payload, key+tag wrapped per device) is what a client writes itself;
here it is written after XEP-0384 v0.3 §4.

It is the *other* OMEMO implementation of tests/pep_clients.rs: it answers a client that
uses python-omemo (tests/clients/omemo_client.py --external-peer).

  1. Log in, publish its bundle (`eu.siacs.conversations.axolotl.bundles:<id>`) and device
     list with nbxmpp's set_bundle/set_devicelist, which ask for `access_model=open` as
     publish-options (and reconfigure the node when the precondition fails). Print
     "ready" with the device id.
  2. Wait for an OMEMO message. Read the sender's device list and bundle from the
     sender's PEP service with nbxmpp (request_devicelist, request_bundle; open access,
     no presence subscription) and check the sending device is listed and its identity
     key is the one the pre-key message carries. Decrypt, print "decrypted".
  3. Answer "re: BODY", encrypted over the session the pre-key message built; print
     "sent"; stay --linger seconds and exit 0.

Exit status: 0 done, 1 a step failed ("error" says which), 3 timed out.
The server's certificate is not checked (tests use self-signed ones).
"""

import argparse
import json
import logging
import os
import sys

from gi.repository import GLib

from axolotl.ecc.curve import Curve
from axolotl.identitykey import IdentityKey
from axolotl.protocol.prekeywhispermessage import PreKeyWhisperMessage
from axolotl.protocol.whispermessage import WhisperMessage
from axolotl.sessionbuilder import SessionBuilder  # noqa: F401 - the library's entry point
from axolotl.sessioncipher import SessionCipher
from axolotl.tests.inmemoryaxolotlstore import InMemoryAxolotlStore
from axolotl.util.keyhelper import KeyHelper
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nbxmpp.client import Client
from nbxmpp.const import ConnectionProtocol, ConnectionType
from nbxmpp.modules.omemo import create_omemo_message
from nbxmpp.protocol import JID, Message, Presence
from nbxmpp.structs import OMEMOBundle, OMEMOMessage, StanzaHandler


def describe(e):
    """An nbxmpp stanza error as its condition and text, anything else as repr."""
    cond = getattr(e, "condition", None)
    return f"{type(e).__name__}: {cond} {getattr(e, 'text', '') or ''}".strip() if cond else repr(e)


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


class Keys:
    """python-axolotl's state for one device: identity, 100 pre-keys, a signed pre-key."""

    SPK_ID = 1

    def __init__(self):
        self.store = InMemoryAxolotlStore()
        # XEP-0384 §4.2: a device id is a random 31-bit integer.
        self.device_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF or 1
        ikp = self.store.getIdentityKeyPair()
        self.pre_keys = KeyHelper.generatePreKeys(KeyHelper.getRandomSequence(65536), 100)
        for pk in self.pre_keys:
            self.store.storePreKey(pk.getId(), pk)
        self.spk = KeyHelper.generateSignedPreKey(ikp, self.SPK_ID)
        self.store.storeSignedPreKey(self.SPK_ID, self.spk)

    def bundle(self):
        ikp = self.store.getIdentityKeyPair()
        return OMEMOBundle(
            spk={"id": self.SPK_ID, "key": self.spk.getKeyPair().getPublicKey().serialize()},
            spk_signature=self.spk.getSignature(),
            ik=ikp.getPublicKey().serialize(),
            otpks=[{"id": pk.getId(), "key": pk.getKeyPair().getPublicKey().serialize()}
                   for pk in self.pre_keys])

    def cipher(self, jid, device):
        s = self.store
        return SessionCipher(s, s, s, s, jid, device)

    def decrypt(self, sender, msg):
        """The plaintext of an OMEMOMessage, and whether it came as a pre-key message."""
        if self.device_id not in msg.keys:
            raise ValueError(f"not encrypted for device {self.device_id}: {list(msg.keys)}")
        wrapped, is_prekey = msg.keys[self.device_id]
        cipher = self.cipher(sender, msg.sid)
        if is_prekey:
            key = cipher.decryptPkmsg(PreKeyWhisperMessage(serialized=wrapped), textMsg=False)
        else:
            key = cipher.decryptMsg(WhisperMessage(serialized=wrapped), textMsg=False)
        # XEP-0384 v0.3 §4.4: 16 bytes of key, then the 16-byte GCM tag.
        key, tag = key[:16], key[16:]
        if msg.payload is None:
            return None, is_prekey
        return AESGCM(key).decrypt(msg.iv, msg.payload + tag, None), is_prekey

    def encrypt(self, jid, device, plaintext):
        key, iv = os.urandom(16), os.urandom(12)
        sealed = AESGCM(key).encrypt(iv, plaintext, None)
        payload, tag = sealed[:-16], sealed[-16:]
        wrapped = self.cipher(jid, device).encrypt(key + tag)
        is_prekey = isinstance(wrapped, PreKeyWhisperMessage)
        return OMEMOMessage(sid=self.device_id, iv=iv,
                            keys={device: (wrapped.serialize(), is_prekey)}, payload=payload)


class Peer:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.status = 1
        self.keys = Keys()
        self.handled = False
        self.callbacks = ()
        jid = JID.from_string(args.jid)
        c = Client()
        c.set_domain(jid.domain)
        c.set_username(jid.localpart)
        c.set_resource("gajim")
        c.set_password(args.password)
        c.set_custom_host(f"{args.host}:{args.port}", ConnectionProtocol.TCP,
                          ConnectionType.START_TLS)
        c.set_ignore_tls_errors(True)
        c.subscribe("connected", self.on_connected)
        c.subscribe("connection-failed", self.on_failed)
        c.subscribe("disconnected", self.on_disconnected)
        # After nbxmpp's own handlers have parsed the OMEMO element into properties.
        c.register_handler(StanzaHandler(name="message", callback=self.on_message, priority=50))
        self.client = c
        self.omemo = c.get_module("OMEMO")

    def run(self):
        GLib.timeout_add_seconds(int(self.args.timeout), self.on_timeout)
        self.client.connect()
        self.loop.run()
        return self.status

    def done(self, status):
        self.status = status
        self.client.disconnect()
        GLib.timeout_add(300, self.loop.quit)

    def fail(self, reason):
        emit("error", reason=reason)
        self.done(1)

    def on_timeout(self):
        emit("error", reason="timeout")
        self.done(3)
        return False

    def on_failed(self, _client, _signal):
        emit("error", reason="connection failed", detail=str(self.client.get_error()))
        self.status = 1
        self.loop.quit()

    def on_disconnected(self, _client, _signal):
        if self.status != 0:
            self.loop.quit()

    def on_connected(self, _client, _signal):
        emit("session", jid=str(self.client.get_bound_jid()))
        self.client.send_stanza(Presence())
        self.omemo.set_bundle(self.keys.bundle(), self.keys.device_id, public=True,
                              callback=self.on_bundle_published)

    def on_bundle_published(self, task):
        try:
            task.finish()
        except Exception as e:  # noqa: BLE001 - reported
            self.fail(f"publishing the bundle: {describe(e)}")
            return
        self.omemo.set_devicelist([self.keys.device_id], public=True,
                                  callback=self.on_devicelist_published)

    def on_devicelist_published(self, task):
        try:
            task.finish()
        except Exception as e:  # noqa: BLE001 - reported
            self.fail(f"publishing the device list: {describe(e)}")
            return
        emit("ready", device_id=self.keys.device_id)

    def on_message(self, _client, _stanza, properties):
        if not properties.is_omemo or self.handled:
            return
        self.handled = True
        sender = properties.jid.bare
        msg = properties.omemo
        emit("received", sender=sender, sender_device=msg.sid,
             prekey=bool(msg.keys.get(self.keys.device_id, (b"", False))[1]))

        # Gajim's way with an unknown device: read the sender's device list from PEP.
        def on_devicelist(task):
            try:
                devices = task.finish()
            except Exception as e:  # noqa: BLE001 - reported
                self.fail(f"reading {sender}'s device list: {describe(e)}")
                return
            emit("devicelist", owner=sender, ids=sorted(devices or []))
            if msg.sid not in (devices or []):
                self.fail(f"device {msg.sid} not in {sender}'s device list {devices}")
                return
            self.omemo.request_bundle(JID.from_string(sender), msg.sid, callback=on_bundle)

        def on_bundle(task):
            try:
                bundle = task.finish()
            except Exception as e:  # noqa: BLE001 - reported
                self.fail(f"reading {sender}'s bundle: {describe(e)}")
                return
            emit("bundle", owner=sender, device=msg.sid, prekeys=len(bundle.otpks))
            self.answer(sender, msg, bundle)

        # nbxmpp keeps only weak references to task callbacks: these closures must live.
        self.callbacks = (on_devicelist, on_bundle)
        self.omemo.request_devicelist(JID.from_string(sender), callback=on_devicelist)

    def answer(self, sender, msg, bundle):
        try:
            plaintext, is_prekey = self.keys.decrypt(sender, msg)
        except Exception as e:  # noqa: BLE001 - reported
            self.fail(f"decrypting: {type(e).__name__}: {e}")
            return
        # The identity the session was built with is the one the sender publishes.
        published = IdentityKey(Curve.decodePoint(bundle.ik, 0))
        record = self.keys.store.loadSession(sender, msg.sid)
        in_session = record.getSessionState().getRemoteIdentityKey()
        if in_session is None or in_session.serialize() != published.serialize():
            self.fail("the session's identity key is not the published one")
            return
        body = plaintext.decode() if plaintext is not None else None
        emit("decrypted", sender=sender, body=body, prekey=is_prekey)
        if body is None:
            self.fail("an empty OMEMO message first")
            return
        reply = Message(to=JID.from_string(sender), typ="chat")
        create_omemo_message(reply, self.keys.encrypt(sender, msg.sid, f"re: {body}".encode()))
        self.client.send_stanza(reply)
        emit("sent", to=sender, body=f"re: {body}")
        GLib.timeout_add(int(self.args.linger * 1000), self.finish)

    def finish(self):
        self.done(0)
        return False  # once


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--linger", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr)
    status = Peer(args).run()
    emit("exit", status=status)
    sys.exit(status)


if __name__ == "__main__":
    main(sys.argv[1:])
