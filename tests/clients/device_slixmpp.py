#!/usr/bin/python3
"""Device accounts with slixmpp, for tests/device.rs: a sensor reporting through
presence (hearth's <telemetry xmlns='urn:hearth:telemetry:0'/>, read and written
through a slixmpp stanza plugin) and a household member watching it, with slixmpp's
own xep_0203 (delayed delivery) and xep_0012 (last activity) plugins.

Actions (--do, in order, repeatable):
  report       send presence with --status and each --value NAME=VALUE[:UNIT]
               (the presence's echo is awaited)                -> "reported"
  flood        send --count presences at once; collect presence errors
                                                               -> "flood" (errors)
  message      send a chat message to --to; wait for an error  -> "message" (condition, text)
  subscribe    send a subscription request to --to; wait for a presence error
                                                               -> "subscribe" (condition, text)
  watch        send presence and wait until presence from --device (bare) arrives whose
               status is --expect-status; report its type, status, telemetry values and
               delay stamp                                      -> "seen"
  last         XEP-0012 query to --device                      -> "last" (seconds, status)
Lines on stdout are JSON objects with an "event" key; exit 0 on success, 1 on failure,
3 on timeout.
"""

import argparse
import asyncio
import json
import logging
import sys

try:
    import slixmpp
    from slixmpp.exceptions import IqError
    from slixmpp.xmlstream import ElementBase, register_stanza_plugin
except ImportError:  # pragma: no cover
    print(json.dumps({"event": "error", "reason": "slixmpp is not installed for " + sys.executable}),
          flush=True)
    sys.exit(1)

EXIT_OK, EXIT_FAIL, EXIT_TIMEOUT = 0, 1, 3
NS = 'urn:hearth:telemetry:0'


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


class Value(ElementBase):
    name = 'value'
    namespace = NS
    plugin_attrib = 'value'
    plugin_multi_attrib = 'values'
    interfaces = {'name', 'unit', 'text'}

    def get_text(self):
        return self.xml.text or ''

    def set_text(self, value):
        self.xml.text = value


class Telemetry(ElementBase):
    name = 'telemetry'
    namespace = NS
    plugin_attrib = 'telemetry'
    interfaces = set()


register_stanza_plugin(Telemetry, Value, iterable=True)
register_stanza_plugin(slixmpp.Presence, Telemetry)


def condition(stanza):
    """The stanza error's condition, read from the XML: slixmpp 1.8 knows only RFC
    3920's list, without RFC 6120's policy-violation."""
    err = stanza.xml.find('{jabber:client}error')
    if err is None:
        return None
    for child in err:
        ns, _, name = child.tag[1:].partition('}')
        if ns == 'urn:ietf:params:xml:ns:xmpp-stanzas' and name != 'text':
            return name
    return None


def readings(pres):
    if pres.xml.find('{%s}telemetry' % NS) is None:
        return None
    return [{'name': v['name'], 'unit': v['unit'], 'value': v['text']}
            for v in pres['telemetry']['values']]


