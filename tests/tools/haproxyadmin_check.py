"""Drives rampart's runtime socket with the haproxyadmin library (PyPI), as operators
do with HAProxy: list backends and servers, change a server's state, read process info."""
import sys

import haproxyadmin
from haproxyadmin import haproxy

hap = haproxy.HAProxy(socket_file=sys.argv[1])
print("backends", ",".join(sorted(b.name for b in hap.backends())))
for s in sorted(hap.servers("app"), key=lambda s: s.name):
    print("server", s.name, s.status, s.weight)
srv = hap.server("b", backend="app")[0]
print("setstate", srv.setstate(haproxyadmin.STATE_DRAIN))
print("status", srv.status)
print("setweight", srv.setweight(7), srv.weight)
print("enable", srv.setstate(haproxyadmin.STATE_READY), srv.status)
print("frontends", ",".join(f.name for f in hap.frontends()))
print("requests", hap.totalrequests)
print("version", hap.version)
