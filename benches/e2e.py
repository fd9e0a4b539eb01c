"""The end-to-end benchmark behind BENCHMARKS.md. Run it through benches/e2e.sh, which installs
wrk and nginx and builds the release binary first.

On this 2-core machine the hop under test (nothing, nginx, or sfbulk-proxy) and the upstream (the
emulator) share core 0, and the load generator (wrk) has core 1, so every case gets the same CPU.
For streaming, the emulator moves to core 1 beside curl and the proxy has core 0, so the proxy's
relay is what is measured. Everything listens on loopback and stops by itself."""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Another build (say, of an earlier commit) can be measured with SFBULK_BENCH_BIN=path.
BIN = os.environ.get("SFBULK_BENCH_BIN", os.path.join(ROOT, "target", "release", "sfbulk-proxy"))
# With SFBULK_BENCH_BASELINE=path, a second build (say, of the commit before a change) serves
# beside it, and its getJob and createJob take their turns in the same rounds, so the two builds
# are compared within one run rather than across runs an unknown load apart.
BASELINE = os.environ.get("SFBULK_BENCH_BASELINE")
DURATION = int(os.environ.get("DURATION", "5"))
# Each comparison is run this many times, the cases taking turns, so that a slow spell of this
# shared machine hits every case alike; the report gives medians and per-round ratios.
ROUNDS = int(os.environ.get("ROUNDS", "5"))
CONNECTIONS = [int(c) for c in os.environ.get("CONNECTIONS", "1 32 256").split()]
# Both hops keep as many idle connections to the upstream as the run has callers at most: nginx's
# `keepalive` (per worker; it has one) and the proxy's salesforce.idle_connections_per_origin. A
# smaller pool closes connections after use and opens (over TLS: handshakes) new ones, which
# measures the pool's size rather than the hop.
POOL = max(CONNECTIONS)
# Generated Contacts in the streamed result: about 250 bytes each, so 4.5 million is about 1.1 GB.
STREAM_ROWS = int(os.environ.get("STREAM_ROWS", "4500000"))
HOP_CORE, LOAD_CORE = "0", "1"

EMULATOR = "127.0.0.1:18281"
NGINX = "127.0.0.1:18282"
PROXY = "127.0.0.1:18280"
BASELINE_PROXY = "127.0.0.1:18283"
# The redis case: a redis-server (persistence off) and a proxy on the redis registry backend, both
# on the hop's core, since Redis's work is part of that hop's cost.
REDIS = "127.0.0.1:18284"
REDIS_PROXY = "127.0.0.1:18285"
# TLS upstream: a second emulator serving HTTPS (a certificate of a CA made for the run), nginx
# with proxy_pass https:// (upstream keepalive, session reuse, the certificate verified) and a
# proxy trusting the CA through salesforce.ca_file.
TLS_EMULATOR = "127.0.0.1:18286"
TLS_NGINX = "127.0.0.1:18287"
TLS_PROXY = "127.0.0.1:18288"
# Slow Salesforce: a third emulator that waits SLOW_LATENCY_MS before every answer, and
# SLOW_CALLERS callers at once through nginx and the proxy.
SLOW_EMULATOR = "127.0.0.1:18292"
SLOW_NGINX = "127.0.0.1:18293"
SLOW_PROXY = "127.0.0.1:18294"
SLOW_LATENCY_MS = int(os.environ.get("SLOW_LATENCY_MS", "1000"))
SLOW_CALLERS = int(os.environ.get("SLOW_CALLERS", "2000"))
SLOW_DURATION = int(os.environ.get("SLOW_DURATION", "30"))
TOKEN = "00DBENCHMARK001!benchmark-session"
NS = "http://www.force.com/2009/06/asyncapi/dataload"

work = tempfile.mkdtemp(prefix="sfbulk-bench-")
processes = []