class Client(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password, sasl_mech='SCRAM-SHA-256')
        self.args = args
        self.status = EXIT_FAIL
        for p in ('xep_0030', 'xep_0012', 'xep_0203'):
            self.register_plugin(p)
        self.add_event_handler('session_start', self.start)
        self.add_event_handler('failed_all_auth', lambda _e: self.finish(EXIT_FAIL, "auth"))
        self.add_event_handler('presence', self.on_presence)
        self.add_event_handler('message_error', self.on_message_error)
        self.waiting = None  # (predicate, future) for the next matching stanza

    def finish(self, status, reason=None):
        if reason:
            emit("error", reason=reason)
        self.status = status
        self.disconnect()

    def wait_for(self, predicate):
        fut = asyncio.get_event_loop().create_future()
        self.waiting = (predicate, fut)
        return fut

    def offer(self, stanza):
        if self.waiting and not self.waiting[1].done() and self.waiting[0](stanza):
            self.waiting[1].set_result(stanza)

    def on_presence(self, pres):
        self.offer(pres)

    def on_message_error(self, msg):
        self.offer(msg)

    async def start(self, _event):
        emit("session_start", jid=str(self.boundjid))
        try:
            for action in self.args.do:
                await asyncio.wait_for(getattr(self, 'do_' + action)(), self.args.timeout)
        except IqError as e:
            self.finish(EXIT_FAIL, f"iq error: {e.iq['error']['condition']}")
            return
        except asyncio.TimeoutError:
            emit("error", reason="timed out")
            self.status = EXIT_TIMEOUT
            self.disconnect()
            return
        except Exception as e:  # noqa: BLE001 - any failure is the test's answer
            self.finish(EXIT_FAIL, repr(e))
            return
        emit("done")
        self.finish(EXIT_OK)

    def presence_with_readings(self, status):
        pres = self.make_presence(pstatus=status)
        for v in self.args.value:
            name, _, rest = v.partition('=')
            text, _, unit = rest.partition(':')
            val = Value()
            val['name'] = name
            if unit:
                val['unit'] = unit
            val['text'] = text
            pres['telemetry'].append(val)
        return pres

    async def do_report(self):
        me = self.boundjid.full
        echo = self.wait_for(lambda p: p['from'] == me and p['type'] in ('available', 'error'))
        self.presence_with_readings(self.args.status).send()
        got = await echo
        if got['type'] == 'error':
            raise RuntimeError("presence refused: " + got['error']['condition'])
        emit("reported", status=self.args.status)

    async def do_flood(self):
        errors = []
        done = asyncio.get_event_loop().create_future()

        def on_error(p):
            if p['type'] == 'error':
                errors.append({'condition': condition(p),
                               'type': p['error']['type'],
                               'text': p['error']['text']})
                if len(errors) >= self.args.expect_errors and not done.done():
                    done.set_result(True)
            return False
        self.waiting = (on_error, asyncio.get_event_loop().create_future())
        for i in range(self.args.count):
            self.presence_with_readings(f"{self.args.status} #{i}").send()
        await done
        emit("flood", errors=errors)

    async def do_message(self):
        to = slixmpp.JID(self.args.to)
        err = self.wait_for(lambda s: s.name == 'message' and s['type'] == 'error'
                            and s['from'].bare == to.bare)
        self.send_message(mto=to, mbody="21.5", mtype='chat')
        got = await err
        emit("message", condition=condition(got), text=got['error']['text'])

    async def do_subscribe(self):
        to = slixmpp.JID(self.args.to)
        err = self.wait_for(lambda s: s.name == 'presence' and s['type'] == 'error'
                            and s['from'].bare == to.bare)
        self.send_presence(pto=to.bare, ptype='subscribe')
        got = await err
        emit("subscribe", condition=condition(got), text=got['error']['text'])

    async def do_watch(self):
        device = slixmpp.JID(self.args.device).bare
        seen = self.wait_for(lambda p: p['from'].bare == device
                             and p['type'] in ('available', 'unavailable')
                             and p['status'] == self.args.expect_status)
        self.send_presence()
        got = await seen
        stamp = got['delay']['stamp'] if got.xml.find('{urn:xmpp:delay}delay') is not None else None
        emit("seen", type=got['type'], status=got['status'], telemetry=readings(got),
             delay=stamp.isoformat() if stamp else None, delay_from=str(got['delay']['from'])
             if stamp else None)

    async def do_last(self):
        iq = await self['xep_0012'].get_last_activity(slixmpp.JID(self.args.device))
        emit("last", seconds=iq['last_activity']['seconds'],
             status=iq['last_activity']['status'])


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--cafile', required=True)
    p.add_argument('--jid', required=True)
    p.add_argument('--password', required=True)
    p.add_argument('--do', action='append', default=[])
    p.add_argument('--status', default='')
    p.add_argument('--value', action='append', default=[])
    p.add_argument('--count', type=int, default=5)
    p.add_argument('--expect-errors', type=int, default=1)
    p.add_argument('--to', default=None)
    p.add_argument('--device', default=None)
    p.add_argument('--expect-status', default=None)
    p.add_argument('--timeout', type=int, default=20)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    c = Client(args)
    c.ca_certs = args.cafile
    done = loop.create_future()
    c.add_event_handler('disconnected', lambda *_: done.done() or done.set_result(None))
    if hasattr(c, "enable_direct_tls"):
        # slixmpp >= 1.9
        c.enable_direct_tls = False
        c.enable_starttls = True
        c.enable_plaintext = False
        c.connect(args.host, args.port)
    else:
        # slixmpp 1.8 (Debian 12)
        c.connect((args.host, args.port), use_ssl=False, force_starttls=True)
    try:
        loop.run_until_complete(asyncio.wait_for(done, args.timeout * 2))
    except asyncio.TimeoutError:
        emit("error", reason="timeout")
        return EXIT_TIMEOUT
    return c.status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
