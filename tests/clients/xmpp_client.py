#!/usr/bin/python3
"""A real XMPP client (slixmpp) driven from the command line, for integration tests.

It connects (STARTTLS or direct TLS, XEP-0368), authenticates with one forced SASL
mechanism, binds a resource, runs one action and exits. Every line it prints on stdout
is one JSON object with an "event" key, so a test can read it line by line; slixmpp's
own log goes to stderr (--debug for more of it). Nothing here knows which server it
talks to.

Exit status: 0 the action succeeded, 1 it failed (bad reply, error, disconnect),
2 authentication failed (the SASL <failure/> condition is printed), 3 timed out.

Actions (the target defaults to the account's domain, i.e. the server itself):
  login                      print the bound JID
  send --to JID --body TEXT  send a chat message; with --expect-reply wait for
                             "echo: TEXT" from --to (see receive --echo)
  receive                    send presence, print {"event": "ready"}, wait for one chat
                             message matching --expect-from/--expect-body; --echo
                             answers it with "echo: BODY"
  ping [--to JID]            XEP-0199, requires an iq result (an error fails)
  disco [--to JID]           XEP-0030 disco#info: identities and features
  version [--to JID]         XEP-0092 software version
  time [--to JID]            XEP-0202 entity time
  roster                     RFC 6121 roster get: the items with their subscriptions
  adhoc [--node NODE] [--field VAR=VALUE ...]
                             XEP-0050 with slixmpp's xep_0050 workflow: list the commands
                             (get_commands), then with --node start it (start_command),
                             fill its form with the --field values (repeat a VAR for a
                             multi-value field) and submit it (complete_command); prints
                             the form, then the completed command's notes and result
                             form, or the error
  chat-with --contact JID    RFC 6121 end to end: fetch the roster, send presence with
                             --status, subscribe to the contact and approve its request;
                             once subscribed both ways and its presence shows
                             --expect-status, print "friends"; then --send a chat message,
                             wait for --expect-body, and with --wait-offline wait for the
                             contact to go offline and send --send-after-offline;
                             --publish-nick publishes an XEP-0172 nick over PEP once
                             friends, --expect-nick waits for the contact's (slixmpp's
                             xep_0172/xep_0163, notified through XEP-0115 +notify)
  household --status TEXT --expect JID=STATUS ...
                             a shared roster group with no subscribing: fetch the roster,
                             send presence with --status, wait until available presence
                             from each --expect JID (bare) has shown its STATUS, print
                             "household" with the roster and the presence seen, stay
                             --linger seconds for the others to see us; any subscription
                             stanza received is printed as "subscription_stanza"
  register [--token T]       XEP-0077 with slixmpp's xep_0077 plugin: create the account
                             --jid/--password before login (with an XEP-0401 <preauth/>
                             token when given), print "registered" (or "register_failed"
                             with the condition, exit 1), then log in to it
  passwd --new-password P    XEP-0077 §3.3: change the logged-in account's password
  unregister                 XEP-0077 §3.2: remove the logged-in account
  caps                       XEP-0115 with slixmpp's xep_0115 plugin: it reads the
                             server's <c/> stream feature, asks disco#info for node#ver
                             and checks the verification string itself; print "caps"
                             with the verified ver and the features once it accepted
                             it (exit 1 if it never does)
  carbons                    XEP-0280 with slixmpp's xep_0280 plugin: enable carbons
                             (unless --no-enable; --disable-at-once disables them again
                             right away), send presence with --priority, print "ready",
                             send each --send JID=BODY (--send-private adds carbons'
                             <private/>, --send-no-copy XEP-0334's <no-copy/>), print
                             each carbon copy ("carbon": direction, the copy's from and
                             the forwarded message's from/to/body) and each message
                             ("message"); once --expect carbons came, stay --linger
                             seconds, then exit 0
  upload --file PATH [--content-type T] [--skip-discovery]
                             XEP-0363 with slixmpp's xep_0363 plugin: discover the upload
                             service in the server's disco#items, ask a slot and PUT the
                             file (aiohttp, trusting --cafile; every host name resolves to
                             --host); print "uploaded" with the GET URL. --skip-discovery
                             names upload.<domain> with no size limit known, so the
                             server's own checks answer
  download --url URL         GET the URL as above; print "downloaded" with the status,
                             size, SHA-256 and the headers that matter
  telemetry --contact JID --expect-status TEXT [--expect-unavailable]
                             hearth's sensors (issue 21): fetch the roster, send presence,
                             print "ready", then print each presence from the contact as
                             "device_presence" (type, status and the values of its
                             urn:hearth:telemetry:0 element); done once available presence
                             with --expect-status came (and, with --expect-unavailable,
                             unavailable presence after it)
  mam [--with JID] [--max N] [--reverse]
                             XEP-0313 with slixmpp's xep_0313 plugin: page through the
                             account's whole archive (XEP-0059, N per page, newest page
                             first with --reverse), print "mam" with the bodies in the
                             order received, the archive ids and the number of pages

Runs with Debian's python3-slixmpp (1.8) as well as newer slixmpp from PyPI. SCRAM-*-PLUS
is not usable from Python on TLS 1.3: CPython's ssl module has no tls-exporter
(RFC 9266) channel binding, only tls-unique, which TLS 1.3 does not define.
"""

