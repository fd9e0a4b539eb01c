"""The whole-load benchmark behind BENCHMARKS.md's "Whole loads" section. Run it through
benches/loads.sh, which installs what it needs and builds the release binary first.

One CSV of Contacts goes into the emulator (the org) by three ways: through the proxy's
`salesforcebulkv2_load` (curl streams the file in, `wait=true`, then `getLoadResults` if the
answer came before the end), by simple-salesforce's `bulk2.Contact.insert` followed by each job's
result files, and (for the one-job file) by jsforce's `bulk2.loadAndWaitForResults`. For each:
the wall time from the first byte sent to the last result row received, the peak resident memory
of the proxy and of each client process, and the API calls the org counted.

The emulator serves HTTPS (simple-salesforce speaks nothing else), charges
`emulator.ingest_us_per_record` for each record of a closed job, runs jobs in parallel, and is
started afresh for every case, alone on core 1; the proxy and its curl, or the client library, have
core 0. Helpers (processes, TLS files, readiness) come from e2e.py."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e as bench  # noqa: E402

ROOT = bench.ROOT
EMULATOR = "127.0.0.1:18301"
PROXY = "127.0.0.1:18300"
CLIENT_CORE, ORG_CORE = "0", "1"
# The org's processing cost: 50 us a record is 20,000 records a second for each job (a real
# org is slower still; a faster one would favour clients that poll often).
INGEST_US_PER_RECORD = int(os.environ.get("INGEST_US_PER_RECORD", "50"))
# The files: about 200 bytes a row, so 5,000,000 rows is 1 GB and 450,000 rows 90 MB.
BIG_ROWS = int(os.environ.get("BIG_ROWS", "5000000"))
ONE_JOB_ROWS = int(os.environ.get("ONE_JOB_ROWS", "450000"))
ROW_BYTES = 200
# simple-salesforce's `insert` runs its jobs one at a time unless told otherwise (concurrency=1,
# its default); 10 is its most.
SIMPLE_SALESFORCE_CONCURRENCY = [int(c) for c in os.environ.get("SIMPLE_SALESFORCE_CONCURRENCY", "1 10").split()]
SIMPLE_SALESFORCE = "simple-salesforce==1.12.10"
JSFORCE = "jsforce@3.10.16"
CLIENTS = os.path.join(ROOT, "target", "bench-clients")
API_LIMIT = 1_000_000_000

work = bench.work


def python_with_simple_salesforce():
    venv = os.path.join(CLIENTS, "simple-salesforce-venv")
    python = os.path.join(venv, "bin", "python")
    installed = os.path.exists(python) and subprocess.run(
        [python, "-c", "import simple_salesforce"], capture_output=True).returncode == 0
    if not installed:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        SIMPLE_SALESFORCE], check=True)
    return python


def node_modules_with_jsforce():
    prefix = os.path.join(CLIENTS, "jsforce3")
    package = os.path.join(prefix, "node_modules", "jsforce", "package.json")
    version = JSFORCE.rsplit("@", 1)[1]
    if not os.path.exists(package) or json.load(open(package))["version"] != version:
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", prefix, JSFORCE],
                       check=True)
    return os.path.join(prefix, "node_modules")


def make_csv(path, rows):
    """`rows` Contacts of about ROW_BYTES bytes each: every tenth Description quoted, holding the
    delimiter and a doubled quote; one row in a hundred holding the emulator's failure marker, so
    results mix outcomes."""
    if os.path.exists(path) and os.path.getsize(path) > 0:
        return
    filler = "x" * ROW_BYTES
    with open(path + ".part", "w", newline="") as f:
        f.write("FirstName,LastName,Email,Phone,Title,Description\n")
        lines = []
        for i in range(rows):
            last = "SFBULK_FAIL" if i % 100 == 7 else f"Lovelace{i}"
            start = f"First{i},{last},first{i}@example.com,+1 555 {i % 10_000_000:07d},Engineer,"
            if i % 10 == 3:
                description = '"said ""hello, world"" ' + filler[: ROW_BYTES - len(start) - 26] + '"'
            else:
                description = filler[: ROW_BYTES - len(start) - 1]
            lines.append(start + description + "\n")
            if len(lines) == 10_000:
                f.write("".join(lines))
                lines.clear()
        f.write("".join(lines))
    os.rename(path + ".part", path)


def start_emulator(ca, cert, key):
    env = {
        "SFBULK__EMULATOR__LISTEN": EMULATOR,
        "SFBULK__EMULATOR__TLS_CERT_FILE": cert,
        "SFBULK__EMULATOR__TLS_KEY_FILE": key,
        "SFBULK__EMULATOR__ACCESS_TOKEN": bench.TOKEN,
        "SFBULK__EMULATOR__SESSION_TTL_SECS": "86400",
        "SFBULK__EMULATOR__BATCH_PROCESSING_MS": "0",
        "SFBULK__EMULATOR__GENERATED_CONTACTS": "0",
        "SFBULK__EMULATOR__INGEST_US_PER_RECORD": str(INGEST_US_PER_RECORD),
        # Counted so that the calls each way made can be read back (Sforce-Limit-Info).
        "SFBULK__EMULATOR__API_LIMIT": str(API_LIMIT),
        "SFBULK__LOG__LEVEL": "warn",
    }
    emulator = bench.start([bench.BIN, "emulator"], env, core=ORG_CORE, log="emulator.log")
    bench.wait_ready_tls(EMULATOR, ca)
    return emulator


def api_calls(ca):
    """Bulk API calls the emulator counted, not counting this read of the count."""
    import ssl
    request = urllib.request.Request(f"https://{EMULATOR}/services/data/v59.0/jobs/ingest/750000000000000AAA",
                                     headers={"Authorization": f"Bearer {bench.TOKEN}"})
    try:
        response = urllib.request.urlopen(request, context=ssl.create_default_context(cafile=ca))
        headers = response.headers
    except urllib.error.HTTPError as error:
        headers = error.headers
    used = headers["Sforce-Limit-Info"].split("=", 1)[1].split("/")[0]
    return int(used) - 1


def run_client(args, env=None):
    """Runs a client process on the client core; its exit code, peak RSS in MB and standard output."""
    out_path = os.path.join(work, "client.out")
    with open(out_path, "wb") as out, open(os.path.join(work, "client.log"), "ab") as log:
        process = subprocess.Popen(["taskset", "-c", CLIENT_CORE] + args, env={**os.environ, **(env or {})},
                                   stdout=out, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    with open(out_path) as out:
        return process.returncode, usage.ru_maxrss / 1024, out.read()


def connection_query():
    fields = {
        "apiVersion": "59.0",
        "accessToken": bench.TOKEN,
        "apiUrl": f"https://{EMULATOR}",
        "refreshToken": "sfbulk-demo-refresh-token",
        "clientId": "sfbulk-demo-client-id",
        "clientSecret": "sfbulk-demo-client-secret",
        "intervalTime": "86400000",
        "registryPath": "connectors/SalesforceBulk",
    }
    return fields


def count_results(path):
    """Rows of a merged results file, and those of them failed (no field here holds a line break)."""
    rows = failed = 0
    with open(path, "rb") as f:
        next(f)
        for line in f:
            rows += 1
            if line.split(b",", 2)[1] == b"failed":
                failed += 1
    return rows, failed


def through_proxy(ca, csv_path):
    fields = connection_query()
    proxy = bench.start_proxy(listen=PROXY, upstream=f"https://{EMULATOR}",
                              extra={"SFBULK__SALESFORCE__CA_FILE": ca, "SFBULK__LOAD__SPOOL_DIR": work})
    query = urllib.parse.urlencode({**fields, "object": "Contact", "operation": "insert", "wait": "true"})
    results = os.path.join(work, "proxy-results.csv")
    curl_rss = []
    started = time.perf_counter()
    code, rss, status = run_client(["curl", "-sS", "-X", "POST", "-T", csv_path, "-H", "Content-Type: text/csv",
                                    "-o", results, "-w", "%{http_code}",
                                    f"http://{PROXY}/services/salesforcebulkv2_load?{query}"])
    curl_rss.append(rss)
    if code != 0 or status not in ("200", "202"):
        sys.exit(f"the load through the proxy answered {status}: {open(results).read()[:2000]}")
    if status == "202":
        load_id = json.load(open(results))["loadId"]
        envelope = lambda op: bench.envelope(op, {**fields, "loadId": load_id}, api_url=fields["apiUrl"])
        while True:
            time.sleep(1)
            answer = json.loads(bench.http("POST", f"http://{PROXY}/services/salesforcebulkv2_getLoad",
                                           envelope("getLoad").encode(), {"Content-Type": "text/xml"}))
            if answer["state"] not in ("Uploading", "InProgress"):
                break
        body = os.path.join(work, "getLoadResults.xml")
        with open(body, "w") as f:
            f.write(envelope("getLoadResults"))
        code, rss, status = run_client(["curl", "-sS", "-d", f"@{body}", "-o", results, "-w", "%{http_code}",
                                        f"http://{PROXY}/services/salesforcebulkv2_getLoadResults"])
        curl_rss.append(rss)
        if code != 0 or status != "200":
            sys.exit(f"getLoadResults answered {status}")
    wall = time.perf_counter() - started
    proxy_rss = bench.peak_rss_mb(proxy)
    rows, failed = count_results(results)
    os.remove(results)
    proxy.terminate()
    proxy.wait()
    bench.processes.remove(proxy)
    return {"wall": wall, "proxy_rss": proxy_rss, "client_rss": max(curl_rss), "rows": rows, "failed": failed,
            "answered": status}


def by_simple_salesforce(ca, csv_path, concurrency):
    python = python_with_simple_salesforce()
    results = os.path.join(work, "simple-salesforce-results")
    os.makedirs(results, exist_ok=True)
    script = os.path.join(ROOT, "benches", "clients", "simple_salesforce_load.py")
    started = time.perf_counter()
    code, rss, out = run_client([python, script, csv_path, results, str(concurrency)],
                                {"SFBULK_INSTANCE": f"https://{EMULATOR}", "SFBULK_SESSION": bench.TOKEN,
                                 "REQUESTS_CA_BUNDLE": ca})
    wall = time.perf_counter() - started
    if code != 0:
        sys.exit(f"simple-salesforce failed ({code}); see {work}/client.log")
    counts = json.loads(out.strip().splitlines()[-1])
    for name in os.listdir(results):
        os.remove(os.path.join(results, name))
    return {"wall": wall, "client_rss": rss, "rows": counts["processed"], "failed": counts["failed"],
            "jobs": counts["jobs"]}


def by_jsforce(ca, csv_path):
    modules = node_modules_with_jsforce()
    script = os.path.join(ROOT, "benches", "clients", "jsforce_load.js")
    started = time.perf_counter()
    code, rss, out = run_client(["node", script, csv_path],
                                {"NODE_PATH": modules, "SFBULK_INSTANCE": f"https://{EMULATOR}",
                                 "SFBULK_SESSION": bench.TOKEN, "NODE_EXTRA_CA_CERTS": ca})
    wall = time.perf_counter() - started
    if code != 0:
        sys.exit(f"jsforce failed ({code}); see {work}/client.log")
    counts = json.loads(out.strip().splitlines()[-1])
    return {"wall": wall, "client_rss": rss, "rows": counts["succeeded"] + counts["failed"] + counts["unprocessed"],
            "failed": counts["failed"]}


def case(ca, cert, key, run):
    """One way of loading, against an org of its own; what it measured and the calls the org counted."""
    emulator = start_emulator(ca, cert, key)
    try:
        result = run()
        result["calls"] = api_calls(ca)
        result["org_rss"] = bench.peak_rss_mb(emulator)
        return result
    finally:
        emulator.terminate()
        emulator.wait()
        bench.processes.remove(emulator)


def check_ports_free():
    for address in (EMULATOR, PROXY):
        host, port = address.rsplit(":", 1)
        with socket.socket() as s:
            try:
                s.bind((host, int(port)))
            except OSError:
                sys.exit(f"{address} is in use: stop whatever listens there (a previous run?) and start again")


def main():
    check_ports_free()
    ca, cert, key = bench.make_tls_files()
    python_with_simple_salesforce()
    node_modules_with_jsforce()
    data = os.path.join(ROOT, "target", "bench-loads")
    os.makedirs(data, exist_ok=True)
    big = os.path.join(data, f"contacts-{BIG_ROWS}.csv")
    one_job = os.path.join(data, f"contacts-{ONE_JOB_ROWS}.csv")
    make_csv(big, BIG_ROWS)
    make_csv(one_job, ONE_JOB_ROWS)
    rows = []

    def record(file, rows_in, way, result):
        rows.append({"file": file, "way": way, **result})
        print(f"{file:>8} {way:<32} {result['wall']:8.1f} s  calls {result['calls']:>5}  "
              f"proxy {result.get('proxy_rss', float('nan')):7.1f} MB  client {result['client_rss']:8.1f} MB  "
              f"org {result['org_rss']:8.1f} MB  rows {result['rows']}/{rows_in} failed {result['failed']}",
              flush=True)
        if result["rows"] != rows_in:
            sys.exit(f"{way} accounted for {result['rows']} rows of {rows_in}")

    for label, path, n in [(f"{os.path.getsize(big) / 1e6:.0f} MB", big, BIG_ROWS)]:
        record(label, n, "proxy (curl, wait=true)", case(ca, cert, key, lambda: through_proxy(ca, path)))
        for c in SIMPLE_SALESFORCE_CONCURRENCY:
            record(label, n, f"simple-salesforce concurrency={c}",
                   case(ca, cert, key, lambda: by_simple_salesforce(ca, path, c)))
    label = f"{os.path.getsize(one_job) / 1e6:.0f} MB"
    record(label, ONE_JOB_ROWS, "proxy (curl, wait=true)", case(ca, cert, key, lambda: through_proxy(ca, one_job)))
    record(label, ONE_JOB_ROWS, "jsforce loadAndWaitForResults", case(ca, cert, key, lambda: by_jsforce(ca, one_job)))
    record(label, ONE_JOB_ROWS, "simple-salesforce concurrency=1",
           case(ca, cert, key, lambda: by_simple_salesforce(ca, one_job, 1)))
    report(rows)


def report(rows):
    lines = ["| file | way | wall time to the last result row | API calls | proxy peak RSS | client peak RSS "
             "| rows (failed) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        proxy = f"{r['proxy_rss']:.1f} MB" if "proxy_rss" in r else ""
        lines.append(f"| {r['file']} | {r['way']} | {r['wall']:.1f} s | {r['calls']} | {proxy} "
                     f"| {r['client_rss']:.1f} MB | {r['rows']} ({r['failed']}) |")
    for file in dict.fromkeys(r["file"] for r in rows):
        ours = next(r for r in rows if r["file"] == file and r["way"].startswith("proxy"))
        for other in (r for r in rows if r["file"] == file and r is not ours):
            lines.append(f"\n{file}: proxy / {other['way']}: wall time {ours['wall'] / other['wall']:.2f} ×, "
                         f"API calls {ours['calls']} vs {other['calls']}")
    lines.append(f"\nOrg: the emulator over HTTPS, {INGEST_US_PER_RECORD} us a record, jobs in parallel, alone on "
                 f"core {ORG_CORE}; the proxy and curl, or the client, on core {CLIENT_CORE}. "
                 f"{SIMPLE_SALESFORCE}, {JSFORCE} (Node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}), "
                 f"{subprocess.run(['curl', '--version'], capture_output=True, text=True).stdout.split()[1]} curl.")
    text = "\n".join(lines)
    print(text)
    out = os.path.join(ROOT, "target", "bench-loads-report.md")
    with open(out, "w") as f:
        f.write(text + "\n")
    print(f"\n(report written to {out}; logs in {work})")


if __name__ == "__main__":
    try:
        main()
    finally:
        bench.stop_all()
