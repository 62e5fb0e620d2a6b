"""redis-py through the addon's URL (REDIS_URL), verifying the server's
certificate with the CA in CA_FILE (addons-ca) when it is set: PING, SET,
GET. Prints one JSON line: {"client": "redis-py", "ok": ...}. Run by
e2e/redispy_test.go with Debian's python3 and python3-redis."""

import json
import os

import redis

url, ca = os.environ["REDIS_URL"], os.environ.get("CA_FILE", "")
kw = {"socket_timeout": 5, "socket_connect_timeout": 5}
if ca:
    kw["ssl_ca_certs"] = ca  # rediss://: the certificate is verified (ssl_cert_reqs "required")
out = {"client": "redis-py", "version": redis.__version__, "ok": False}
try:
    c = redis.from_url(url, **kw)
    out["ok"] = bool(c.ping() and c.set("cacheplane:e2e:redis-py", "ok") and c.get("cacheplane:e2e:redis-py") == b"ok")
    c.close()
except Exception as e:  # reported, the test decides
    out["error"] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
