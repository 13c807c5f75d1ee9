#!/usr/bin/env python3
"""The benchmark behind scripts/bench: ferricorn against bare axum,
Gunicorn + UvicornWorker, plain Uvicorn and nginx, on loopback, in one run,
with the same load generators. Prints markdown tables with ratios and
writes them to target/bench/results.md. The `fanout` suite compares chat
fan-out across workers: ferricorn's embedded pub/sub, ferricorn on Redis,
and FastAPI on Redis (scripts/bench_chat_fastapi.py).

Run through scripts/bench (it installs wrk, nginx, redis-server and the
Python venv).
Every load run is bounded in time; only 127.0.0.1 is targeted.
"""
import dataclasses
import itertools
import json
import re
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FERRICORN = ROOT / "target/release/ferricorn"
BARE = ROOT / "target/release/examples/bare_axum"
WSLOAD = ROOT / "target/release/examples/wsload"
FANOUT = ROOT / "target/release/examples/fanout"
VENV = Path(os.environ.get("BENCH_VENV", "/var/tmp/ferricorn-bench-venv"))
DURATION = int(os.environ.get("BENCH_SECONDS", "4"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
CORES = os.cpu_count() or 2
TICK = os.sysconf("SC_CLK_TCK")
SERVER_CORE, CLIENT_CORE = "0", "1"
PAGE = os.sysconf("SC_PAGE_SIZE")
# Gunicorn's documented starting point for its worker count:
# (2 x $num_cores) + 1.
GUNICORN_FORMULA_WORKERS = 2 * CORES + 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            pass
    return out


def cpu_split(pids):
    """(user, system) CPU seconds of `pids`."""
    user = system = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (OSError, IndexError):
            pass
    return user / TICK, system / TICK


def cpu_seconds(pids):
    return sum(cpu_split(pids))


def rss_kib(pid):
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE // 1024
    except OSError:
        return 0


def pss_kib(pid):
    """Proportional set: RSS with pages shared among N processes (the
    binary's text, libc) counted 1/N each, so a supervisor and its workers
    are not each charged for the same file pages."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def raise_nofile():
    """As many descriptors as the hard limit allows (10,000 idle WebSockets)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_http(port, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server on {port} never answered")


@dataclasses.dataclass
class Server:
    """One server under test, as data: which program (`kind`), how many
    workers, and the variant that sets it apart. `key` names it in the
    results; `name` is what the tables print."""
    kind: str
    workers: int = 1
    variant: str = ""
    access_log: bool = False
    extra: dict = dataclasses.field(default_factory=dict)
    key: str = ""
    # The ASGI app Gunicorn and Uvicorn serve, from scripts/.
    app: str = "bench_fastapi:app"
    # Environment of the server's processes, on top of ours.
    env: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.key = self.key or self.name
        self.proc = None
        self.wrap = []
        self.tmp = None

    @property
    def name(self):
        label = {"bare": "bare axum"}.get(self.kind, self.kind)
        if self.kind in ("ferricorn", "gunicorn"):
            label += f" -w {self.workers}"
        return f"{label}, {self.variant}" if self.variant else label

    def start(self, pinned, wrap=()):
        """Starts the server on a free port. `wrap` runs it under a tool
        (valgrind), whose slowness the waits allow for."""
        self.wrap = list(wrap)
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="ferricorn-bench-")
        addr = f"127.0.0.1:{self.port}"
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("FERRICORN_"):
                del env[k]
        env.update(self.env)
        pin = (["taskset", "-c", SERVER_CORE] if pinned else []) + self.wrap
        patience = 300 if self.wrap else 30
        if self.kind == "ferricorn":
            notify = os.path.join(self.tmp, "notify")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(notify)
            env["NOTIFY_SOCKET"] = notify
            env["FERRICORN_ACCESS_LOG"] = "true" if self.access_log else "false"
            for k, v in self.extra.items():
                env[f"FERRICORN_{k.upper()}"] = str(v)
            cmd = pin + [str(FERRICORN), "--config", "/dev/null", "--bind", addr,
                         "--workers", str(self.workers), "serve"]
            log = open(os.path.join(self.tmp, "log"), "w")
            started = time.monotonic()
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log,
                                         preexec_fn=raise_nofile)
            sock.settimeout(patience)
            while True:
                if b"READY=1" in sock.recv(4096):
                    break
            self.startup_ms = (time.monotonic() - started) * 1000
            sock.close()
        else:
            if self.kind == "bare":
                cmd = [str(BARE), addr]
            elif self.kind == "gunicorn":
                cmd = [str(VENV / "bin/gunicorn"), "-w", str(self.workers), "-k",
                       "uvicorn.workers.UvicornWorker", "--bind", addr, "--chdir",
                       str(ROOT / "scripts"), "--log-level", "warning", self.app]
            elif self.kind == "uvicorn":
                cmd = [str(VENV / "bin/uvicorn"), "--app-dir", str(ROOT / "scripts"),
                       "--host", "127.0.0.1", "--port", str(self.port), "--log-level",
                       "warning", "--no-access-log", self.app]
            elif self.kind == "nginx":
                conf = os.path.join(self.tmp, "nginx.conf")
                # The very bytes a ferricorn worker answers, so nginx's
                # responses are the same size.
                body = ferricorn_health_body()
                # Under a tool, one process serves: the master itself.
                master = "off" if self.wrap else "on"
                Path(conf).write_text(f"""
daemon off;
master_process {master};
worker_processes {self.workers};
error_log {self.tmp}/error.log;
pid {self.tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {self.tmp};
    proxy_temp_path {self.tmp};
    fastcgi_temp_path {self.tmp};
    uwsgi_temp_path {self.tmp};
    scgi_temp_path {self.tmp};
    keepalive_requests 1000000;
    server {{
        listen {addr} backlog=2048;
        location /health {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
""")
                cmd = ["nginx", "-c", conf, "-p", self.tmp]
            self.proc = subprocess.Popen(pin + cmd, env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
            wait_http(self.port, limit=patience)
        time.sleep(0.3)
        return self

    def pids(self):
        return tree(self.proc.pid)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            sig = signal.SIGQUIT if self.kind == "nginx" else signal.SIGTERM
            # Under valgrind, nginx's single process can take the signal
            # just before it blocks in epoll_wait with no timer, and sleep
            # on: the signal is sent again until it ends.
            tries = 24 if self.wrap else 1
            try:
                for attempt in range(tries):
                    self.proc.send_signal(sig)
                    try:
                        self.proc.wait(5 if self.wrap else 20)
                        break
                    except subprocess.TimeoutExpired:
                        if attempt + 1 == tries:
                            raise
            except subprocess.TimeoutExpired:
                for p in reversed(self.pids()):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                self.proc.wait()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def wrk(port, conns, pinned, close=False, duration=DURATION):
    threads = 1 if pinned else 2
    cmd = (["taskset", "-c", CLIENT_CORE] if pinned else []) + [
        "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency",
        f"http://127.0.0.1:{port}/health"]
    if close:
        cmd[-1:-1] = ["-H", "Connection: close"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    return parse_wrk(out)


WRK_SOCKET_ERRORS = re.compile(r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$")
WRK_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses: (\d+)\s*$")


def parse_wrk(out):
    """wrk's report as numbers. A line about errors that does not parse is
    an error here, never a silent 0."""
    res = {"requests": 0, "rps": 0.0, "p50": 0.0, "p99": 0.0, "errors": 0}
    for line in out.splitlines():
        parts = line.split()
        if "requests in" in line:
            res["requests"] = int(parts[0])
        elif line.startswith("Requests/sec:"):
            res["rps"] = float(parts[1])
        elif line.strip().startswith("50%"):
            res["p50"] = to_ms(parts[1])
        elif line.strip().startswith("99%"):
            res["p99"] = to_ms(parts[1])
        elif "Socket errors" in line or "Non-2xx" in line:
            m = WRK_SOCKET_ERRORS.match(line) or WRK_NON_2XX.match(line)
            if not m:
                raise ValueError(f"unreadable wrk line: {line!r}")
            res["errors"] += sum(int(n) for n in m.groups())
    return res


_HEALTH_BODY = None


def ferricorn_health_body():
    """A real ferricorn worker's `/health` body (fetched once)."""
    global _HEALTH_BODY
    if _HEALTH_BODY is None:
        srv = Server("ferricorn", workers=1).start(False)
        try:
            _HEALTH_BODY = health_body(srv.port)
        finally:
            srv.stop()
        json.loads(_HEALTH_BODY)  # a body, not an error page
        assert "'" not in _HEALTH_BODY, "nginx's return '…' cannot quote it"
    return _HEALTH_BODY


def to_ms(text):
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def spread(values, fmt="{:.0f}"):
    """min / median / max."""
    return f"{fmt.format(min(values))} / {fmt.format(statistics.median(values))} / {fmt.format(max(values))}"


def median(values):
    return statistics.median(values) if values else 0.0


def http_suite(servers, results):
    for pinned in (True, False):
        for conns in (50, 200):
            for srv in servers:
                runs = []
                srv.start(pinned)
                try:
                    for _ in range(REPEAT):
                        pids = srv.pids()
                        before = cpu_seconds(pids)
                        r = wrk(srv.port, conns, pinned)
                        r["cpu_us"] = (cpu_seconds(pids) - before) * 1e6 / max(r["requests"], 1)
                        runs.append(r)
                finally:
                    srv.stop()
                results[("http", srv.key, pinned, conns)] = runs
                print(f"  http {srv.name:28} {'pinned' if pinned else 'free  '} c={conns:<3} "
                      f"{median([r['rps'] for r in runs]):>9.0f} req/s  p99 {median([r['p99'] for r in runs]):.2f} ms  "
                      f"cpu {median([r['cpu_us'] for r in runs]):.1f} us/req  errors {sum(r['errors'] for r in runs)}",
                      file=sys.stderr)


def conn_suite(servers, results):
    for srv in servers:
        srv.start(True)
        try:
            runs = [wrk(srv.port, 50, True, close=True) for _ in range(REPEAT)]
        finally:
            srv.stop()
        results[("conn", srv.key)] = runs
        print(f"  new-connection {srv.name:28} {median([r['rps'] for r in runs]):>9.0f} conn/s", file=sys.stderr)


def ws_suite(servers, results):
    for conns, msgs in ((100, 1000), (1000, 100)):
        for srv in servers:
            srv.start(True)
            runs = []
            try:
                for _ in range(REPEAT):
                    out = subprocess.run(
                        ["taskset", "-c", CLIENT_CORE, str(WSLOAD), "echo", f"127.0.0.1:{srv.port}",
                         str(conns), str(msgs), "32"],
                        capture_output=True, text=True, timeout=150, preexec_fn=raise_nofile).stdout
                    runs.append(json.loads(out))
            finally:
                srv.stop()
            results[("ws", srv.key, conns)] = runs
            print(f"  ws {srv.name:28} {conns} conns: {median([r['msgs_per_s'] for r in runs]):.0f} msgs/s "
                  f"p99 {median([r['p99_ms'] for r in runs]):.2f} ms errors {sum(r['errors'] for r in runs)}",
                  file=sys.stderr)


def idle_ws_suite(servers, results, count=10000):
    for srv in servers:
        srv.start(True)
        try:
            workers = [p for p in srv.pids() if p != srv.proc.pid] or [srv.proc.pid]
            before = sum(rss_kib(p) for p in workers)
            client = subprocess.Popen([str(WSLOAD), "idle", f"127.0.0.1:{srv.port}", str(count)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      preexec_fn=raise_nofile)
            line = client.stdout.readline().split()
            opened = int(line[1]) if len(line) == 2 else 0
            time.sleep(1)
            after = sum(rss_kib(p) for p in workers)
            client.stdin.close()
            client.wait(30)
        finally:
            srv.stop()
        per = (after - before) / max(opened, 1)
        results[("idle", srv.key)] = {"opened": opened, "kib_per_conn": per}
        print(f"  idle ws {srv.name:28} {opened} open: {per:.1f} KiB each", file=sys.stderr)


def memory_suite(servers, results):
    for srv in servers:
        srv.start(True)
        try:
            top = srv.proc.pid
            kids = [p for p in srv.pids() if p != top]
            idle = {"master": rss_kib(top), "workers": [rss_kib(p) for p in kids],
                    "master_pss": pss_kib(top)}
            wrk(srv.port, 200, True)
            loaded = {"master": rss_kib(top), "workers": [rss_kib(p) for p in kids]}
        finally:
            srv.stop()
        results[("mem", srv.key)] = {"idle": idle, "loaded": loaded}
        print(f"  memory {srv.name:28} idle {idle} after load {loaded}", file=sys.stderr)


def health_body(port):
    """The body of one `GET /health` on a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode()


def worker_requests(port, pids, tries=400):
    """Requests each worker has served, read from its own /health."""
    seen = {}
    for _ in range(tries):
        body = json.loads(health_body(port))
        seen[body["pid"]] = body["counters"]["requests"]
        if set(pids) <= set(seen):
            break
    return seen


def switches(pid):
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
            total += int(line.split()[1])
    return total


def fairness_suite(results):
    """How evenly requests spread over worker processes, with one shared
    socket (tokio's epoll without EPOLLEXCLUSIVE: every idle worker wakes)
    and with one SO_REUSEPORT socket per worker (the kernel hashes each
    connection to one socket), and how many context switches each request
    costs."""
    for mode, close in itertools.product(("shared socket", "reuse_port"), (False, True)):
        extra = {"reuse_port": "true"} if mode == "reuse_port" else None
        srv = Server("ferricorn", workers=CORES, extra=extra or {}).start(False)
        try:
            workers = [p for p in srv.pids() if p != srv.proc.pid]
            before_req = worker_requests(srv.port, workers)
            before_sw = {p: switches(p) for p in workers}
            wrk(srv.port, 200, False, close=close)
            after_req = worker_requests(srv.port, workers)
            per = {p: after_req.get(p, 0) - before_req.get(p, 0) for p in workers}
            sw = {p: switches(p) - before_sw[p] for p in workers}
        finally:
            srv.stop()
        total = sum(per.values()) or 1
        key = f"{mode}, {'new connection per request' if close else 'keep-alive'}"
        results[("fair", key)] = {
            "shares": [per[p] / total for p in workers],
            "switches_per_req": sum(sw.values()) / total,
        }
        print(f"  fairness {key}: shares {[f'{per[p] / total:.2f}' for p in workers]}, "
              f"{sum(sw.values()) / total:.3f} context switches per request", file=sys.stderr)


class RedisServer:
    """A throwaway redis-server on a free loopback port, nothing persisted;
    stopped by its PID."""

    proc = None

    def start(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server on {self.port} never answered")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def fanout_suite(results):
    """Chat fan-out across 2 workers: MEMBERS WebSockets in one room of
    `/chat/{room}`, each sending MESSAGES at RATE a second, every message
    delivered to every member (examples/fanout.rs). Unpinned: the workers,
    redis-server and the one-threaded client share the cores, so the CPU
    each used is recorded too. A fresh server (and redis-server) per load."""
    for load in FANOUT_LOADS:
        members, messages, rate = load
        for srv, uses_redis in FANOUT_SERVERS:
            redis = RedisServer() if uses_redis else None
            runs = []
            try:
                if redis:
                    redis.start()
                    if srv.kind == "ferricorn":
                        srv.extra["pubsub_url"] = redis.url
                    else:
                        srv.env["REDIS_URL"] = redis.url
                srv.start(False)
                for n in range(REPEAT):
                    pids = srv.pids()
                    before = cpu_seconds(pids)
                    workers = [p for p in pids if p != srv.proc.pid]
                    worker_before = {p: cpu_seconds([p]) for p in workers}
                    redis_before = cpu_seconds([redis.proc.pid]) if redis else 0.0
                    child = resource.getrusage(resource.RUSAGE_CHILDREN)
                    out = subprocess.run(
                        [str(FANOUT), f"127.0.0.1:{srv.port}", f"bench{n}", str(members),
                         str(messages), str(rate)],
                        capture_output=True, text=True, timeout=150, preexec_fn=raise_nofile)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    if out.stderr.strip():
                        print("    " + out.stderr.strip().replace("\n", "\n    "), file=sys.stderr)
                    r = json.loads(out.stdout)
                    r["server_cpu_s"] = cpu_seconds(pids) - before
                    # One busy worker of two means the members landed unevenly.
                    r["worker_cpu_s"] = sorted((cpu_seconds([p]) - worker_before[p] for p in workers),
                                               reverse=True)
                    r["redis_cpu_s"] = cpu_seconds([redis.proc.pid]) - redis_before if redis else 0.0
                    r["client_cpu_s"] = (after.ru_utime + after.ru_stime) - (child.ru_utime + child.ru_stime)
                    runs.append(r)
                    time.sleep(0.5)
            finally:
                srv.stop()
                if redis:
                    redis.stop()
            results[("fanout", srv.key, fanout_load_name(load))] = runs
            print(f"  fanout {srv.name:40} {fanout_load_name(load)}: "
                  f"{median([r['delivered_per_s'] for r in runs]):.0f} delivered/s, "
                  f"{sum(r['delivered'] for r in runs)}/{sum(r['expected'] for r in runs)} delivered, "
                  f"p50 {median([r['p50_ms'] for r in runs]):.2f} ms p99 {median([r['p99_ms'] for r in runs]):.2f} ms; "
                  f"CPU s server {median([r['server_cpu_s'] for r in runs]):.2f} "
                  f"(workers {' / '.join(f'{c:.2f}' for c in runs[len(runs) // 2]['worker_cpu_s'])}) redis "
                  f"{median([r['redis_cpu_s'] for r in runs]):.2f} client {median([r['client_cpu_s'] for r in runs]):.2f}",
                  file=sys.stderr)


def fanout_load_name(load):
    members, messages, rate = load
    return f"{members} members x {messages} msgs at {rate}/s"


def fanout_table(add, results):
    """The fan-out suite's table, one row per server and load."""
    add(f"### Chat fan-out across 2 workers (`/chat/{{room}}`), unpinned, {REPEAT} runs each\n")
    add("Each member sends its messages at the given rate; every message goes to "
        "every member, the sender included. Latency is send → delivery. CPU is "
        "seconds used during one run (median); the busiest worker's share shows "
        "whether members landed unevenly on the workers.\n")
    add(f"| server | load | delivered / expected | delivered/s | p50 ms | p99 ms | max ms | "
        f"dup / reordered | CPU s server (busiest worker) / redis / client | delivered/s vs {FANOUT_ANCHOR.name} | "
        f"p99 vs {FANOUT_ANCHOR.name} |")
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for load in FANOUT_LOADS:
        name = fanout_load_name(load)
        anchor = results.get(("fanout", FANOUT_ANCHOR.key, name), [])
        anchor_rate = median([r["delivered_per_s"] for r in anchor]) or 1
        anchor_p99 = median([r["p99_ms"] for r in anchor]) or 1
        for srv, _ in FANOUT_SERVERS:
            runs = results.get(("fanout", srv.key, name))
            if not runs:
                continue
            rate = median([r["delivered_per_s"] for r in runs])
            p99 = median([r["p99_ms"] for r in runs])
            ready = "" if all(r["ready"] for r in runs) else " (room not whole)"
            add(f"| {srv.name} | {name} | {sum(r['delivered'] for r in runs) / max(sum(r['expected'] for r in runs), 1):.1%}{ready} | "
                f"{spread([r['delivered_per_s'] for r in runs])} | {median([r['p50_ms'] for r in runs]):.2f} | "
                f"{spread([r['p99_ms'] for r in runs], '{:.1f}')} | {median([r['max_ms'] for r in runs]):.1f} | "
                f"{sum(r['duplicates'] for r in runs)} / {sum(r['out_of_order'] for r in runs)} | "
                f"{median([r['server_cpu_s'] for r in runs]):.2f} "
                f"({median([max(r['worker_cpu_s'], default=0) for r in runs]):.2f}) / "
                f"{median([r['redis_cpu_s'] for r in runs]):.2f} / "
                f"{median([r['client_cpu_s'] for r in runs]):.2f} | {rate / anchor_rate:.2f}× | "
                f"{p99 / anchor_p99:.2g}× |")
    add("")


def interleaved(servers, rounds):
    """`rounds` rounds of pinned `wrk -t1 -c50` against each of `servers`
    (already started) in turn, so drift on this shared machine hits each
    alike: {key: [wrk result + the server's CPU per request, all of it and
    user space's, and user space's share]}."""
    runs = {srv.key: [] for srv in servers}
    for _ in range(rounds):
        for srv in servers:
            pids = srv.pids()
            before = cpu_split(pids)
            r = wrk(srv.port, 50, True)
            after = cpu_split(pids)
            user, system = after[0] - before[0], after[1] - before[1]
            served = max(r["requests"], 1)
            r["cpu_us"] = (user + system) * 1e6 / served
            r["user_us"] = user * 1e6 / served
            r["user_share"] = user / max(user + system, 1e-9)
            runs[srv.key].append(r)
    return runs


METRICS_ROUNDS = max(REPEAT, 6)


def metrics_suite(results):
    """`/health` with metrics on (a `/metrics` listener, scraped every
    second as Prometheus would) and off: both servers up at once, their runs
    interleaved round by round so drift on this shared machine hits both
    alike. Pinned, c=50, the server's CPU per request too."""
    off = Server("ferricorn", workers=CORES, variant="metrics off")
    metrics_port = free_port()
    on = Server("ferricorn", workers=CORES, variant="metrics on, scraped every second",
                extra={"metrics_bind": f"127.0.0.1:{metrics_port}"})
    scraping = {"stop": False, "scrapes": 0, "failed": 0}

    def scraper():
        while not scraping["stop"]:
            try:
                with socket.create_connection(("127.0.0.1", metrics_port), timeout=5) as s:
                    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                ok = data.startswith(b"HTTP/1.1 200") and b"_build_info{" in data
                scraping["scrapes" if ok else "failed"] += 1
            except OSError:
                scraping["failed"] += 1
            time.sleep(1)

    off.start(True)
    on.start(True)
    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    try:
        runs = interleaved([off, on], METRICS_ROUNDS)
    finally:
        scraping["stop"] = True
        thread.join(10)
        off.stop()
        on.stop()
    for srv in (off, on):
        results[("metrics", srv.key)] = runs[srv.key]
        print(f"  metrics {srv.name:40} {median([r['rps'] for r in runs[srv.key]]):>9.0f} req/s  "
              f"cpu {median([r['cpu_us'] for r in runs[srv.key]]):.1f} us/req", file=sys.stderr)
    results["metrics scrapes"] = {"ok": scraping["scrapes"], "failed": scraping["failed"]}
    results["metrics servers"] = [off.key, on.key]
    # Wall-clock figures here swing by 2-3× between rounds; instructions
    # do not.
    for key, extra in ((off.key, {}), (on.key, {"metrics_bind": f"127.0.0.1:{free_port()}"})):
        count = instructions_per_request(Server("ferricorn", workers=1, extra=extra))
        results[("metrics instructions", key)] = count
        print(f"  metrics {key:40} {count:.0f} instructions/request in the worker", file=sys.stderr)


def keepalive_requests(port, count):
    """`count` GET /health on one keep-alive connection, each read whole."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        request = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"
        buf = b""
        for _ in range(count):
            s.sendall(request)
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, buf = buf.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(buf) < length:
                buf += s.recv(65536)
            buf = buf[length:]


# Requests counted under valgrind: the figure is the count after the second
# less the count after the first, over the difference.
VALGRIND_REQUESTS = (2000, 12000)


def per_request(srv, tool):
    """What one process of `srv` spends per keep-alive `GET /health`, under
    valgrind's `tool`: "callgrind" gives instructions, "dhat" heap blocks and
    bytes allocated. The process is the one that serves: a ferricorn worker
    (not its supervisor), nginx's single process, bare axum. The count after
    VALGRIND_REQUESTS[1] requests less the count after [0], over the
    difference, so start-up, warm-up and shutdown cancel out. The same
    count on every run, whatever else the machine does."""
    totals = []
    for count in VALGRIND_REQUESTS:
        tmp = tempfile.mkdtemp(prefix=f"ferricorn-{tool}-")
        wrap = ["valgrind", f"--tool={tool}", "--trace-children=yes",
                f"--{tool}-out-file={tmp}/out.%p"]
        srv.start(False, wrap=wrap)
        try:
            keepalive_requests(srv.port, 200)  # warm-up
            keepalive_requests(srv.port, count)
        finally:
            srv.stop()
        found = [valgrind_totals(f, tool) for f in Path(tmp).glob("out.*")]
        shutil.rmtree(tmp, ignore_errors=True)
        # A ferricorn supervisor re-executes itself as `… worker …`.
        serving = [t for cmd, t in found if srv.kind != "ferricorn" or " worker " in cmd]
        if len(serving) != 1:
            raise RuntimeError(f"{tool}: {len(serving)} serving processes of {srv.name}")
        totals.append(serving[0])
    span = VALGRIND_REQUESTS[1] - VALGRIND_REQUESTS[0]
    counted = {k: (totals[1][k] - totals[0][k]) / span for k in totals[0]}
    # Every server here allocates per request; none at all means the tool
    # did not see the allocator (one linked in statically), not a free lunch.
    if any(v <= 0 for v in counted.values()):
        raise RuntimeError(f"{tool} counted nothing per request for {srv.name}: {counted}")
    return counted


def valgrind_totals(path, tool):
    """(command line, {figure: total}) from one valgrind output file."""
    text = path.read_text(errors="replace")
    if tool == "callgrind":
        cmd = re.search(r"^cmd: (.*)$", text, re.M)
        if cmd is None:
            raise RuntimeError(f"{path}: no cmd line in {text[:300]!r}")
        cmd = cmd.group(1)
        return cmd, {"instructions": int(re.search(r"^summary: (\d+)", text, re.M).group(1))}
    data = json.loads(text)
    return data["cmd"], {"blocks": sum(pp["tbk"] for pp in data["pps"]),
                         "bytes": sum(pp["tb"] for pp in data["pps"])}


def instructions_per_request(srv):
    return per_request(srv, "callgrind")["instructions"]


def metrics_table(add, results):
    """The metrics suite's table: on against off."""
    if "metrics servers" not in results:
        return
    off, on = results["metrics servers"]
    base = results[("metrics", off)]
    rps0, cpu0 = median([r["rps"] for r in base]), median([r["cpu_us"] for r in base])
    scrapes = results["metrics scrapes"]
    add(f"### `/health` with metrics on and off, pinned, c=50, {METRICS_ROUNDS} interleaved rounds\n")
    add(f"Scrapes of `/metrics` during the run: {scrapes['ok']} answered, {scrapes['failed']} failed.\n")
    ins0 = results[("metrics instructions", off)]
    ins1 = results[("metrics instructions", on)]
    user_share = median([r["user_share"] for r in base])
    # Callgrind counts user-space instructions only; the kernel's share of a
    # request (its TCP path) is the same either way.
    cost = (ins1 / ins0 - 1) * user_share
    add(f"Wall-clock rounds on this shared machine swing by 2–3× (see min / max), "
        f"more than the difference sought; the instruction count moves by under "
        f"0.5 %. Metrics on adds {ins1 / ins0 - 1:.1%} to the worker's user-space "
        f"instructions per request; user space is {user_share:.0%} of the worker's CPU "
        f"under this load, so a request costs about {cost:.1%} more CPU and the "
        f"throughput of a CPU-bound server drops by about {1 - 1 / (1 + cost):.1%}.\n")
    add("| server | req/s | server CPU µs/req | errors | req/s vs metrics off | CPU vs metrics off | "
        "worker instructions/request (callgrind, -w 1) | vs metrics off |")
    add("|---|---|---|---|---|---|---|---|")
    for key in (off, on):
        runs = results[("metrics", key)]
        rps, cpu = median([r["rps"] for r in runs]), median([r["cpu_us"] for r in runs])
        ins = results[("metrics instructions", key)]
        add(f"| ferricorn -w {CORES}, {key.split(', ', 1)[1]} | {spread([r['rps'] for r in runs])} | "
            f"{spread([r['cpu_us'] for r in runs], '{:.1f}')} | {sum(r['errors'] for r in runs)} | "
            f"{rps / rps0:.3f}× | {cpu / cpu0:.3f}× | {ins:.0f} | {ins / ins0:.3f}× |")
    add("")


PERCORE_ROUNDS = max(REPEAT, 6)


def percore_suite(results):
    """One core's worth: ferricorn -w 1 (access log off and on), bare axum
    and nginx (one worker), all serving the same `/health` body, each
    pinned to core 0 with `wrk -t1 -c50` on core 1. All four are up at once
    and their runs interleaved round by round, so drift on this shared
    machine hits each alike. Then what each spends per request, counted
    under valgrind where the count does not drift: instructions
    (callgrind) and heap allocations (DHAT) in the process that serves."""
    servers = PERCORE_SERVERS
    for srv in servers:
        srv.start(True)
    try:
        runs = interleaved(servers, PERCORE_ROUNDS)
    finally:
        for srv in servers:
            srv.stop()
    for srv in servers:
        results[("percore", srv.key)] = runs[srv.key]
        counted = per_request(srv, "callgrind") | per_request(srv, "dhat")
        results[("percore counted", srv.key)] = counted
        print(f"  per core {srv.name:28} {median([r['rps'] for r in runs[srv.key]]):>9.0f} req/s  "
              f"cpu {median([r['cpu_us'] for r in runs[srv.key]]):.2f} us/req  "
              f"{counted['instructions']:.0f} instructions, {counted['blocks']:.1f} allocations/req",
              file=sys.stderr)


def percore_table(add, results):
    """The per-core suite's table, and the issue's targets against it."""
    if ("percore", PERCORE_FERRICORN.key) not in results:
        return
    rps = lambda srv: median([r["rps"] for r in results[("percore", srv.key)]])
    cpu = lambda srv: median([r["cpu_us"] for r in results[("percore", srv.key)]])
    ins = lambda srv: results[("percore counted", srv.key)]["instructions"]
    add(f"### One core: `GET /health` (the same body), server pinned to core 0, wrk -t1 -c50 on core 1, "
        f"{PERCORE_ROUNDS} interleaved rounds\n")
    add("Instructions and heap allocations are per request in the process that serves "
        "(a ferricorn worker, with its access-log thread; nginx's single process; bare axum), "
        f"counted under valgrind over {VALGRIND_REQUESTS[1] - VALGRIND_REQUESTS[0]:,} keep-alive "
        "requests after warm-up: within 0.5 % from run to run. Server CPU is user + system time of all "
        "the server's processes (ferricorn's supervisor too) over the requests served.\n")
    add("| server | req/s | server CPU µs/req | of it user µs/req | errors | instructions/req | "
        "allocations/req | bytes allocated/req | req/s vs nginx | CPU vs nginx | instructions vs nginx |")
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for srv in PERCORE_SERVERS:
        runs = results[("percore", srv.key)]
        counted = results[("percore counted", srv.key)]
        add(f"| {srv.name} | {spread([r['rps'] for r in runs])} | {spread([r['cpu_us'] for r in runs], '{:.2f}')} | "
            f"{median([r['user_us'] for r in runs]):.2f} | {sum(r['errors'] for r in runs)} | "
            f"{counted['instructions']:,.0f} | {counted['blocks']:.1f} | {counted['bytes']:,.0f} | "
            f"{rps(srv) / rps(PERCORE_NGINX):.2f}× | {cpu(srv) / cpu(PERCORE_NGINX):.2f}× | "
            f"{ins(srv) / ins(PERCORE_NGINX):.2f}× |")
    add("")
    f, log, bare, ngx = PERCORE_FERRICORN, PERCORE_LOG, PERCORE_BARE, PERCORE_NGINX
    verdict = lambda ok: "met" if ok else "**not met**"
    targets = [
        ("req/s ≥ 0.9× nginx", rps(f) / rps(ngx), rps(f) / rps(ngx) >= 0.9),
        ("server CPU/req ≤ 1.1× nginx", cpu(f) / cpu(ngx), cpu(f) / cpu(ngx) <= 1.1),
        ("req/s ≥ 1.0× bare axum", rps(f) / rps(bare), rps(f) / rps(bare) >= 1.0),
        ("access log on costs ≤ 15 % (CPU/req)", cpu(log) / cpu(f) - 1, cpu(log) / cpu(f) - 1 <= 0.15),
    ]
    add("| target (ferricorn -w 1) | measured | |")
    add("|---|---|---|")
    for name, value, ok in targets:
        shown = f"{value:+.1%}" if "access" in name else f"{value:.2f}×"
        add(f"| {name} | {shown} | {verdict(ok)} |")
    add(f"\nThe access log's cost in instructions: {ins(log) / ins(f) - 1:+.0%} "
        f"({ins(log) - ins(f):,.0f} a request, on its own thread); in req/s: "
        f"{rps(log) / rps(f) - 1:+.1%}.\n")


def startup_suite(results):
    times = []
    for _ in range(5):
        srv = Server("ferricorn", workers=2).start(False)
        times.append(srv.startup_ms)
        srv.stop()
    results["startup"] = times
    print(f"  startup to READY=1 (2 workers): {spread(times, '{:.1f}')} ms", file=sys.stderr)


def reload_suite(results):
    # SIGHUP is the rolling reload of both.
    for srv in RELOAD_SERVERS:
        srv.start(False)
        try:
            load = subprocess.Popen(["wrk", "-t2", "-c50", "-d12s", f"http://127.0.0.1:{srv.port}/health"],
                                    stdout=subprocess.PIPE, text=True)
            for _ in range(3):
                time.sleep(2.5)
                os.kill(srv.proc.pid, signal.SIGHUP)
            out = load.communicate(timeout=60)[0]
        finally:
            srv.stop()
        res = parse_wrk(out)
        requests, errors = res["requests"], res["errors"]
        results[("reload", srv.key)] = {"requests": requests, "errors": errors}
        print(f"  3 reloads under load {srv.name}: {requests} requests, {errors} failed", file=sys.stderr)


def report(results, servers):
    lines = []
    add = lines.append
    names = {s.key: s.name for s in servers}
    names.update({s.key: s.name for s in WS_SERVERS + IDLE_SERVERS + RELOAD_SERVERS})
    gun = GUNICORN_FORMULA.key
    add(f"Machine: {CORES} cores, {platform()}; wrk {tool_version(['wrk', '-v'])}; "
        f"nginx {tool_version(['nginx', '-v'])}; {py_versions()}; {DURATION} s per run, "
        f"{REPEAT} runs each, min / median / max. Gunicorn's formula, 2 × cores + 1, "
        f"gives {GUNICORN_FORMULA_WORKERS} workers here.\n")
    percore_table(add, results)
    for pinned in (True, False):
        for conns in (50, 200):
            add(f"### HTTP keep-alive `GET /health`, c={conns}, "
                f"{'server on core 0, wrk -t1 on core 1' if pinned else 'unpinned, wrk -t2'}\n")
            add(f"| server | req/s | p50 ms | p99 ms | server CPU µs/req | errors | req/s vs {GUNICORN_FORMULA.name} | vs bare axum | vs nginx |")
            add("|---|---|---|---|---|---|---|---|---|")
            base = lambda k: median([r["rps"] for r in results.get(("http", k, pinned, conns), [])]) or 1
            for srv in servers:
                runs = results[("http", srv.key, pinned, conns)]
                rps = [r["rps"] for r in runs]
                add(f"| {srv.name} | {spread(rps)} | {median([r['p50'] for r in runs]):.2f} | "
                    f"{spread([r['p99'] for r in runs], '{:.2f}')} | "
                    f"{spread([r['cpu_us'] for r in runs], '{:.1f}')} | {sum(r['errors'] for r in runs)} | "
                    f"{median(rps) / base(gun):.1f}× | {median(rps) / base(BARE_AXUM.key):.2f}× | "
                    f"{median(rps) / base(NGINX.key):.2f}× |")
            add("")
    add("### New connection per request (`Connection: close`), c=50, pinned\n")
    add("| server | connections/s | errors |")
    add("|---|---|---|")
    for srv in servers:
        runs = results[("conn", srv.key)]
        add(f"| {srv.name} | {spread([r['rps'] for r in runs])} | {sum(r['errors'] for r in runs)} |")
    add("")
    for conns in (100, 1000):
        add(f"### WebSocket echo, {conns} connections × {100000 // conns} messages of 32 bytes, pinned\n")
        add(f"| server | msgs/s | p99 RTT ms | errors | msgs/s vs {GUNICORN_2.name} |")
        add("|---|---|---|---|---|")
        keys = [k for k in results if k[0] == "ws" and k[2] == conns]
        gun2 = median([r["msgs_per_s"] for r in results.get(("ws", GUNICORN_2.key, conns), [])]) or 1
        for k in keys:
            runs = results[k]
            add(f"| {names[k[1]]} | {spread([r['msgs_per_s'] for r in runs])} | "
                f"{spread([r['p99_ms'] for r in runs], '{:.2f}')} | {sum(r['errors'] for r in runs)} | "
                f"{median([r['msgs_per_s'] for r in runs]) / gun2:.1f}× |")
        add("")
    mib = lambda kib: f"{kib / 1024:.1f}"
    table(add, "Idle WebSockets (10,000 opened, bounded)",
          ["server", "opened", "worker RSS per connection"],
          [[names[k[1]], str(v["opened"]), f"{v['kib_per_conn']:.1f} KiB"]
           for k, v in results.items() if k[0] == "idle"])
    table(add, "Memory (RSS, MiB)",
          ["server", "master/supervisor idle", "its PSS idle", "each worker idle", "master after load",
           "each worker after load"],
          [[names[k[1]], mib(v["idle"]["master"]), mib(v["idle"]["master_pss"]),
            ", ".join(mib(w) for w in v["idle"]["workers"]) or "–",
            mib(v["loaded"]["master"]), ", ".join(mib(w) for w in v["loaded"]["workers"]) or "–"]
           for k, v in results.items() if k[0] == "mem"])
    table(add, "Accept fairness across workers, unpinned, c=200",
          ["load", "share of requests per worker", "context switches per request"],
          [[k[1], ", ".join(f"{s:.0%}" for s in v["shares"]), f"{v['switches_per_req']:.3f}"]
           for k, v in results.items() if k[0] == "fair"])
    add(f"### Start-up and reload\n")
    add(f"- ferricorn exec → `READY=1` with 2 workers: {spread(results['startup'], '{:.1f}')} ms")
    for k, v in results.items():
        if k[0] == "reload":
            add(f"- 3 × HUP under wrk load, {names[k[1]]}: {v['errors']} failed of {v['requests']} requests")
    add("")
    metrics_table(add, results)
    fanout_table(add, results)
    return "\n".join(lines) + "\n"


def table(add, title, columns, rows):
    """A markdown table under a heading."""
    add(f"### {title}\n")
    add("| " + " | ".join(columns) + " |")
    add("|" + "---|" * len(columns))
    for row in rows:
        add("| " + " | ".join(row) + " |")
    add("")


def platform():
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except StopIteration:
        model = "unknown CPU"
    return f"{model}, Linux {os.uname().release}"


def tool_version(cmd):
    """The version word of `cmd`'s first line ("wrk 4.1.0 …", "nginx version: nginx/1.22.1")."""
    out = subprocess.run(cmd, capture_output=True, text=True)
    text = (out.stdout + out.stderr).strip().splitlines()
    words = text[0].split() if text else []
    for word in words[1:]:
        if any(c.isdigit() for c in word):
            return word
    return "?"


def py_versions():
    out = subprocess.run([str(VENV / "bin/python"), "-c",
                          "import gunicorn, uvicorn, fastapi, sys; print(f'Python {sys.version.split()[0]}, Gunicorn {gunicorn.__version__}, Uvicorn {uvicorn.__version__}, FastAPI {fastapi.__version__}')"],
                         capture_output=True, text=True)
    return out.stdout.strip()


# The servers, as data. Each role the report compares against is named once.
FERRICORN_CORES = Server("ferricorn", workers=CORES)
BARE_AXUM = Server("bare")
GUNICORN_2 = Server("gunicorn", workers=2)
GUNICORN_FORMULA = Server("gunicorn", workers=GUNICORN_FORMULA_WORKERS, variant="2 × cores + 1")
NGINX = Server("nginx", workers=CORES)
SERVERS = [
    FERRICORN_CORES,
    Server("ferricorn", workers=1),
    Server("ferricorn", workers=CORES, variant="access log", access_log=True),
    Server("ferricorn", workers=CORES, variant="reuse_port", extra={"reuse_port": "true"}),
    BARE_AXUM,
    GUNICORN_2,
    GUNICORN_FORMULA,
    Server("uvicorn"),
    NGINX,
]
# One core's worth (the per-core suite).
PERCORE_FERRICORN = Server("ferricorn", workers=1, key="percore ferricorn")
PERCORE_LOG = Server("ferricorn", workers=1, variant="access log", access_log=True, key="percore log")
PERCORE_BARE = Server("bare", key="percore bare")
PERCORE_NGINX = Server("nginx", workers=1, key="percore nginx")
PERCORE_SERVERS = [PERCORE_FERRICORN, PERCORE_LOG, PERCORE_BARE, PERCORE_NGINX]
# WebSocket echo: nginx has no /ws, and the variants change nothing there.
WS_SERVERS = [FERRICORN_CORES, Server("ferricorn", workers=1), BARE_AXUM, GUNICORN_2, Server("uvicorn")]
IDLE_SERVERS = [Server("ferricorn", workers=1, variant="worker_connections 20000",
                       extra={"worker_connections": 20000}), BARE_AXUM, Server("uvicorn")]
RELOAD_SERVERS = [Server("ferricorn", workers=2), GUNICORN_2]
# Chat fan-out: (members, messages each, messages a second each). The first
# a load the anchor sustains; the second to find where each saturates.
FANOUT_LOADS = [(40, 50, 20), (40, 100, 100)]
FANOUT_ANCHOR = Server("gunicorn", workers=2, variant="FastAPI + redis.asyncio",
                       app="bench_chat_fastapi:app")
# (server, whether it gets a redis-server of its own)
FANOUT_SERVERS = [
    (Server("ferricorn", workers=2, variant="embedded pub/sub"), False),
    (Server("ferricorn", workers=2, variant="Redis pub/sub"), True),
    (FANOUT_ANCHOR, True),
]


def main():
    servers = SERVERS
    # BENCH_SERVERS="ferricorn -w 2;nginx" runs a part of the table.
    if wanted := os.environ.get("BENCH_SERVERS"):
        servers = [s for s in servers if s.name in wanted.split(";")]
    everything = ["percore", "http", "conn", "ws", "idle", "mem", "fair", "startup", "reload", "metrics",
                  "fanout"]
    only = os.environ.get("BENCH_ONLY", ",".join(everything)).split(",")
    results = {}
    print(f"# benchmark: {DURATION}s runs × {REPEAT}", file=sys.stderr)
    if "percore" in only:
        percore_suite(results)
    if "http" in only:
        http_suite(servers, results)
    if "conn" in only:
        conn_suite(servers, results)
    if "ws" in only:
        ws_suite([s for s in WS_SERVERS if s.key in {t.key for t in servers}], results)
    if "idle" in only:
        idle_ws_suite(IDLE_SERVERS, results)
    if "mem" in only:
        memory_suite([s for s in servers if not s.variant], results)
    if "fair" in only:
        fairness_suite(results)
    if "startup" in only:
        startup_suite(results)
    if "reload" in only:
        reload_suite(results)
    if "metrics" in only:
        metrics_suite(results)
    if "fanout" in only:
        fanout_suite(results)
    if set(only) >= set(everything):
        text = report(results, servers)
        out = ROOT / "target/bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text)
        print(text)
    else:
        print(json.dumps({" ".join(map(str, k)) if isinstance(k, tuple) else k: v for k, v in results.items()}, indent=1))
        lines = []
        if "percore" in only:
            percore_table(lines.append, results)
        if "metrics" in only:
            metrics_table(lines.append, results)
        if "fanout" in only:
            fanout_table(lines.append, results)
        print("\n".join(lines))


if __name__ == "__main__":
    main()
