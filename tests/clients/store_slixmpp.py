#!/usr/bin/python3
"""Private storage, vCards and the server's disco with slixmpp's own plugins, for
tests/store.rs: xep_0049 (private XML storage) and xep_0048 bookmarks kept there,
xep_0054 (vcard-temp), xep_0030 + xep_0128 (the XEP-0157 serverinfo form in the
server's disco#info), and a XEP-0215 <services/> query sent as a raw iq (slixmpp has no
XEP-0215 plugin).

Actions (--do, in order, repeatable):
  private      store two elements in one set (xep_0049) and read each back; read one
               never stored                                  -> "private"
  bookmarks    set and get XEP-0048 bookmarks through xep_0049 -> "bookmarks"
  vcard-set    publish a vCard with FN and a PHOTO, read it back -> "vcard_set"
  vcard-of     read --other's vCard                            -> "vcard_of"
  vcard-other  try to publish a vCard to --other's JID         -> "vcard_other"
  serverinfo   the server's disco#info, its serverinfo form    -> "serverinfo"
  extdisco     <services/> and <credentials/> of XEP-0215       -> "extdisco"
Lines on stdout are JSON objects with an "event" key; exit 0 on success, 1 on failure,
3 on timeout.
"""

import argparse
import asyncio
import base64
import json
import logging
import sys

try:
    import slixmpp
    from slixmpp.exceptions import IqError
    from slixmpp.xmlstream import ElementBase, register_stanza_plugin  # noqa: F401
    from slixmpp.xmlstream import ET
except ImportError:  # pragma: no cover
    print(json.dumps({"event": "error", "reason": "slixmpp is not installed for " + sys.executable}),
          flush=True)
    sys.exit(1)

EXIT_OK, EXIT_FAIL, EXIT_TIMEOUT = 0, 1, 3
# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


class Prefs(ElementBase):
    """A client's preferences, as an application would keep them (XEP-0049 §2.3)."""
    name = 'prefs'
    namespace = 'urn:hearth:test:prefs'
    plugin_attrib = 'hearth_prefs'
    interfaces = {'nick'}
    sub_interfaces = {'nick'}


class Notes(ElementBase):
    name = 'notes'
    namespace = 'urn:hearth:test:notes'
    plugin_attrib = 'hearth_notes'
    interfaces = {'text'}
    sub_interfaces = {'text'}


def condition(e):
    return e.iq['error']['condition']