import argparse
import asyncio
import json
import logging
import pathlib
import ssl
import sys
import xml.etree.ElementTree as ET

try:
    import slixmpp
    from slixmpp.exceptions import IqError, IqTimeout
except ImportError:  # pragma: no cover - reported as a JSON line like any failure
    print(json.dumps({"event": "error", "reason": "slixmpp is not installed for " + sys.executable}),
          flush=True)
    sys.exit(1)

EXIT_OK, EXIT_FAIL, EXIT_AUTH, EXIT_TIMEOUT = 0, 1, 2, 3


def emit(event, **fields):
    fields = {"event": event, **fields}
    print(json.dumps(fields, sort_keys=True), flush=True)


def jid_matches(expected, actual):
    """A full expected JID must match exactly; a bare one matches any resource."""
    expected = slixmpp.JID(expected)
    actual = slixmpp.JID(actual)
    if expected.resource:
        return expected.full == actual.full
    return expected.bare == actual.bare


class Client(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password, sasl_mech=args.mech)
        self.args = args
        self.result = None  # asyncio.Future set to the exit status
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0092")
        self.register_plugin("xep_0199", {"keepalive": False})
        self.register_plugin("xep_0202")
        self.register_plugin("xep_0203")
        self.register_plugin("xep_0050")
        if args.action in ("register", "passwd", "unregister"):
            self.register_plugin("xep_0077")
        if args.action == "caps":
            self.register_plugin("xep_0115")
        if args.action == "carbons":
            self.register_plugin("xep_0280")
            self.add_event_handler("carbon_received", self.on_carbon_received)
            self.add_event_handler("carbon_sent", self.on_carbon_sent)
            self.carbons_seen = 0
        if args.action == "chat-with" and (args.publish_nick or args.expect_nick):
            # XEP-0172 over XEP-0163: the plugin adds nick+notify to our disco features,
            # and XEP-0115 puts their hash in our presence.
            self.register_plugin("xep_0115")
            self.register_plugin("xep_0163")
            self.register_plugin("xep_0172")
            self.add_event_handler("user_nick_publish", self.on_nick)
        self.got_nick = False
        self.nick_published = False
        if args.action == "upload":
            self.register_plugin("xep_0363")
        if args.action == "mam":
            self.register_plugin("xep_0059")
            self.register_plugin("xep_0313")
        if args.action == "register":
            # Only with a handler does the plugin register before logging in.
            self.add_event_handler("register", self.on_register)
            # COMPAT slixmpp 1.8-1.9: stanzas sent before the session starts are queued,
            # the plugin's registration iqs included, so they would never leave; this
            # switch (what slixmpp's own tests use) lets them through.
            self._always_send_everything = True
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("failed_all_auth", self.on_failed_all_auth)
        self.add_event_handler("stream_error", self.on_stream_error)
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("presence_available", self.on_presence_available)
        self.add_event_handler("presence_unavailable", self.on_presence_unavailable)
        self.add_event_handler("roster_update", self.on_roster_update)
        for kind in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            self.add_event_handler("presence_" + kind, self.on_subscription_stanza)
        if args.action == "telemetry":
            self.add_event_handler("presence", self.on_device_presence)
            self.device_status_seen = False
        # household: bare JID -> the last available status seen from it
        self.household_seen = {}
        self.household_done = False
        self.auth_condition = None
        # chat-with: approve the contact's request ourselves, but subscribe explicitly.
        self.roster.auto_authorize = True
        self.roster.auto_subscribe = False
        self.contact_status = None  # the contact's last available status text
        self.friends = False
        self.got_body = False
        self.offline_sent = False

    # -- outcome -------------------------------------------------------------------

    def finish(self, status):
        if self.result is not None and not self.result.done():
            self.result.set_result(status)

    def fail(self, reason, **fields):
        emit("error", reason=reason, **fields)
        self.finish(EXIT_FAIL)

    # -- connection events ---------------------------------------------------------

    def on_failed_auth(self, failure):
        condition = failure["condition"] if failure is not None else None
        self.auth_condition = condition or self.auth_condition
        emit("auth_failed", mechanism=self.args.mech, condition=condition)

    def on_failed_all_auth(self, _event=None):
        if self.auth_condition is None:
            emit("auth_failed", mechanism=self.args.mech, condition=None,
                 reason="mechanism not offered or not usable")
        self.finish(EXIT_AUTH)

    def on_stream_error(self, error):
        emit("stream_error", condition=error["condition"], text=error["text"])

    def on_connection_failed(self, error):
        self.fail("connection failed", detail=str(error))

    def on_disconnected(self, reason=None):
        # Reached after every successful action too; only an early disconnect is a failure.
        if self.result is not None and not self.result.done():
            self.fail("disconnected", detail=str(reason))

    # -- XEP-0077 before login -------------------------------------------------------

    async def on_register(self, form):
        query = form["register"]
        form_fields = [f.get("var") for f in query.xml.iter("{jabber:x:data}field")]
        emit("register_form", instructions=query["instructions"] or None,
             legacy=[f for f in ("username", "password")
                     if query.xml.find("{jabber:iq:register}" + f) is not None],
             form_fields=form_fields)
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        if self.args.token:
            preauth = ET.SubElement(iq["register"].xml, "{urn:xmpp:pars:0}preauth")
            preauth.set("token", self.args.token)
        try:
            await iq.send(timeout=self.args.iq_timeout)
            emit("registered", jid=self.boundjid.bare)
        except IqError as e:
            emit("register_failed", condition=e.iq["error"]["condition"],
                 type=e.iq["error"]["type"], text=e.iq["error"]["text"] or None)
            self.finish(EXIT_FAIL)
            self.disconnect()
        except IqTimeout:
            self.fail("iq timeout")

    # -- the session ---------------------------------------------------------------

    def target(self):
        return self.args.to or self.boundjid.domain

    async def on_session_start(self, _event):
        emit("session_start", jid=self.boundjid.full, mechanism=self.args.mech)
        action = self.args.action
        try:
            if action == "login":
                self.finish(EXIT_OK)
            elif action == "send":
                self.send_presence()
                self.send_message(mto=self.args.to, mbody=self.args.body, mtype="chat")
                emit("sent", to=self.args.to, body=self.args.body)
                if not self.args.expect_reply:
                    self.finish(EXIT_OK)
            elif action == "receive":
                # Available presence: RFC 6121 §8.5.2 routes bare-JID messages only to
                # available resources.
                self.send_presence()
                emit("ready", jid=self.boundjid.full)
            elif action == "ping":
                await self["xep_0199"].send_ping(self.target(), timeout=self.args.iq_timeout)
                emit("pong", target=self.target())
                self.finish(EXIT_OK)
            elif action == "disco":
                iq = await self["xep_0030"].get_info(jid=self.target(), local=False,
                                                      timeout=self.args.iq_timeout)
                info = iq["disco_info"]
                identities = [
                    {"category": i[0], "type": i[1], "name": i[3] if len(i) > 3 else None}
                    for i in info["identities"]
                ]
                emit("disco_info", target=self.target(), identities=identities,
                     features=sorted(info["features"]))
                self.finish(EXIT_OK)
            elif action == "version":
                iq = await self["xep_0092"].get_version(self.target(), timeout=self.args.iq_timeout)
                version = iq["software_version"]
                emit("version", target=self.target(), name=version["name"],
                     version=version["version"], os=version["os"] or None)
                self.finish(EXIT_OK if version["name"] else EXIT_FAIL)
            elif action == "time":
                iq = await self["xep_0202"].get_entity_time(self.target(),
                                                             timeout=self.args.iq_timeout)
                # Read the raw text: slixmpp 1.8's own tzo parser rejects "+00:00".
                xml = iq["entity_time"].xml
                tzo = xml.findtext("{urn:xmpp:time}tzo")
                utc = xml.findtext("{urn:xmpp:time}utc")
                emit("time", target=self.target(), tzo=tzo, utc=utc)
                # XEP-0202 §3 / XEP-0082: tzo is "Z" or [+-]hh:mm; utc ends in Z.
                well_formed = bool(tzo) and bool(utc) and utc.endswith("Z") and (
                    tzo == "Z" or (len(tzo) == 6 and tzo[0] in "+-" and tzo[3] == ":"))
                self.finish(EXIT_OK if well_formed else EXIT_FAIL)
            elif action == "roster":
                await self.get_roster(timeout=self.args.iq_timeout)
                items = {jid: {"subscription": self.client_roster[jid]["subscription"],
                               "name": self.client_roster[jid]["name"],
                               "groups": sorted(self.client_roster[jid]["groups"])}
                         for jid in self.client_roster}
                emit("roster", items=items)
                self.finish(EXIT_OK)
            elif action == "household":
                await self.get_roster(timeout=self.args.iq_timeout)
                self.send_presence(pstatus=self.args.status)
                emit("ready", jid=self.boundjid.full)
                self.check_household()
            elif action == "telemetry":
                await self.get_roster(timeout=self.args.iq_timeout)
                self.send_presence()
                emit("ready", jid=self.boundjid.full)
            elif action == "adhoc":
                items = await self["xep_0050"].get_commands(self.target(),
                                                            timeout=self.args.iq_timeout)
                emit("commands", nodes=[i[1] for i in items["disco_items"]["items"]])
                if self.args.node is None:
                    self.finish(EXIT_OK)
                    return
                session = {"next": self.on_command_form, "error": self.on_command_error}
                self["xep_0050"].start_command(self.target(), self.args.node, session)
            elif action == "register":
                self.finish(EXIT_OK)
            elif action == "passwd":
                await self["xep_0077"].change_password(self.args.new_password,
                                                        jid=self.boundjid.domain,
                                                        timeout=self.args.iq_timeout)
                emit("password_changed", jid=self.boundjid.bare)
                self.finish(EXIT_OK)
            elif action == "unregister":
                await self["xep_0077"].cancel_registration(jid=self.boundjid.domain,
                                                            timeout=self.args.iq_timeout)
                emit("unregistered", jid=self.boundjid.bare)
                self.finish(EXIT_OK)
            elif action == "carbons":
                await self.start_carbons()
            elif action == "caps":
                await self.check_caps()
            elif action == "mam":
                await self.mam_all()
            elif action == "upload":
                await self.http_upload()
            elif action == "download":
                await self.http_download()
            elif action == "chat-with":
                await self.get_roster(timeout=self.args.iq_timeout)
                self.send_presence(pstatus=self.args.status)
                self.send_presence(pto=self.args.contact, ptype="subscribe")
                emit("subscribing", contact=self.args.contact)
        except IqError as e:
            self.fail("iq error", condition=e.iq["error"]["condition"], type=e.iq["error"]["type"])
        except IqTimeout:
            self.fail("iq timeout")
        except Exception as e:  # noqa: BLE001 - any surprise is a failed action, not a hang
            self.fail("exception", detail=repr(e))

    # -- http upload (XEP-0363) -------------------------------------------------------

    async def http_upload(self):
        import slixmpp.plugins.xep_0363.http_upload as http_upload
        from slixmpp.plugins.xep_0363 import FileTooBig, HTTPError
        # The plugin opens its own aiohttp session: give it ours (certificate, resolver).
        http_upload.ClientSession = lambda *a, **kw: http_session(self.args, *a, **kw)
        plugin = self["xep_0363"]
        if self.args.skip_discovery:
            plugin.upload_service = slixmpp.JID("upload." + self.boundjid.domain)
            plugin.max_file_size = float("+inf")
        else:
            await self.discover_upload(plugin)
        try:
            url = await plugin.upload_file(pathlib.Path(self.args.file),
                                           content_type=self.args.content_type,
                                           timeout=self.args.iq_timeout)
        except FileTooBig as e:
            self.fail("file too big", detail=str(e))
            return
        except HTTPError as e:
            self.fail("http error", detail=str(e))
            return
        emit("uploaded", url=url, service=str(plugin.upload_service),
             max_file_size=plugin.max_file_size if plugin.max_file_size != float("+inf") else None)
        self.finish(EXIT_OK)

    async def discover_upload(self, plugin):
        """XEP-0363 §2 as the plugin's find_upload_service does it: the server's
        disco#items, then each item's disco#info, and max-file-size from its XEP-0128
        form. COMPAT slixmpp 1.8.3 on Python >= 3.11: the plugin's own walk
        (XEP_0030.get_info_from_domain) hands coroutines to asyncio.wait, which raises
        TypeError, so the same walk is done here and the plugin told its outcome."""
        disco = self["xep_0030"]
        items = await disco.get_items(jid=self.boundjid.domain, timeout=self.args.iq_timeout)
        for item in items["disco_items"]["items"]:
            info = await disco.get_info(jid=item[0], timeout=self.args.iq_timeout)
            if "urn:xmpp:http:upload:0" not in info["disco_info"]["features"]:
                continue
            plugin.upload_service = info["from"]
            for form in info["disco_info"].iterables:
                values = form["values"]
                if values["FORM_TYPE"] == ["urn:xmpp:http:upload:0"]:
                    plugin.max_file_size = int(values["max-file-size"])
            return

    async def http_download(self):
        import hashlib
        async with http_session(self.args) as session:
            async with session.get(self.args.url) as response:
                digest = hashlib.sha256()
                size = 0
                async for chunk in response.content.iter_chunked(65536):
                    digest.update(chunk)
                    size += len(chunk)
                headers = {k.lower(): v for k, v in response.headers.items()}
                emit("downloaded", status=response.status, size=size, sha256=digest.hexdigest(),
                     headers={k: headers.get(k) for k in (
                         "content-type", "content-disposition", "x-content-type-options",
                         "access-control-allow-origin", "content-length")})
        self.finish(EXIT_OK)

    # -- mam -----------------------------------------------------------------------

    async def mam_all(self):
        """Every archived message, page by page, through the plugin's RSM iterator."""
        with_jid = slixmpp.JID(self.args.with_jid) if self.args.with_jid else None
        pages = 0
        bodies, ids = [], []
        # slixmpp 1.8's iterate() does not yield its pages; retrieve(iterator=True) does.
        it = self["xep_0313"].retrieve(with_jid=with_jid, iterator=True,
                                        reverse=self.args.reverse,
                                        rsm={"max": self.args.max})
        async for page in it:
            pages += 1
            results = list(page["mam"]["results"])
            if self.args.reverse:
                results.reverse()
            for msg in results:
                fwd = msg["mam_result"]["forwarded"]
                bodies.append(fwd["stanza"]["body"])
                ids.append(msg["mam_result"]["id"])
        emit("mam", bodies=bodies, ids=ids, pages=pages)
        self.finish(EXIT_OK)

    # -- adhoc ---------------------------------------------------------------------

    # -- caps (XEP-0115) ----------------------------------------------------------------

    async def check_caps(self):
        domain = self.boundjid.domain
        if "caps" not in self.features:
            self.fail("no caps stream feature")
            return
        # The plugin verifies in the background; it records the string for the domain
        # only once the hash of the node's disco#info matched it.
        for _ in range(100):
            ver = await self["xep_0115"].get_verstring(domain)
            if ver:
                caps = await self["xep_0115"].get_caps(jid=domain)
                features = sorted(caps["features"]) if caps is not None else None
                emit("caps", ver=str(ver), features=features)
                self.finish(EXIT_OK)
                return
            await asyncio.sleep(0.1)
        self.fail("the server's verification string was never accepted")

    # -- carbons (XEP-0280) ----------------------------------------------------------

    async def start_carbons(self):
        if not self.args.no_enable:
            await self["xep_0280"].enable(timeout=self.args.iq_timeout)
            emit("carbons_enabled")
            if self.args.disable_at_once:
                await self["xep_0280"].disable(timeout=self.args.iq_timeout)
                emit("carbons_disabled")
        self.send_presence(ppriority=self.args.priority)
        emit("ready", jid=self.boundjid.full)
        for kind, spec in self.args.sends:
            to, _, body = spec.partition("=")
            msg = self.make_message(mto=to, mbody=body, mtype="chat")
            if kind == "private":
                msg.enable("carbon_private")
            elif kind == "no-copy":
                msg.xml.append(ET.Element("{urn:xmpp:hints}no-copy"))
            msg.send()
            emit("sent", to=to, body=body, kind=kind)
        self.check_carbons_done()

    def check_carbons_done(self):
        if self.carbons_seen >= self.args.expect and not getattr(self, "carbons_done", False):
            self.carbons_done = True
            asyncio.get_event_loop().call_later(self.args.linger, self.finish, EXIT_OK)

    def on_carbon(self, direction, outer, inner):
        self.carbons_seen += 1
        emit("carbon", direction=direction, copy_from=str(outer["from"]),
             copy_to=str(outer["to"]), copy_type=outer["type"], sender=str(inner["from"]),
             to=str(inner["to"]), body=inner["body"])
        self.check_carbons_done()

    def on_carbon_received(self, msg):
        self.on_carbon("received", msg, msg["carbon_received"])

    def on_carbon_sent(self, msg):
        self.on_carbon("sent", msg, msg["carbon_sent"])

    def on_command_form(self, iq, session):
        command = iq["command"]
        if command["status"] == "completed":
            self.on_command_done(iq, session)
            return
        form = command["form"]
        fields = form.get_fields()
        emit("command_form", status=command["status"], sessionid=command["sessionid"],
             form_type=form["type"], fields={var: f["type"] for var, f in fields.items()},
             hidden={var: f["value"] for var, f in fields.items() if f["type"] == "hidden"})
        values = {}
        for item in self.args.field or []:
            var, _, value = item.partition("=")
            values.setdefault(var, []).append(value)
        for var, given in values.items():
            if var not in fields:
                self.fail("no such field in the form", var=var)
                return
            multi = fields[var]["type"] in ("jid-multi", "text-multi", "list-multi")
            fields[var]["value"] = given if multi else given[0]
        # Values first: a submitted form drops the fields' types (slixmpp's set_type).
        form["type"] = "submit"
        session["payload"] = form
        session["next"] = self.on_command_done
        self["xep_0050"].complete_command(session)

    def on_command_done(self, iq, _session):
        command = iq["command"]
        result = {}
        for var, field in command["form"].get_fields().items():
            result[var] = [v.text or "" for v in field.xml.findall("{jabber:x:data}value")]
        emit("command_done", status=command["status"],
             notes=[{"type": t, "text": text} for t, text in command["notes"]], result=result)
        self.finish(EXIT_OK if command["status"] == "completed" else EXIT_FAIL)

    def on_command_error(self, iq, _session):
        emit("command_error", condition=iq["error"]["condition"], type=iq["error"]["type"])
        self.finish(EXIT_FAIL)

    # -- chat-with -----------------------------------------------------------------

    def is_contact(self, jid):
        return self.args.action == "chat-with" and slixmpp.JID(jid).bare == \
            slixmpp.JID(self.args.contact).bare

    def subscription(self):
        return self.client_roster[slixmpp.JID(self.args.contact).bare]["subscription"]

    def on_roster_update(self, iq):
        if self.args.action != "chat-with":
            return
        emit("roster_push", subscription=self.subscription())
        self.check_friends()

    # -- household -----------------------------------------------------------------

    def on_device_presence(self, pres):
        """telemetry: a device's presence, with hearth's telemetry values."""
        if slixmpp.JID(pres["from"]).bare != slixmpp.JID(self.args.contact).bare:
            return
        ns = "{urn:hearth:telemetry:0}"
        values = []
        tel = pres.xml.find(ns + "telemetry")
        if tel is not None:
            values = [{"name": v.get("name"), "unit": v.get("unit"), "value": v.text}
                      for v in tel.findall(ns + "value")]
        kind = pres["type"]
        emit("device_presence", sender=str(pres["from"]), type=kind,
             status=pres["status"], values=values)
        if kind == "unavailable" and self.device_status_seen and self.args.expect_unavailable:
            self.finish(EXIT_OK)
        elif kind != "unavailable" and pres["status"] == self.args.expect_status:
            self.device_status_seen = True
            emit("device_status", status=pres["status"], values=values)
            if not self.args.expect_unavailable:
                self.finish(EXIT_OK)

    def on_subscription_stanza(self, pres):
        emit("subscription_stanza", type=pres["type"], sender=str(pres["from"]))

    def household_expected(self):
        """--expect JID=STATUS as {bare JID: status}."""
        wanted = {}
        for spec in self.args.expect or []:
            jid, _, status = spec.partition("=")
            wanted[slixmpp.JID(jid).bare] = status
        return wanted

    def check_household(self):
        if self.household_done:
            return
        wanted = self.household_expected()
        if any(self.household_seen.get(j) != st for j, st in wanted.items()):
            return
        self.household_done = True
        items = {jid: {"subscription": self.client_roster[jid]["subscription"],
                       "name": self.client_roster[jid]["name"],
                       "groups": sorted(self.client_roster[jid]["groups"])}
                 for jid in self.client_roster}
        emit("household", seen=self.household_seen, roster=items)
        asyncio.get_event_loop().call_later(self.args.linger, self.finish, EXIT_OK)

    def on_presence_available(self, pres):
        if self.args.action == "household":
            bare = slixmpp.JID(pres["from"]).bare
            if bare != self.boundjid.bare:
                self.household_seen[bare] = pres["status"]
                emit("presence", sender=str(pres["from"]), status=pres["status"])
                self.check_household()
            return
        if not self.is_contact(pres["from"]):
            return
        self.contact_status = pres["status"]
        emit("contact_presence", sender=str(pres["from"]), status=pres["status"],
             show=pres["show"] or None)
        self.check_friends()

    def on_presence_unavailable(self, pres):
        if not self.is_contact(pres["from"]) or not self.friends:
            return
        emit("contact_offline", sender=str(pres["from"]))
        if self.args.wait_offline and not self.offline_sent:
            self.offline_sent = True
            body = self.args.send_after_offline
            if body:
                self.send_message(mto=self.args.contact, mbody=body, mtype="chat")
                emit("sent", to=self.args.contact, body=body)
            self.check_done()

    def check_friends(self):
        if self.friends or self.subscription() != "both" or \
                self.contact_status != self.args.expect_status:
            return
        self.friends = True
        emit("friends", contact=self.args.contact, status=self.contact_status)
        if self.args.send:
            self.send_message(mto=self.args.contact, mbody=self.args.send, mtype="chat")
            emit("sent", to=self.args.contact, body=self.args.send)
        if self.args.publish_nick:
            asyncio.ensure_future(self.publish_nick())
        self.check_done()

    async def publish_nick(self):
        try:
            await self.plugin["xep_0172"].publish_nick(self.args.publish_nick,
                                                       timeout=self.args.iq_timeout)
            emit("nick_published", nick=self.args.publish_nick)
            self.nick_published = True
            self.check_done()
        except (IqError, IqTimeout) as e:
            emit("nick_publish_failed", error=str(e))
            self.finish(EXIT_FAIL)

    def on_nick(self, msg):
        nick = msg["pubsub_event"]["items"]["item"]["nick"]["nick"]
        if not self.is_contact(msg["from"]):
            # Our own, through our server's PEP to our own resources (XEP-0163 §4.3.2).
            emit("other_nick", sender=str(msg["from"]), nick=nick)
            return
        emit("nick", sender=str(msg["from"]), nick=nick)
        if nick == self.args.expect_nick:
            self.got_nick = True
            self.check_done()

    def check_done(self):
        if not self.friends:
            return
        if self.args.expect_body is not None and not self.got_body:
            return
        if self.args.wait_offline and not self.offline_sent:
            return
        if self.args.expect_nick is not None and not self.got_nick:
            return
        if self.args.publish_nick is not None and not self.nick_published:
            return
        self.finish(EXIT_OK)

    def on_message(self, msg):
        if self.args.action == "carbons":
            if msg["body"]:
                emit("message", sender=str(msg["from"]), to=str(msg["to"]), body=msg["body"],
                     type=msg["type"])
            return
        types = ("chat", "normal")
        if self.args.action == "receive" and self.args.headline:
            types += ("headline",)
        if msg["type"] not in types or not msg["body"]:
            if msg["type"] == "error":
                emit("message_error", sender=str(msg["from"]),
                     condition=msg["error"]["condition"])
            return
        fields = {"sender": str(msg["from"]), "to": str(msg["to"]), "body": msg["body"],
                  "type": msg["type"], "subject": msg["subject"] or None}
        # XEP-0203: a message kept while we were offline carries the server's stamp.
        delay = msg.xml.find("{urn:xmpp:delay}delay")
        if delay is not None:
            fields["delay_stamp"] = delay.get("stamp")
            fields["delay_from"] = delay.get("from")
        action = self.args.action
        if action == "chat-with":
            if self.is_contact(msg["from"]) and msg["body"] == self.args.expect_body:
                emit("message", **fields)
                self.got_body = True
                self.check_done()
            else:
                emit("unexpected_message", **fields)
            return
        if action == "receive":
            if (self.args.expect_from and not jid_matches(self.args.expect_from, msg["from"])) or \
                    (self.args.expect_body is not None and msg["body"] != self.args.expect_body):
                emit("unexpected_message", **fields)
                return
            emit("message", **fields)
            if self.args.echo:
                self.send_message(mto=msg["from"], mbody="echo: " + msg["body"], mtype="chat")
                emit("sent", to=str(msg["from"]), body="echo: " + msg["body"])
            self.finish(EXIT_OK)
        elif action == "send" and self.args.expect_reply:
            if jid_matches(self.args.to, msg["from"]) and msg["body"] == "echo: " + self.args.body:
                emit("message", **fields)
                self.finish(EXIT_OK)
            else:
                emit("unexpected_message", **fields)