def start(args, env=None, core=HOP_CORE, log="log"):
    out = open(os.path.join(work, log), "ab")
    process = subprocess.Popen(
        ["taskset", "-c", core] + args,
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    processes.append(process)
    return process


def stop_all():
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    processes.clear()


def wait_ready(address, path="/healthz", timeout=10.0):
    """Seconds until `address` answers `path` with 200."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            host, port = address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=0.2) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.001)
    raise RuntimeError(f"{address} did not become ready")


def wait_ready_tls(address, ca_file, timeout=10.0):
    """As wait_ready, over HTTPS trusting `ca_file`."""
    import ssl
    context = ssl.create_default_context(cafile=ca_file)
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            urllib.request.urlopen(f"https://{address}/healthz", context=context, timeout=0.5).read()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"{address} did not become ready over HTTPS")


def make_tls_files():
    """A CA and a certificate for 127.0.0.1 signed by it (RSA 2048, as Salesforce's are), by the
    openssl command; returns the CA's, the certificate's and the key's paths."""
    ca, ca_key = os.path.join(work, "ca.pem"), os.path.join(work, "ca.key")
    cert, key, csr = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem"), os.path.join(work, "cert.csr")
    ext = os.path.join(work, "cert.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-subj", "/CN=bench CA",
        "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
        "-extfile", ext)
    return ca, cert, key


def established(port):
    """TCP connections established to `port` on this machine now."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def http(method, url, body=None, headers=None, context=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, context=context) as response:
        return response.read().decode()


def element(text, name):
    match = re.search(f"<{name}>([^<]*)</{name}>", text)
    return match.group(1) if match else None


def peak_rss_mb(process):
    with open(f"/proc/{process.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def envelope(operation, fields, api_url=None):
    connection = {
        "apiVersion": "34.0",
        "accessToken": TOKEN,
        "apiUrl": api_url or f"http://{EMULATOR}",
        "refreshToken": "sfbulk-demo-refresh-token",
        "clientId": "sfbulk-demo-client-id",
        "clientSecret": "sfbulk-demo-client-secret",
        "intervalTime": "86400000",
        "registryPath": "connectors/SalesforceBulk",
    }
    connection.update(fields)
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in connection.items())
    return f"<{operation}>{inner}</{operation}>"


def cpu_seconds(pid):
    """User and system CPU time a process has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def wrk(url, connections, body=None, headers=(), hop=None, duration=None, sample=None):
    """Requests/s, p50 ms, p99 ms and errors for one wrk run; with `hop` (a pid, or a list of them),
    also the CPU time those processes spent per request, in microseconds, in all and in user space."""
    script = os.path.join(work, "request.lua")
    with open(script, "w") as lua:
        lua.write('wrk.method = "%s"\n' % ("POST" if body else "GET"))
        if body:
            lua.write("wrk.body = %s\n" % json.dumps(body))
            lua.write('wrk.headers["Content-Type"] = "text/xml"\n')
        for name, value in headers:
            lua.write('wrk.headers["%s"] = "%s"\n' % (name, value))
    threads = max(1, min(connections, 2))
    hops = [] if hop is None else hop if isinstance(hop, list) else [hop]

    def hop_cpu():
        times = [cpu_seconds(pid) for pid in hops]
        return sum(t[0] for t in times), sum(t[1] for t in times)

    duration = duration or DURATION
    sampled = {}
    if sample:
        # Read once, halfway through the run (say, the connections open upstream).
        import threading
        timer = threading.Timer(duration / 2, lambda: sampled.update(value=sample()))
        timer.start()
    cpu_before = hop_cpu()
    output = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t", str(threads), "-c", str(connections),
         "-d", f"{duration}s", "--timeout", "10s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout

    def latency(percent):
        value, unit = re.search(rf"\s{percent}%\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    cpu_us = user_us = None
    if hops:
        (user, system), (user_before, system_before) = hop_cpu(), cpu_before
        cpu_us = (user + system - user_before - system_before) * 1e6 / requests
        user_us = (user - user_before) * 1e6 / requests
    return {"rps": rps, "p50": latency(50), "p99": latency(99), "errors": errors, "cpu_us": cpu_us,
            "user_us": user_us, "sampled": sampled.get("value")}


def nginx_config(name="nginx", listen=NGINX, upstream=EMULATOR, tls_ca=None, keepalive=POOL):
    """nginx passing everything to `upstream`: over https (verifying its certificate against
    `tls_ca`, reusing TLS sessions) when `tls_ca` is given."""
    path = os.path.join(work, f"{name}.conf")
    scheme = "https" if tls_ca else "http"
    tls = f"""
            proxy_ssl_trusted_certificate {tls_ca};
            proxy_ssl_verify on;
            proxy_ssl_name 127.0.0.1;
            proxy_ssl_session_reuse on;""" if tls_ca else ""
    with open(path, "w") as conf:
        conf.write(f"""
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log {work}/{name}-access.log;
    client_body_temp_path {work}/{name}-body;
    proxy_temp_path {work}/{name}-proxy;
    upstream salesforce {{ server {upstream}; keepalive {keepalive}; }}
    server {{
        listen {listen};
        location / {{
            proxy_pass {scheme}://salesforce;
            proxy_http_version 1.1;
            proxy_set_header Connection "";{tls}
        }}
    }}
}}
""")
    return path


def nginx_version():
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    match = re.search(r"nginx/([\d.]+)", out)
    return match.group(1) if match else "?"


def start_nginx(name, listen, **options):
    """An nginx on `listen` and the pid of its one worker."""
    nginx = start(["nginx", "-c", nginx_config(name, listen, **options)], log=f"{name}.log")
    wait_ready(listen)  # nginx passes /healthz on to its upstream
    worker = int(subprocess.run(["pgrep", "-P", str(nginx.pid)], capture_output=True, text=True).stdout.split()[0])
    return nginx, worker


def proxy_env(listen=PROXY, backend="memory", upstream=f"http://{EMULATOR}", extra=None):
    return {
        "SFBULK__SERVER__LISTEN": listen,
        # Several proxies run at once here; the admin port is not measured.
        "SFBULK__ADMIN__LISTEN": "",
        "SFBULK__SALESFORCE__ALLOWED_ORIGINS": upstream,
        "SFBULK__SALESFORCE__TOKEN_ENDPOINT_HOSTNAME": upstream,
        "SFBULK__REGISTRY__BACKEND": backend,
        "SFBULK__REGISTRY__DIR": os.path.join(work, f"registry-{listen.rsplit(':', 1)[1]}"),
        "SFBULK__REGISTRY__REDIS_URL": f"redis://{REDIS}/0",
        "SFBULK__SALESFORCE__IDLE_CONNECTIONS_PER_ORIGIN": str(POOL),
        **(extra or {}),
    }


def start_redis():
    host, port = REDIS.rsplit(":", 1)
    redis = start(["redis-server", "--bind", host, "--port", port, "--save", "", "--appendonly", "no",
                   "--dir", work], log="redis.log")
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return redis
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit("redis-server did not start")
        time.sleep(0.05)


def start_proxy(binary=BIN, listen=PROXY, backend="memory", upstream=f"http://{EMULATOR}", extra=None):
    proxy = start([binary, "serve"], proxy_env(listen, backend, upstream, extra),
                  log=f"proxy-{listen.rsplit(':', 1)[1]}.log")
    wait_ready(listen)
    return proxy


def start_to_ready(runs=5):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        proxy = start([BIN, "serve"], proxy_env(), log="proxy-start.log")
        wait_ready(PROXY, timeout=5)
        times.append((time.perf_counter() - started) * 1000)
        proxy.send_signal(signal.SIGTERM)
        proxy.wait()
        processes.remove(proxy)
    return statistics.median(times)


def stream(url, body=None, headers=(), hop=None):
    """MB/s and bytes for one curl download discarded as it arrives (bytes as they came: with
    Accept-Encoding: gzip, the compressed ones); with `hop`, also that process's CPU seconds."""
    args = ["taskset", "-c", LOAD_CORE, "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{time_total}"]
    for name, value in headers:
        args += ["-H", f"{name}: {value}"]
    if body:
        args += ["-H", "Content-Type: text/xml", "--data-binary", body]
    before = sum(cpu_seconds(hop.pid)) if hop else 0
    size, seconds = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout.split()
    cpu = sum(cpu_seconds(hop.pid)) - before if hop else None
    if hop:
        return int(size) / float(seconds) / 1e6, int(size), float(seconds), cpu
    return int(size) / float(seconds) / 1e6, int(size)


def stream_pages(url, headers):
    """MB/s, bytes and pages for a client reading every page of a Bulk API 2.0 query result by hand
    (what a flow does without allPages): the locators are collected first, untimed, then one curl
    reads every page in order over one kept-alive connection, so the baseline is curl's speed and
    not a script's."""
    import http.client
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.netloc)
    locators, locator = [None], None
    while True:
        path = parsed.path if locator is None else f"{parsed.path}?locator={urllib.parse.quote(locator, safe='')}"
        connection.request("GET", path, headers=dict(headers))
        response = connection.getresponse()
        assert response.status == 200, response.status
        locator = response.getheader("Sforce-Locator", "null")
        while response.read(1 << 20):
            pass
        if locator == "null":
            break
        locators.append(locator)
    connection.close()
    args = ["taskset", "-c", LOAD_CORE, "curl", "-sS", "-w", "%{size_download}\n"]
    for name, value in headers:
        args += ["-H", f"{name}: {value}"]
    for locator in locators:
        page = url if locator is None else f"{url}?locator={urllib.parse.quote(locator, safe='')}"
        args += ["-o", "/dev/null", page]
    started = time.monotonic()
    sizes = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    seconds = time.monotonic() - started
    total = sum(int(size) for size in sizes)
    return total / seconds / 1e6, total, len(locators)


def check_ports_free():
    """A leftover server on one of our ports would answer for the one we start, so refuse to run."""
    for address in (EMULATOR, NGINX, PROXY, REDIS, REDIS_PROXY, TLS_EMULATOR, TLS_NGINX, TLS_PROXY, SLOW_EMULATOR,
                    SLOW_NGINX, SLOW_PROXY) + ((BASELINE_PROXY,) if BASELINE else ()):
        host, port = address.rsplit(":", 1)
        with socket.socket() as s:
            # As servers do: closed connections' TIME_WAIT must not count, only a listener.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, int(port)))
            except OSError:
                sys.exit(f"{address} is in use: stop whatever listens there (a previous run?) and start again")


def main():
    check_ports_free()
    # The guard runs at its defaults and the proxy logs at info, as the report says, whatever this
    # shell's environment says.
    for key in [k for k in os.environ
                if k.startswith(("SFBULK__GOVERNOR__", "SFBULK__LOG__")) or k == "RUST_LOG"]:
        print(f"ignoring {key}: the guard and the log are measured at their defaults")
        del os.environ[key]
    emulator_env = {
        "SFBULK__EMULATOR__LISTEN": EMULATOR,
        "SFBULK__EMULATOR__ACCESS_TOKEN": TOKEN,
        "SFBULK__EMULATOR__SESSION_TTL_SECS": "86400",
        "SFBULK__EMULATOR__BATCH_PROCESSING_MS": "0",
        "SFBULK__EMULATOR__GENERATED_CONTACTS": str(STREAM_ROWS),
        # A result is compressed once for the first gzip caller and served from memory after
        # that, so the emulator's own gzip work does not set the compressed figures.
        "SFBULK__EMULATOR__REUSE_COMPRESSED_ANSWERS": "true",
        "SFBULK__LOG__LEVEL": "warn",
    }
    emulator = start([BIN, "emulator"], emulator_env, log="emulator.log")
    wait_ready(EMULATOR)
    ca, cert, key = make_tls_files()
    tls_emulator = start([BIN, "emulator"], {**emulator_env, "SFBULK__EMULATOR__LISTEN": TLS_EMULATOR,
                                             "SFBULK__EMULATOR__TLS_CERT_FILE": cert,
                                             "SFBULK__EMULATOR__TLS_KEY_FILE": key,
                                             "SFBULK__EMULATOR__GENERATED_CONTACTS": "0"},
                         log="emulator-tls.log")
    wait_ready_tls(TLS_EMULATOR, ca)
    import ssl
    tls_context = ssl.create_default_context(cafile=ca)
    session = {"X-SFDC-Session": TOKEN}
    job_info = f'<jobInfo xmlns="{NS}"><operation>insert</operation><object>Contact</object><contentType>CSV</contentType></jobInfo>'
    job = element(http("POST", f"http://{EMULATOR}/services/async/34.0/job", job_info.encode(),
                       {**session, "Content-Type": "application/xml"}), "id")
    job_path = f"/services/async/34.0/job/{job}"
    tls_job = element(http("POST", f"https://{TLS_EMULATOR}/services/async/34.0/job", job_info.encode(),
                           {**session, "Content-Type": "application/xml"}, tls_context), "id")
    tls_job_path = f"/services/async/34.0/job/{tls_job}"

    rows = []
    def record(case, connections, result, rss=None):
        rows.append({"case": case, "connections": connections, **result, "rss": rss})
        print(f"{case:>15} c={connections:<4} {result['rps']:>10.0f} req/s  p50 {result['p50']:.3f} ms  "
              f"p99 {result['p99']:.3f} ms  errors {result['errors']}"
              + (f"  CPU {result['cpu_us']:.1f} us/request ({result['user_us']:.1f} user)" if result["cpu_us"] else "")
              + (f"  peak RSS {rss:.1f} MB" if rss else ""),
              flush=True)

    nginx, nginx_worker = start_nginx("nginx", NGINX)
    tls_nginx, tls_nginx_worker = start_nginx("nginx-tls", TLS_NGINX, upstream=TLS_EMULATOR, tls_ca=ca)
    get_job = envelope("getJob", {"jobId": job})
    tls_get_job = envelope("getJob", {"jobId": tls_job}, api_url=f"https://{TLS_EMULATOR}")
    tls_proxy = start_proxy(listen=TLS_PROXY, upstream=f"https://{TLS_EMULATOR}",
                            extra={"SFBULK__SALESFORCE__CA_FILE": ca})
    http("POST", f"http://{TLS_PROXY}/services/salesforcebulk_getJob", tls_get_job.encode(), {"Content-Type": "text/xml"})
    proxy = start_proxy()
    proxies = [("proxy", proxy, PROXY)]
    if BASELINE:
        proxies.append(("baseline", start_proxy(BASELINE, BASELINE_PROXY), BASELINE_PROXY))
    redis = start_redis()
    redis_proxy = start_proxy(listen=REDIS_PROXY, backend="redis")
    for address in [a for _, _, a in proxies] + [REDIS_PROXY]:
        # One call first, so the registry holds the token (every measured call is a registry hit).
        http("POST", f"http://{address}/services/salesforcebulk_getJob", get_job.encode(), {"Content-Type": "text/xml"})
    for c in CONNECTIONS:
        for _ in range(ROUNDS):
            # direct's CPU column is the emulator's: a hyper (axum) server answering from memory.
            record("direct", c, wrk(f"http://{EMULATOR}{job_path}", c, headers=session.items(), hop=emulator.pid))
            record("nginx", c, wrk(f"http://{NGINX}{job_path}", c, headers=session.items(), hop=nginx_worker))
            for name, process, address in proxies:
                record(f"{name} getJob", c, wrk(f"http://{address}/services/salesforcebulk_getJob", c,
                                                body=get_job, hop=process.pid), peak_rss_mb(process))
            # The same proxy on the redis backend: one GETEX per request; CPU is proxy plus Redis.
            record("redis getJob", c, wrk(f"http://{REDIS_PROXY}/services/salesforcebulk_getJob", c,
                                          body=get_job, hop=[redis_proxy.pid, redis.pid]), peak_rss_mb(redis_proxy))
            # The proxy's front half alone: hyper's server, routing, request id and access line,
            # with no envelope and no call upstream.
            record("proxy healthz", c, wrk(f"http://{PROXY}/healthz", c, hop=proxy.pid))
            # The same read from an HTTPS upstream: what TLS to Salesforce adds to each hop.
            record("direct tls", c, wrk(f"https://{TLS_EMULATOR}{tls_job_path}", c, headers=session.items(),
                                        hop=tls_emulator.pid))
            record("nginx tls", c, wrk(f"http://{TLS_NGINX}{tls_job_path}", c, headers=session.items(),
                                       hop=tls_nginx_worker))
            record("proxy tls getJob", c, wrk(f"http://{TLS_PROXY}/services/salesforcebulk_getJob", c,
                                              body=tls_get_job, hop=tls_proxy.pid), peak_rss_mb(tls_proxy))
    create_proxy = envelope("createJob", {"operation": "insert", "object": "Contact", "contentType": "CSV"})
    for c in CONNECTIONS:
        for _ in range(ROUNDS):
            record("direct create", c, wrk(f"http://{EMULATOR}/services/async/34.0/job", c, body=job_info,
                                           headers=[*session.items(), ("Content-Type", "application/xml")]))
            for name, process, address in proxies:
                record(f"{name} createJob", c, wrk(f"http://{address}/services/salesforcebulk_createJob", c,
                                                   body=create_proxy, hop=process.pid), peak_rss_mb(process))
    rss_after_load = peak_rss_mb(proxy)
    for _, process, _ in proxies + [("redis proxy", redis_proxy, None), ("redis", redis, None),
                                    ("tls proxy", tls_proxy, None), ("tls nginx", tls_nginx, None),
                                    ("tls emulator", tls_emulator, None)]:
        processes.remove(process)
        process.send_signal(signal.SIGTERM)
        process.wait()

    # Streaming: a query over the generated records, read directly and through a fresh proxy.
    query_job = element(http("POST", f"http://{EMULATOR}/services/async/34.0/job",
                             f'<jobInfo xmlns="{NS}"><operation>query</operation><object>Contact</object><contentType>CSV</contentType></jobInfo>'.encode(),
                             {**session, "Content-Type": "application/xml"}), "id")
    batch = element(http("POST", f"http://{EMULATOR}/services/async/34.0/job/{query_job}/batch",
                         b"SELECT Id, FirstName, LastName, Email, Description FROM Contact",
                         {**session, "Content-Type": "text/csv"}), "id")
    result = element(http("GET", f"http://{EMULATOR}/services/async/34.0/job/{query_job}/batch/{batch}/result",
                          headers=session), "result")
    subprocess.run(["taskset", "-a", "-p", "-c", LOAD_CORE, str(emulator.pid)], check=True, capture_output=True)
    result_url = f"http://{EMULATOR}/services/async/34.0/job/{query_job}/batch/{batch}/result/{result}"
    gzip = [("Accept-Encoding", "gzip")]
    direct_mbps, size = stream(result_url, headers=session.items())
    # The first gzip read compresses the result (once); the second is what a gzip caller of
    # Salesforce itself would see.
    stream(result_url, headers=[*session.items(), *gzip])
    _, gz_size = stream(result_url, headers=[*session.items(), *gzip])
    proxy = start_proxy()
    results_body = envelope("getBulkQueryResults", {"jobId": query_job, "batchId": batch, "resultId": result})
    proxy_url = f"http://{PROXY}/services/salesforcebulk_getBulkQueryResults"
    # A caller that takes no gzip: the proxy asks Salesforce for gzip and decodes as it streams.
    _, proxy_size, plain_seconds, plain_cpu = stream(proxy_url, body=results_body, hop=proxy)
    proxy_mbps = size / plain_seconds / 1e6
    stream_rss = peak_rss_mb(proxy)
    # A caller that takes gzip: Salesforce's compressed bytes relayed unchanged.
    _, gz_proxy_size, gz_seconds, gz_cpu = stream(proxy_url, body=results_body, headers=gzip, hop=proxy)
    gz_rss = peak_rss_mb(proxy)
    assert proxy_size == size, (proxy_size, size)
    assert gz_proxy_size == gz_size, (gz_proxy_size, gz_size)
    compressed = {"size": size, "gz_size": gz_size, "plain_mbps": proxy_mbps, "gz_mbps": size / gz_seconds / 1e6,
                  "plain_cpu_ms_per_mb": plain_cpu * 1e3 / (size / 1e6),
                  "gz_cpu_ms_per_mb": gz_cpu * 1e3 / (size / 1e6), "plain_rss": stream_rss, "gz_rss": gz_rss}
    processes.remove(proxy)
    proxy.send_signal(signal.SIGTERM)
    proxy.wait()

    # Bulk API 2.0: the same rows as a query job's pages (Salesforce's default of 10,000 rows a
    # page), read page by page directly, then in one allPages answer through a fresh proxy.
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    v2_job = json.loads(http("POST", f"http://{EMULATOR}/services/data/v59.0/jobs/query",
                             json.dumps({"operation": "query",
                                         "query": "SELECT Id, FirstName, LastName, Email, Description FROM Contact"}).encode(),
                             {**bearer, "Content-Type": "application/json"}))["id"]
    v2_direct_mbps, v2_size, v2_pages = stream_pages(
        f"http://{EMULATOR}/services/data/v59.0/jobs/query/{v2_job}/results", bearer.items())
    proxy = start_proxy()
    v2_body = envelope("getQueryJobResults", {"apiVersion": "59.0", "jobId": v2_job, "allPages": "true"})
    v2_url = f"http://{PROXY}/services/salesforcebulkv2_getQueryJobResults"
    # A first gzip read has the emulator compress each page once.
    stream(v2_url, body=v2_body, headers=gzip)
    _, v2_proxy_size, v2_seconds, v2_cpu = stream(v2_url, body=v2_body, hop=proxy)
    v2_proxy_mbps = v2_proxy_size / v2_seconds / 1e6
    v2_rss = peak_rss_mb(proxy)
    # A gzip caller: every page decoded, header lines dropped, the answer compressed again.
    _, v2_gz_size, v2_gz_seconds, v2_gz_cpu = stream(v2_url, body=v2_body, headers=gzip, hop=proxy)
    # One header line for the whole answer instead of one a page.
    header = len("\"Id\",\"FirstName\",\"LastName\",\"Email\",\"Description\"\n")
    assert v2_proxy_size == v2_size - (v2_pages - 1) * header, (v2_proxy_size, v2_size, v2_pages)
    compressed.update(v2_plain_mbps=v2_proxy_mbps, v2_gz_mbps=v2_proxy_size / v2_gz_seconds / 1e6,
                      v2_gz_size=v2_gz_size, v2_plain_cpu_ms_per_mb=v2_cpu * 1e3 / (v2_proxy_size / 1e6),
                      v2_gz_cpu_ms_per_mb=v2_gz_cpu * 1e3 / (v2_proxy_size / 1e6), v2_rss=peak_rss_mb(proxy))
    stop_all()
    all_pages = (v2_proxy_size, v2_pages, v2_direct_mbps, v2_proxy_mbps, v2_rss)

    slow = slow_salesforce(emulator_env, job_info, session, record)

    ready_ms = start_to_ready()
    print(f"stream: {size / 1e9:.2f} GB, direct {direct_mbps:.0f} MB/s, proxy {proxy_mbps:.0f} MB/s, proxy peak RSS {stream_rss:.1f} MB")
    print(f"allPages: {v2_proxy_size / 1e9:.2f} GB in {v2_pages} pages, page by page directly {v2_direct_mbps:.0f} MB/s, "
          f"one answer through the proxy {v2_proxy_mbps:.0f} MB/s, proxy peak RSS {v2_rss:.1f} MB")
    print(f"start to ready: {ready_ms:.1f} ms (median of 5)")
    report(rows, rss_after_load, size, direct_mbps, proxy_mbps, stream_rss, ready_ms, all_pages, compressed, slow)


def slow_salesforce(emulator_env, job_info, session, record):
    """SLOW_CALLERS callers at once against an org SLOW_LATENCY_MS away: directly, through nginx
    and through the proxy, ROUNDS times each; the proxy's peak RSS and the connections each hop
    holds open upstream halfway through a run."""
    slow_emulator = start([BIN, "emulator"], {**emulator_env, "SFBULK__EMULATOR__LISTEN": SLOW_EMULATOR,
                                              "SFBULK__EMULATOR__LATENCY_MS": str(SLOW_LATENCY_MS),
                                              "SFBULK__EMULATOR__GENERATED_CONTACTS": "0"},
                          log="emulator-slow.log")
    wait_ready(SLOW_EMULATOR)
    job = element(http("POST", f"http://{SLOW_EMULATOR}/services/async/34.0/job", job_info.encode(),
                       {**session, "Content-Type": "application/xml"}), "id")
    path = f"/services/async/34.0/job/{job}"
    _, worker = start_nginx("nginx-slow", SLOW_NGINX, upstream=SLOW_EMULATOR, keepalive=SLOW_CALLERS)
    # As docs/configuration.md says to: as many kept-alive connections as requests in flight.
    proxy = start_proxy(listen=SLOW_PROXY, upstream=f"http://{SLOW_EMULATOR}",
                        extra={"SFBULK__SALESFORCE__IDLE_CONNECTIONS_PER_ORIGIN": str(SLOW_CALLERS)})
    body = envelope("getJob", {"jobId": job}, api_url=f"http://{SLOW_EMULATOR}")
    http("POST", f"http://{SLOW_PROXY}/services/salesforcebulk_getJob", body.encode(), {"Content-Type": "text/xml"})
    port = SLOW_EMULATOR.rsplit(":", 1)[1]
    upstream = lambda: established(port)
    for _ in range(ROUNDS):
        record("slow direct", SLOW_CALLERS, wrk(f"http://{SLOW_EMULATOR}{path}", SLOW_CALLERS,
                                                headers=session.items(), duration=SLOW_DURATION, sample=upstream))
        record("slow nginx", SLOW_CALLERS, wrk(f"http://{SLOW_NGINX}{path}", SLOW_CALLERS, headers=session.items(),
                                               hop=worker, duration=SLOW_DURATION, sample=upstream))
        record("slow proxy", SLOW_CALLERS, wrk(f"http://{SLOW_PROXY}/services/salesforcebulk_getJob", SLOW_CALLERS,
                                               body=body, hop=proxy.pid, duration=SLOW_DURATION, sample=upstream),
               peak_rss_mb(proxy))
    rss = peak_rss_mb(proxy)
    stop_all()
    return {"rss": rss}


def report(rows, rss_after_load, size, direct_mbps, proxy_mbps, stream_rss, ready_ms, all_pages, compressed, slow):
    median = statistics.median
    runs = {}
    for r in rows:
        runs.setdefault((r["case"], r["connections"]), []).append(r)
    cases = list(dict.fromkeys(r["case"] for r in rows))
    lines = ["", f"Medians of {ROUNDS} runs per row; errors are summed, peak RSS is the largest.", "",
             "| case | conns | req/s | p50 ms | p99 ms | errors | CPU µs/request (hop; direct: the emulator) | of which user space | proxy peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for case in cases:
        for c in sorted({r["connections"] for r in rows if r["case"] == case}):
            rs = runs[(case, c)]
            rss = max((r["rss"] for r in rs if r["rss"]), default=None)
            cpu = median(r["cpu_us"] for r in rs) if rs[0]["cpu_us"] else None
            user = median(r["user_us"] for r in rs) if rs[0]["user_us"] is not None else None
            lines.append(f"| {case} | {c} | {median(r['rps'] for r in rs):.0f} | {median(r['p50'] for r in rs):.3f} | "
                         f"{median(r['p99'] for r in rs):.3f} | {sum(r['errors'] for r in rs)} | "
                         f"{f'{cpu:.1f}' if cpu else ''} | {f'{user:.1f}' if user is not None else ''} | "
                         f"{f'{rss:.1f}' if rss else ''} |")

    def ratios(case, baseline, c, key="rps", difference=False):
        """Per-round ratios (or differences) of `case` to `baseline`, which ran side by side."""
        pairs = zip(runs[(case, c)], runs[(baseline, c)])
        return sorted((a[key] - b[key]) if difference else (a[key] / b[key]) for a, b in pairs)

    def cell(values, digits):
        return f"{median(values):.{digits}f} ({values[0]:.{digits}f}–{values[-1]:.{digits}f})"

    lines += ["", "Ratios are taken within each round (the cases ran one after another), then the median, with the "
              "range over rounds in brackets.", "",
              "| conns | getJob proxy/nginx | CPU per request proxy/nginx | getJob proxy/direct | p99 added over direct (ms) | createJob proxy/direct |",
              "|---|---|---|---|---|---|"]
    for c in CONNECTIONS:
        lines.append(f"| {c} | {cell(ratios('proxy getJob', 'nginx', c), 2)} | {cell(ratios('proxy getJob', 'nginx', c, 'cpu_us'), 2)} | "
                     f"{cell(ratios('proxy getJob', 'direct', c), 2)} | "
                     f"{cell(ratios('proxy getJob', 'direct', c, 'p99', True), 3)} | "
                     f"{cell(ratios('proxy createJob', 'direct create', c), 2)} |")
    lines += ["", "What a hop costs on this machine, per round: nginx's own p99 added over direct, and the CPU per "
              "request of the proxy's front half alone (`GET /healthz`: hyper's server, request id, access line) "
              "and of the emulator (a hyper server answering from memory), each over nginx's whole hop.", "",
              "| conns | nginx p99 added over direct (ms) | CPU per request proxy healthz/nginx | CPU per request emulator/nginx | user-space CPU per request proxy getJob/nginx |",
              "|---|---|---|---|---|"]
    for c in CONNECTIONS:
        lines.append(f"| {c} | {cell(ratios('nginx', 'direct', c, 'p99', True), 3)} | "
                     f"{cell(ratios('proxy healthz', 'nginx', c, 'cpu_us'), 2)} | "
                     f"{cell(ratios('direct', 'nginx', c, 'cpu_us'), 2)} | "
                     f"{cell(ratios('proxy getJob', 'nginx', c, 'user_us'), 2)} |")
    lines += ["", "The redis registry backend beside the memory one (same build, same rounds; the redis case's CPU "
              "is the proxy's plus redis-server's, both on the hop's core):", "",
              "| conns | getJob req/s redis/memory | CPU per request redis/memory | p99 added by redis (ms) |",
              "|---|---|---|---|"]
    for c in CONNECTIONS:
        lines.append(f"| {c} | {cell(ratios('redis getJob', 'proxy getJob', c), 2)} | "
                     f"{cell(ratios('redis getJob', 'proxy getJob', c, 'cpu_us'), 2)} | "
                     f"{cell(ratios('redis getJob', 'proxy getJob', c, 'p99', True), 3)} |")
    if BASELINE:
        lines += ["", f"This build against the baseline (`{BASELINE}`), per round, then the median and range:", "",
                  "| conns | getJob req/s this/baseline | CPU per getJob request this/baseline | createJob req/s this/baseline | CPU per createJob request this/baseline |",
                  "|---|---|---|---|---|"]
        for c in CONNECTIONS:
            lines.append(f"| {c} | {cell(ratios('proxy getJob', 'baseline getJob', c), 2)} | "
                         f"{cell(ratios('proxy getJob', 'baseline getJob', c, 'cpu_us'), 2)} | "
                         f"{cell(ratios('proxy createJob', 'baseline createJob', c), 2)} | "
                         f"{cell(ratios('proxy createJob', 'baseline createJob', c, 'cpu_us'), 2)} |")
    lines += ["", "TLS to the upstream, per round: what HTTPS to the emulator adds to each hop's CPU per request "
              "(the same read over HTTPS minus over HTTP, same round), and the proxy's req/s over nginx's, both over "
              "TLS. Targets: the proxy's addition at most nginx's; stretch: req/s ≥ 1.0 × nginx.", "",
              "| conns | TLS adds, proxy (µs/request) | TLS adds, nginx (µs/request) | proxy's addition / nginx's | getJob req/s proxy/nginx over TLS | CPU per request proxy/nginx over TLS |",
              "|---|---|---|---|---|---|"]
    for c in CONNECTIONS:
        proxy_adds = ratios('proxy tls getJob', 'proxy getJob', c, 'cpu_us', True)
        nginx_adds = ratios('nginx tls', 'nginx', c, 'cpu_us', True)
        pairs = sorted(a / b for a, b in zip(
            [x['cpu_us'] - y['cpu_us'] for x, y in zip(runs[('proxy tls getJob', c)], runs[('proxy getJob', c)])],
            [x['cpu_us'] - y['cpu_us'] for x, y in zip(runs[('nginx tls', c)], runs[('nginx', c)])]))
        lines.append(f"| {c} | {cell(proxy_adds, 1)} | {cell(nginx_adds, 1)} | {cell(pairs, 2)} | "
                     f"{cell(ratios('proxy tls getJob', 'nginx tls', c), 2)} | "
                     f"{cell(ratios('proxy tls getJob', 'nginx tls', c, 'cpu_us'), 2)} |")
    lines += ["", "Issue 36's targets, TLS-upstream getJob, each the median of the per-round ratios with their range "
              f"over {ROUNDS} rounds (\"met\" needs at least 5): the proxy's requests/s ≥ 1.0 × nginx's at 32 and 256 "
              "connections, its CPU per request ≤ 1.0 × nginx's at 32.", "",
              "| target | median (range) | met |", "|---|---|---|"]
    for c, key, name, better in ((32, "rps", "req/s proxy/nginx at 32", max), (256, "rps", "req/s proxy/nginx at 256", max),
                                 (32, "cpu_us", "CPU per request proxy/nginx at 32", min)):
        if c not in CONNECTIONS:
            continue
        values = ratios('proxy tls getJob', 'nginx tls', c, key)
        met = (median(values) >= 1.0 if better is max else median(values) <= 1.0) and ROUNDS >= 5
        lines.append(f"| {name} | {cell(values, 2)} | {'met' if met else 'not met'} |")
    cz = compressed
    lines += ["", f"Compressed results: getBulkQueryResults of {cz['size'] / 1e9:.2f} GB of CSV "
              f"({cz['gz_size'] / 1e9:.2f} GB as gzip), and allPages of {all_pages[0] / 1e9:.2f} GB "
              f"({cz['v2_gz_size'] / 1e9:.2f} GB as gzip), each through the proxy with and without "
              "`Accept-Encoding: gzip`. MB/s are of result data (uncompressed), CPU is the proxy's per MB of it. "
              "The emulator serves each result from a body it compressed once.", "",
              "| case | caller | MB/s of data | proxy CPU ms per MB | proxy peak RSS MB |", "|---|---|---|---|---|",
              f"| getBulkQueryResults | no gzip (decoded as it streams) | {cz['plain_mbps']:.0f} | {cz['plain_cpu_ms_per_mb']:.2f} | {cz['plain_rss']:.1f} |",
              f"| getBulkQueryResults | gzip (relayed unchanged) | {cz['gz_mbps']:.0f} | {cz['gz_cpu_ms_per_mb']:.2f} | {cz['gz_rss']:.1f} |",
              f"| allPages | no gzip (pages decoded) | {cz['v2_plain_mbps']:.0f} | {cz['v2_plain_cpu_ms_per_mb']:.2f} | {cz['v2_rss']:.1f} |",
              f"| allPages | gzip (pages decoded, compressed again) | {cz['v2_gz_mbps']:.0f} | {cz['v2_gz_cpu_ms_per_mb']:.2f} | {cz['v2_rss']:.1f} |",
              "", f"gzip caller / no-gzip caller, getBulkQueryResults: {cz['gz_mbps'] / cz['plain_mbps']:.2f}× the MB/s "
              f"of data, {cz['gz_cpu_ms_per_mb'] / cz['plain_cpu_ms_per_mb']:.2f}× the CPU per MB (target: ≥ 3×, lower CPU)."]
    ideal = SLOW_CALLERS / (SLOW_LATENCY_MS / 1000)
    lines += ["", f"Slow Salesforce: {SLOW_CALLERS} callers at once, the org {SLOW_LATENCY_MS} ms away (ideal "
              f"{ideal:.0f} req/s), {SLOW_DURATION} s runs; connections open to the org sampled halfway. Targets: "
              "≥ 95% of the ideal, p99 added ≤ nginx's + 2 ms, peak RSS < 100 MB, no errors.", "",
              "| hop | req/s | of the ideal | p50 ms | p99 ms | p99 added over the latency (ms) | errors | upstream connections | CPU µs/request | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    slow_rss = f"{slow['rss']:.1f}"
    for case in ("slow direct", "slow nginx", "slow proxy"):
        rs = runs[(case, SLOW_CALLERS)]
        rps = median(r["rps"] for r in rs)
        p99 = median(r["p99"] for r in rs)
        cpu = median(r["cpu_us"] for r in rs) if rs[0]["cpu_us"] else None
        conns = median(r["sampled"] or 0 for r in rs)
        lines.append(f"| {case.split()[1]} | {rps:.0f} | {rps / ideal:.3f} | {median(r['p50'] for r in rs):.1f} | "
                     f"{p99:.1f} | {p99 - SLOW_LATENCY_MS:.1f} | {sum(r['errors'] for r in rs)} | {conns:.0f} | "
                     f"{f'{cpu:.1f}' if cpu else ''} | {slow_rss if case == 'slow proxy' else ''} |")
    lines += ["", f"Streaming {size / 1e9:.2f} GB (a caller without gzip; the proxy now asks for gzip and decodes): "
              f"direct {direct_mbps:.0f} MB/s, proxy {proxy_mbps:.0f} MB/s "
              f"({proxy_mbps / direct_mbps:.2f} of direct), proxy peak RSS {stream_rss:.1f} MB.",
              f"Bulk API 2.0 allPages, {all_pages[0] / 1e9:.2f} GB in {all_pages[1]} pages: page by page directly "
              f"{all_pages[2]:.0f} MB/s, one answer through the proxy {all_pages[3]:.0f} MB/s "
              f"({all_pages[3] / all_pages[2]:.2f} of direct), proxy peak RSS {all_pages[4]:.1f} MB.",
              f"Proxy peak RSS over all load runs: {rss_after_load:.1f} MB. Start to ready: {ready_ms:.1f} ms (median of 5).",
              f"Machine: {os.cpu_count()} cores; hop and upstream on core {HOP_CORE}, load generator on core {LOAD_CORE} "
              f"(streaming: proxy on core {HOP_CORE}, emulator and curl on core {LOAD_CORE}); "
              f"{ROUNDS} rounds of {DURATION} s runs.",
              f"Hops: nginx {nginx_version()} with 1 worker and upstream keepalive {POOL}, the proxy with "
              f"salesforce.idle_connections_per_origin = {POOL} (both at least the most connections of the run); each "
              f"writes a line per request to a file in {work} (nginx's access_log without buffer=, the proxy's log at "
              "info); the proxy's org-budget guard on at its defaults (governor.enabled = true)."]
    text = "\n".join(lines)
    print(text)
    out = os.path.join(ROOT, "target", "bench-report.md")
    with open(out, "w") as f:
        f.write(text + "\n")
    print(f"\n(report written to {out}; logs in {work})")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
