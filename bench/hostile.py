#!/usr/bin/env python3
"""Re-runs the resource cases of issue 16's hostile-input probe against a
fleetscore binary and prints what each did (for comparing two builds):

    python3 bench/hostile.py BINARY LABEL [idle,range,bodies,devices,churn]

idle: 200 idle sockets under `ulimit -n 128`, then /healthz and /write;
range: a GET /v1/readings over five centuries; bodies: 48 concurrent 30 MB
line-protocol bodies (answers, RSS peak, RSS after); devices: 3 x 750,000 new
devices (RSS, checkpoint size, live and shed series); churn: 6 x 750,000 new
devices 25 s apart, quiet ones closed after 5 s (RSS stays bounded). PROBE_ARGS adds serve
flags to the devices case (e.g. `--config f.toml` with `[stream]
close_idle_after = "5s"`), PROBE_WAIT its wait before measuring (s)."""
import gzip, http.client, json, os, resource, signal, socket, subprocess, sys, tempfile, threading, time

BIN, LABEL = sys.argv[1], sys.argv[2]
CASES = sys.argv[3].split(",") if len(sys.argv) > 3 else ["idle", "range", "bodies", "devices"]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start(data, extra=(), ulimit=None):
    cmd = [BIN, "--data", data, "serve", "--listen", "127.0.0.1:0", *extra]
    if ulimit:
        cmd = ["sh", "-c", f'ulimit -n {ulimit} && exec "$0" "$@"', *cmd]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().strip()
    assert line.startswith("listening on "), line
    host, port = line.split()[-1].rsplit(":", 1)
    return p, host, int(port)


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        return "killed"


def request(host, port, method, path, body=b"", headers=None, timeout=60):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def case_idle():
    with tempfile.TemporaryDirectory() as d:
        p, host, port = start(d, ulimit=128)
        socks = []
        for _ in range(200):
            try:
                socks.append(socket.create_connection((host, port), timeout=5))
            except OSError:
                pass
        t = time.time()
        try:
            st, _ = request(host, port, "GET", "/healthz", timeout=60)
        except Exception as e:
            st = f"error {type(e).__name__}"
        took = time.time() - t
        t = time.time()
        try:
            st2, _ = request(host, port, "POST", "/write", b"m,device=d v=1 1700000000000000000\n", timeout=60)
        except Exception as e:
            st2 = f"error {type(e).__name__}"
        took2 = time.time() - t
        print(f"[{LABEL}] idle: 200 idle sockets at ulimit -n 128: /healthz {st} in {took:.2f}s, /write {st2} in {took2:.2f}s")
        for s in socks:
            s.close()
        stop(p)


def case_range():
    with tempfile.TemporaryDirectory() as d:
        p, host, port = start(d)
        path = "/v1/readings?device=d&from=1678-01-01T00:00:00Z&to=2261-12-31T00:00:00Z"
        t = time.time()
        try:
            st, body = request(host, port, "GET", path, timeout=20)
            what = f"{st} {body[:90]!r}"
        except Exception as e:
            what = f"no answer within 20s ({type(e).__name__})"
        print(f"[{LABEL}] range: GET {path}: {what} after {time.time() - t:.2f}s")
        p.kill()
        p.wait()


def case_bodies():
    with tempfile.TemporaryDirectory() as d:
        p, host, port = start(d, ["--no-windows"])
        line = b"m,device=d%d v=1 1700000000000000000\n"
        body = b"".join(line % (i % 1000) for i in range(30_000_000 // 36))
        statuses = []

        def post():
            try:
                st, _ = request(host, port, "POST", "/write", body, timeout=300)
            except Exception as e:
                st = type(e).__name__
            statuses.append(st)

        base = rss_mb(p.pid)
        threads = [threading.Thread(target=post) for _ in range(48)]
        peak = 0.0
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_mb(p.pid))
            time.sleep(0.05)
        for t in threads:
            t.join()
        time.sleep(3)
        after = rss_mb(p.pid)
        for _ in range(20):
            request(host, port, "POST", "/write", b"m,device=x v=1 1700000000000000000\n")
        time.sleep(12)
        later = rss_mb(p.pid)
        counts = {s: statuses.count(s) for s in set(statuses)}
        print(f"[{LABEL}] bodies: 48 concurrent {len(body) / 1e6:.0f} MB bodies: answers {counts}; RSS {base:.0f} MB before, peak {peak:.0f} MB (VmHWM {hwm_mb(p.pid):.0f} MB), {after:.0f} MB 3 s after, {later:.0f} MB after 20 small requests and 12 s more")
        stop(p)


def case_devices():
    with tempfile.TemporaryDirectory() as d:
        p, host, port = start(d, os.environ.get("PROBE_ARGS", "").split())
        base = rss_mb(p.pid)
        out = []
        for r in range(3):
            lines = "".join(
                f"m,device=r{r}d{i} v=1 {1700000000000000000 + i}\n" for i in range(750_000)
            ).encode()
            gz = gzip.compress(lines, 1)
            st, body = request(host, port, "POST", "/write", gz, {"Content-Encoding": "gzip"}, timeout=600)
            time.sleep(1)
            out.append(f"{st}:{rss_mb(p.pid):.0f}MB")
        time.sleep(float(os.environ.get("PROBE_WAIT", "12")))  # flushes and a checkpoint
        ck = os.path.join(d, "windows", "checkpoint")
        cks = os.path.getsize(ck) / 1e6 if os.path.exists(ck) else 0
        st, m = request(host, port, "GET", "/metrics")
        m = m.decode()
        pick = [l for l in m.splitlines() if l.startswith(("fleetscore_window_series ", "fleetscore_window_series_shed_total", "fleetscore_window_series_max"))]
        print(f"[{LABEL}] devices: 3 x 750,000 new devices: RSS {base:.0f} MB -> {' '.join(out)}, {rss_mb(p.pid):.0f} MB at the end; checkpoint {cks:.0f} MB; {'; '.join(pick)}")
        stop(p)


def case_churn():
    """6 x 750,000 new devices 25 s apart with quiet devices closed after 5 s:
    memory must stay bounded as devices come and go."""
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "quiet.toml")
        with open(cfg, "w") as f:
            f.write('[stream]\nclose_idle_after = "5s"\n')
        p, host, port = start(d, ["--config", cfg])
        out = []
        for r in range(6):
            lines = "".join(f"m,device=r{r}d{i} v=1 {1700000000000000000 + i}\n" for i in range(750_000)).encode()
            st, _ = request(host, port, "POST", "/write", gzip.compress(lines, 1), {"Content-Encoding": "gzip"}, timeout=600)
            time.sleep(25)
            _, m = request(host, port, "GET", "/metrics")
            live = [l.split()[1] for l in m.decode().splitlines() if l.startswith("fleetscore_window_series ")][0]
            out.append(f"{st}: {rss_mb(p.pid):.0f} MB, {live} live")
        print(f"[{LABEL}] churn: 6 x 750,000 new devices, 25 s apart, close_idle_after 5s: " + "; ".join(out))
        stop(p)


for c in CASES:
    globals()[f"case_{c}"]()
