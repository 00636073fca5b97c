#!/usr/bin/python3
"""A sensor for hearth in a few lines of slixmpp: log in as a device account, report a
reading through presence (human text in <status/>, the values in hearth's
<telemetry xmlns='urn:hearth:telemetry:0'/>), and go back to sleep.

    hearth device add thermo --household
    python3 slixmpp_sensor.py thermo@home.local 'PASSWORD' temperature=21.5:°C humidity=48:%

--host/--port pick the server when the domain is not found by DNS or mDNS; --cafile
pins hearth's self-signed certificate (copy it from the server's data directory,
tls/cert.pem). hearth keeps the last reading and shows it to the household while the
sensor sleeps, with when it was taken. tests/device.rs runs this file.
"""

import argparse
import asyncio
import sys

import slixmpp
from slixmpp.xmlstream import ET

NS = 'urn:hearth:telemetry:0'


def presence_with(client, readings):
    """The presence: '21.5 °C · 48 %' for people, <telemetry/> for programs."""
    telemetry = ET.Element('{%s}telemetry' % NS)
    words = []
    for name, value, unit in readings:
        v = ET.SubElement(telemetry, '{%s}value' % NS, name=name)
        if unit:
            v.set('unit', unit)
        v.text = value
        words.append(f"{value} {unit}".strip())
    pres = client.make_presence(pstatus=' · '.join(words))
    pres.append(telemetry)
    return pres


class Sensor(slixmpp.ClientXMPP):
    def __init__(self, jid, password, readings):
        super().__init__(jid, password)
        self.readings = readings
        self.sent = False
        self.add_event_handler('session_start', self.report)
        self.add_event_handler('failed_all_auth', lambda _: self.disconnect())

    async def report(self, _event):
        presence_with(self, self.readings).send()
        self.sent = True
        print('reported', ' · '.join(f"{n}={v}{u}" for n, v, u in self.readings), flush=True)
        # Give the server the presence before the connection goes.
        await asyncio.sleep(0.5)
        self.disconnect()


def main(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('jid')
    p.add_argument('password')
    p.add_argument('readings', nargs='+', help='NAME=VALUE[:UNIT]')
    p.add_argument('--host')
    p.add_argument('--port', type=int, default=5222)
    p.add_argument('--cafile')
    args = p.parse_args(argv)
    readings = []
    for r in args.readings:
        name, _, rest = r.partition('=')
        value, _, unit = rest.partition(':')
        readings.append((name, value, unit))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    sensor = Sensor(args.jid, args.password, readings)
    if args.cafile:
        sensor.ca_certs = args.cafile
    done = loop.create_future()
    sensor.add_event_handler('disconnected', lambda *_: done.done() or done.set_result(None))
    address = (args.host, args.port) if args.host else None
    if hasattr(sensor, 'enable_direct_tls'):  # slixmpp >= 1.9
        sensor.enable_direct_tls = False
        sensor.enable_plaintext = False
        sensor.connect(*(address or ()))
    else:  # slixmpp 1.8 (Debian 12)
        sensor.connect(address or (), use_ssl=False, force_starttls=True)
    loop.run_until_complete(asyncio.wait_for(done, 30))
    return 0 if sensor.sent else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