def http_session(args, *a, **kw):
    """An aiohttp session that trusts --cafile (or nothing checked with --insecure) and
    resolves every host name to --host, so a URL naming the test server's domain
    reaches it on loopback with its certificate verified for that name."""
    import aiohttp
    import aiohttp.abc
    import socket

    class Loopback(aiohttp.abc.AbstractResolver):
        async def resolve(self, host, port=0, family=socket.AF_INET):
            return [{"hostname": host, "host": args.host, "port": port,
                     "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}]

        async def close(self):
            pass

    if args.insecure:
        ctx = False
    else:
        ctx = ssl.create_default_context(cafile=args.cafile)
    kw.setdefault("connector", aiohttp.TCPConnector(ssl=ctx, resolver=Loopback()))
    return aiohttp.ClientSession(*a, **kw)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True, help="user@domain or user@domain/resource")
    p.add_argument("--password")
    p.add_argument("--password-file", help="read the password from this file (first line)")
    p.add_argument("--mech", required=True, help="the only SASL mechanism to use, e.g. SCRAM-SHA-256")
    p.add_argument("--tls", choices=["starttls", "direct"], default="starttls")
    trust = p.add_mutually_exclusive_group(required=True)
    trust.add_argument("--cafile", help="trust only this certificate (PEM), e.g. the server's self-signed one")
    trust.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    p.add_argument("--timeout", type=float, default=20.0, help="overall deadline in seconds")
    p.add_argument("--iq-timeout", type=int, default=10)
    p.add_argument("--debug", action="store_true")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("login")
    send = sub.add_parser("send")
    send.add_argument("--to", required=True)
    send.add_argument("--body", required=True)
    send.add_argument("--expect-reply", action="store_true")
    recv = sub.add_parser("receive")
    recv.add_argument("--expect-from")
    recv.add_argument("--expect-body")
    recv.add_argument("--echo", action="store_true")
    recv.add_argument("--headline", action="store_true")
    for name in ("ping", "disco", "version", "time"):
        sub.add_parser(name).add_argument("--to")
    sub.add_parser("roster")
    household = sub.add_parser("household")
    household.add_argument("--status", required=True)
    household.add_argument("--expect", action="append", metavar="JID=STATUS")
    household.add_argument("--linger", type=float, default=1.0)
    adhoc = sub.add_parser("adhoc")
    adhoc.add_argument("--to")
    adhoc.add_argument("--node")
    adhoc.add_argument("--field", action="append", help="VAR=VALUE for the command's form")
    sub.add_parser("register").add_argument("--token")
    sub.add_parser("passwd").add_argument("--new-password", required=True)
    sub.add_parser("unregister")
    sub.add_parser("caps")
    mam = sub.add_parser("mam")
    upload = sub.add_parser("upload")
    upload.add_argument("--file", required=True)
    upload.add_argument("--content-type")
    upload.add_argument("--skip-discovery", action="store_true")
    sub.add_parser("download").add_argument("--url", required=True)
    mam.add_argument("--with", dest="with_jid")
    mam.add_argument("--max", type=int, default=50)
    mam.add_argument("--reverse", action="store_true")
    chat = sub.add_parser("chat-with")
    chat.add_argument("--contact", required=True)
    chat.add_argument("--status", required=True)
    chat.add_argument("--expect-status", required=True)
    chat.add_argument("--send")
    chat.add_argument("--expect-body")
    chat.add_argument("--wait-offline", action="store_true")
    chat.add_argument("--send-after-offline")
    chat.add_argument("--publish-nick", help="XEP-0172: publish this nick once friends")
    chat.add_argument("--expect-nick", help="XEP-0172: wait for the contact's nick")
    telemetry = sub.add_parser("telemetry")
    telemetry.add_argument("--contact", required=True)
    telemetry.add_argument("--expect-status", required=True)
    telemetry.add_argument("--expect-unavailable", action="store_true")
    carbons = sub.add_parser("carbons")
    carbons.add_argument("--no-enable", action="store_true")
    carbons.add_argument("--disable-at-once", action="store_true")
    carbons.add_argument("--priority", type=int, default=0)
    carbons.add_argument("--send", action="append", default=[], metavar="JID=BODY")
    carbons.add_argument("--send-private", action="append", default=[], metavar="JID=BODY")
    carbons.add_argument("--send-no-copy", action="append", default=[], metavar="JID=BODY")
    carbons.add_argument("--expect", type=int, default=0)
    carbons.add_argument("--linger", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.action == "carbons":
        # In the order given on the command line, whatever the kind.
        order = [(i, a) for i, a in enumerate(argv) if a in ("--send", "--send-private",
                                                             "--send-no-copy")]
        kinds = {"--send": "plain", "--send-private": "private", "--send-no-copy": "no-copy"}
        args.sends = [(kinds[a], argv[i + 1]) for i, a in order if i + 1 < len(argv)]
    if args.action in ("login", "receive", "roster", "chat-with", "household", "register",
                       "passwd", "unregister", "carbons", "caps", "mam", "upload",
                       "download", "telemetry"):
        args.to = None
    if args.action != "register":
        args.token = None
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as f:
            args.password = f.readline().rstrip("\n")
    if args.password is None:
        p.error("--password or --password-file is required")
    return args


def main(argv):
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(levelname)-8s %(name)s %(message)s", stream=sys.stderr)
    if not args.debug:
        # Pending-task warnings at exit are noise: the outcome is already printed.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = Client(args)
    client.result = loop.create_future()
    if args.insecure:
        client.ssl_context.check_hostname = False
        client.ssl_context.verify_mode = ssl.CERT_NONE
    else:
        client.ca_certs = args.cafile
    direct = args.tls == "direct"
    if hasattr(client, "enable_direct_tls"):
        # slixmpp >= 1.9: the transport is chosen by attributes, connect(host, port).
        client.enable_direct_tls = direct
        client.enable_starttls = not direct
        client.enable_plaintext = False
        client.connect(args.host, args.port)
    else:
        # slixmpp 1.8 (Debian 12): connect((host, port), use_ssl, force_starttls).
        client.connect((args.host, args.port), use_ssl=direct, force_starttls=not direct)
    try:
        status = loop.run_until_complete(asyncio.wait_for(client.result, args.timeout))
    except asyncio.TimeoutError:
        emit("timeout", seconds=args.timeout, action=args.action)
        status = EXIT_TIMEOUT
    # Close the stream politely (</stream:stream>) and give the server a moment to
    # answer, but never wait long: the status is already decided.
    try:
        loop.run_until_complete(asyncio.wait_for(client.disconnect(wait=1.0), 3.0))
    except Exception:  # noqa: BLE001 - the outcome is already known
        pass
    emit("exit", status=status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
