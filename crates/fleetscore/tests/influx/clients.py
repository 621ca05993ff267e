#!/usr/bin/env python3
"""InfluxDB's own client libraries against `fleetscore serve`.

Run by crates/fleetscore/tests/influx_clients.rs with the server's address
and an ingest token in the environment (FLEETSCORE_URL, FLEETSCORE_TOKEN);
the server has `[ingest] bad_lines = "skip"`. Each step uses the libraries
as their users do; an assertion failing or a client raising ends the run
with its traceback. The Rust test then checks what was stored.

- `influxdb` (the 1.x client, as Telegraf's `outputs.influxdb` talks):
  ping (reads X-Influxdb-Version), create_database and get_list_database
  (`/query`), write_points with HTTP Basic auth (username and password),
  with gzip, and a partial write.
- `influxdb-client` (the 2.x client): ping, version, write with
  `Authorization: Token`, gzip, and a partial write.
"""

import os
import sys
from urllib.parse import urlparse

from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError
from influxdb_client import InfluxDBClient as InfluxDBClient2
from influxdb_client import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

URL = os.environ["FLEETSCORE_URL"]
TOKEN = os.environ["FLEETSCORE_TOKEN"]
u = urlparse(URL)
T = 1764887621000000000  # 2025-12-04T22:33:41Z


def v1(**kw):
    return InfluxDBClient(
        host=u.hostname, port=u.port, username="telegraf", password=TOKEN, database="fleet", **kw
    )


# --- the 1.x client -------------------------------------------------------
c = v1()
version = c.ping()
assert version.startswith("1.8.10-fleetscore"), version
c.create_database("fleet")
dbs = c.get_list_database()
assert {"name": "fleetscore"} in dbs, dbs
ok = c.write_points(
    [
        {
            "measurement": "pump",
            "tags": {"device": "v1-pump", "site": "north"},
            "time": T,
            "fields": {"temp": 21.5, "rpm": 1450},
        }
    ],
    time_precision="n",
)
assert ok
# gzip on every request, as the client sends it (empty bodies included).
g = v1(gzip=True)
assert g.ping().startswith("1.8.10")
assert g.write_points(
    [{"measurement": "pump", "tags": {"device": "v1-gzip"}, "time": T, "fields": {"temp": 1.0}}],
    time_precision="n",
)
# A wrong password is refused.
bad = InfluxDBClient(host=u.hostname, port=u.port, username="telegraf", password="wrong", database="fleet")
try:
    bad.write_points([{"measurement": "m", "tags": {"device": "x"}, "fields": {"v": 1.0}}])
    sys.exit("a wrong password was accepted")
except InfluxDBClientError as e:
    assert e.code == 401, e
# A statement fleetscore does not answer.
try:
    c.query("SELECT * FROM pump")
    sys.exit("SELECT was answered")
except InfluxDBClientError as e:
    assert "GET /v1/readings" in str(e), e
# Partial write: the good lines stored, the bad one reported.
try:
    c.write(
        ["pump,device=v1-partial temp=1 %d" % T, "pump,device=v1-partial temp=oops %d" % T],
        params={"db": "fleet", "precision": "n"},
        protocol="line",
    )
    sys.exit("a partial write was answered as a success")
except InfluxDBClientError as e:
    assert e.code == 400, e
    assert "partial write: unable to parse 'pump,device=v1-partial temp=oops" in str(e), e
    assert "dropped=1" in str(e), e

# --- the 2.x client -------------------------------------------------------
for gzip in (False, True):
    with InfluxDBClient2(url=URL, token=TOKEN, org="fleet", enable_gzip=gzip) as c2:
        assert c2.ping()
        assert c2.version().startswith("1.8.10-fleetscore"), c2.version()
        w = c2.write_api(write_options=SYNCHRONOUS)
        device = "v2-gzip" if gzip else "v2-pump"
        w.write(bucket="fleet", record=Point("pump").tag("device", device).field("temp", 3.5).time(T + 1_000_000_000))
        w.write(bucket="fleet", record="pump,device=%s vib=0.5 %d" % (device, T + 2_000_000_000))
with InfluxDBClient2(url=URL, token=TOKEN, org="fleet") as c2:
    w = c2.write_api(write_options=SYNCHRONOUS)
    try:
        w.write(
            bucket="fleet",
            record="pump,device=v2-partial ok=1 %d\nnot line protocol\n" % (T + 3_000_000_000),
        )
        sys.exit("a partial write was answered as a success")
    except ApiException as e:
        assert e.status == 400, e
        assert e.message.startswith("partial write: unable to parse 'not line protocol' (line 2)"), e.message
    # A wrong token is refused.
    with InfluxDBClient2(url=URL, token="wrong", org="fleet") as wrong:
        try:
            wrong.write_api(write_options=SYNCHRONOUS).write(bucket="fleet", record="m,device=x v=1")
            sys.exit("a wrong token was accepted")
        except ApiException as e:
            assert e.status == 401, e

print("influx clients: ok")