class Client(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password, sasl_mech='SCRAM-SHA-256')
        self.args = args
        self.status = EXIT_FAIL
        for p in ('xep_0030', 'xep_0128', 'xep_0049', 'xep_0048', 'xep_0054'):
            self.register_plugin(p)
        self['xep_0049'].register(Prefs)
        self['xep_0049'].register(Notes)
        self.add_event_handler('session_start', self.start)
        self.add_event_handler('failed_all_auth', lambda _e: self.finish(EXIT_FAIL, "auth"))

    def finish(self, status, reason=None):
        if reason:
            emit("error", reason=reason)
        self.status = status
        self.disconnect()

    async def start(self, _event):
        emit("session_start", jid=str(self.boundjid))
        try:
            for action in self.args.do:
                await getattr(self, 'do_' + action.replace('-', '_'))()
        except IqError as e:
            self.finish(EXIT_FAIL, f"iq error: {condition(e)} {e.iq['error']['text']}")
            return
        except Exception as e:  # noqa: BLE001 - any failure is the test's answer
            self.finish(EXIT_FAIL, repr(e))
            return
        emit("done")
        self.finish(EXIT_OK)

    async def do_private(self):
        prefs = Prefs()
        prefs['nick'] = 'Hamlet'
        notes = Notes()
        notes['text'] = 'to be < or > not & to be'
        await self['xep_0049'].store([prefs, notes])
        got_prefs = await self['xep_0049'].retrieve('hearth_prefs')
        got_notes = await self['xep_0049'].retrieve('hearth_notes')
        # Never stored: slixmpp gets the element back empty.
        other = slixmpp.Iq(self, stype='get')
        q = ET.Element('{jabber:iq:private}query')
        ET.SubElement(q, '{urn:hearth:test:none}nothing')
        other.append(q)
        none = await other.send()
        emit("private",
             nick=got_prefs['private']['hearth_prefs']['nick'],
             text=got_notes['private']['hearth_notes']['text'],
             none=len(list(none.xml.find('{jabber:iq:private}query')
                           .find('{urn:hearth:test:none}nothing'))))

    async def do_bookmarks(self):
        from slixmpp.plugins.xep_0048.stanza import Bookmarks
        b = Bookmarks()
        b.add_conference('family@rooms.example', 'Dad', name='Family', autojoin=True)
        await self['xep_0048'].set_bookmarks(b, method='xep_0049')
        got = await self['xep_0048'].get_bookmarks(method='xep_0049')
        confs = [{'jid': str(c['jid']), 'nick': c['nick'], 'name': c['name'],
                  'autojoin': c['autojoin']}
                 for c in got['private']['bookmarks']['conferences']]
        emit("bookmarks", conferences=confs)

    async def do_vcard_set(self):
        v = self['xep_0054'].make_vcard()
        v['FN'] = 'Alice Liddell'
        v['NICKNAME'] = 'alice'
        v['PHOTO']['TYPE'] = 'image/png'
        v['PHOTO']['BINVAL'] = PNG
        await self['xep_0054'].publish_vcard(v)
        iq = await self['xep_0054'].get_vcard(self.boundjid.bare)
        got = iq['vcard_temp']
        emit("vcard_set", fn=got['FN'], nick=got['NICKNAME'],
             photo=got['PHOTO']['BINVAL'] == PNG)

    async def do_vcard_of(self):
        iq = await self['xep_0054'].get_vcard(self.args.other)
        got = iq['vcard_temp']
        emit("vcard_of", fn=got['FN'], has_photo=bool(got['PHOTO']['BINVAL']))

    async def do_vcard_other(self):
        v = self['xep_0054'].make_vcard()
        v['FN'] = 'Mallory'
        try:
            await self['xep_0054'].publish_vcard(v, jid=self.args.other)
            emit("vcard_other", condition=None)
        except IqError as e:
            emit("vcard_other", condition=condition(e))

    async def do_serverinfo(self):
        info = await self['xep_0030'].get_info(jid=self.boundjid.domain)
        forms = {}
        for form in info['disco_info'].iterables:
            if form.name != 'x':
                continue
            values = form.get_values()
            form_type = values.pop('FORM_TYPE', None)
            if isinstance(form_type, list):
                form_type = form_type[0]
            forms[form_type] = values
        emit("serverinfo", forms=forms, features=sorted(info['disco_info']['features']))

    async def do_extdisco(self):
        ns = 'urn:xmpp:extdisco:2'
        iq = slixmpp.Iq(self, stype='get', sto=self.boundjid.domain)
        iq.append(ET.Element('{%s}services' % ns))
        res = await iq.send()
        services = [dict(s.attrib) for s in res.xml.find('{%s}services' % ns)]
        creds = None
        turn = [s for s in services if s.get('type') == 'turn']
        if turn:
            iq = slixmpp.Iq(self, stype='get', sto=self.boundjid.domain)
            c = ET.Element('{%s}credentials' % ns)
            ET.SubElement(c, '{%s}service' % ns, host=turn[0]['host'], type='turn')
            iq.append(c)
            res = await iq.send()
            creds = [dict(s.attrib) for s in res.xml.find('{%s}credentials' % ns)]
        emit("extdisco", services=services, credentials=creds)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--cafile', required=True)
    p.add_argument('--jid', required=True)
    p.add_argument('--password', required=True)
    p.add_argument('--other', default=None)
    p.add_argument('--do', action='append', default=[])
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
        loop.run_until_complete(asyncio.wait_for(done, args.timeout))
    except asyncio.TimeoutError:
        emit("error", reason="timeout")
        return EXIT_TIMEOUT
    return c.status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
