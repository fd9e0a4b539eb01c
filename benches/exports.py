"""The whole-export benchmark behind BENCHMARKS.md's "Whole exports" section. Run it through
benches/exports.sh, which installs what it needs and builds the release binary first.

One Bulk API 2.0 query result of PAGES pages of PAGE_ROWS rows (`emulator.query_page_rows`), from
an org LATENCY_MS away (`emulator.latency_ms`, on every call), read three ways, each timed from the
query job's creation to its last row:

- directly, one page after another, each page's `Sforce-Locator` naming the next: what every
  client library does (one kept-alive connection, job polled every 200 ms until complete);
- through the proxy's `getQueryJobResults` with `allPages`, pages one after another (the job made
  and polled through the proxy too): `allPages` as it was before pages were listed;
- through the proxy's `salesforcebulkv2_query`, one call, the pages listed by `resultPages` and
  read `salesforce.parallel_pages` (4, the default) at once.

The emulator (plain HTTP) and the proxy share core 1; curl and this script have core 0. The rows
received are counted; the proxy's peak resident memory is read from /proc at the end."""

import http.client
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e as bench  # noqa: E402

EMULATOR = "127.0.0.1:18311"
PROXY = "127.0.0.1:18310"
CLIENT_CORE, SERVER_CORE = "0", "1"
PAGES = int(os.environ.get("PAGES", "200"))
PAGE_ROWS = int(os.environ.get("PAGE_ROWS", "500"))
LATENCY_MS = int(os.environ.get("LATENCY_MS", "200"))
VERSION = "59.0"
QUERY = "SELECT Id, FirstName, LastName, Email FROM Contact"
POLL_SECONDS = 0.2

work = bench.work


def start_emulator():
    env = {
        "SFBULK__EMULATOR__LISTEN": EMULATOR,
        "SFBULK__EMULATOR__ACCESS_TOKEN": bench.TOKEN,
        "SFBULK__EMULATOR__SESSION_TTL_SECS": "86400",
        "SFBULK__EMULATOR__GENERATED_CONTACTS": str(PAGES * PAGE_ROWS),
        "SFBULK__EMULATOR__QUERY_PAGE_ROWS": str(PAGE_ROWS),
        "SFBULK__EMULATOR__LATENCY_MS": str(LATENCY_MS),
        "SFBULK__LOG__LEVEL": "warn",
    }
    emulator = bench.start([bench.BIN, "emulator"], env, core=SERVER_CORE, log="emulator.log")
    bench.wait_ready(EMULATOR)
    return emulator


def direct():
    """Rows and seconds reading the pages one after another, straight from the org."""
    started = time.perf_counter()
    host, port = EMULATOR.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port))
    headers = {"Authorization": f"Bearer {bench.TOKEN}", "Content-Type": "application/json"}
    base = f"/services/data/v{VERSION}/jobs/query"

    def ask(method, path, body=None):
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer, answer.read()

    answer, body = ask("POST", base, json.dumps({"operation": "query", "query": QUERY}))
    job = json.loads(body)["id"]
    while True:
        _, body = ask("GET", f"{base}/{job}")
        if json.loads(body)["state"] == "JobComplete":
            break
        time.sleep(POLL_SECONDS)
    rows, locator = 0, None
    while True:
        path = f"{base}/{job}/results" + (f"?locator={locator}" if locator else "")
        answer, body = ask("GET", path)
        rows += body.count(b"\n") - 1
        locator = answer.getheader("Sforce-Locator")
        if locator in (None, "null"):
            break
    return rows, time.perf_counter() - started


def curl(operation, fields, out):
    """Status of a curl POST of `operation`'s envelope to the proxy, its answer in `out`."""
    body = os.path.join(work, f"{operation}.xml")
    with open(body, "w") as f:
        f.write(bench.envelope(operation, {"apiVersion": VERSION, **fields}, api_url=f"http://{EMULATOR}"))
    args = ["taskset", "-c", CLIENT_CORE, "curl", "-sS", "-o", out, "-w", "%{http_code}",
            "-H", "Content-Type: text/xml", "--data-binary", f"@{body}",
            f"http://{PROXY}/services/salesforcebulkv2_{operation}"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def rows_in(path):
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1


def all_pages_one_after_another():
    """Rows and seconds through the proxy: the job made and polled, then allPages with the pages'
    own size as maxRecords, so they are read one after another by their locators."""
    started = time.perf_counter()
    out = os.path.join(work, "answer")
    assert curl("createQueryJob", {"query": QUERY}, out) == "200"
    job = json.load(open(out))["id"]
    while True:
        assert curl("getQueryJobInfo", {"jobId": job}, out) == "200"
        if json.load(open(out))["state"] == "JobComplete":
            break
        time.sleep(POLL_SECONDS)
    status = curl("getQueryJobResults", {"jobId": job, "allPages": "true", "maxRecords": str(PAGE_ROWS)}, out)
    assert status == "200", status
    return rows_in(out), time.perf_counter() - started


def export():
    """Rows and seconds of one salesforcebulkv2_query."""
    started = time.perf_counter()
    out = os.path.join(work, "answer")
    status = curl("query", {"query": QUERY}, out)
    assert status == "200", (status, open(out).read()[:500])
    return rows_in(out), time.perf_counter() - started


def main():
    emulator = start_emulator()
    proxy = bench.start([bench.BIN, "serve"],
                        bench.proxy_env(listen=PROXY, upstream=f"http://{EMULATOR}",
                                        extra={"SFBULK__LOAD__POLL_MIN_MS": "200",
                                               "SFBULK__LOAD__POLL_MAX_MS": "200"}),
                        core=SERVER_CORE, log="proxy.log")
    bench.wait_ready(PROXY)
    expected = PAGES * PAGE_ROWS
    results = []
    try:
        for way, run in [("directly, one page after another", direct),
                         ("proxy allPages, one after another", all_pages_one_after_another),
                         ("proxy salesforcebulkv2_query, parallel", export)]:
            rows, seconds = run()
            if rows != expected:
                sys.exit(f"{way}: {rows} rows of {expected}")
            results.append((way, rows, seconds))
            print(f"{way:<40} {seconds:7.2f} s  {rows / seconds:9.0f} rows/s", flush=True)
        proxy_rss = bench.peak_rss_mb(proxy)
    finally:
        bench.stop_all()
    baseline = results[0][1] / results[0][2]
    print(f"\n{PAGES} pages of {PAGE_ROWS} rows, the org {LATENCY_MS} ms away (every call), "
          f"salesforce.parallel_pages 4; emulator and proxy on core {SERVER_CORE}, clients on core {CLIENT_CORE}.")
    print("| way | seconds | rows/s | × the direct sequential read |")
    print("|---|---|---|---|")
    for way, rows, seconds in results:
        print(f"| {way} | {seconds:.2f} | {rows / seconds:,.0f} | {rows / seconds / baseline:.2f} |")
    print(f"\nProxy peak RSS: {proxy_rss:.1f} MB")
    _ = emulator


if __name__ == "__main__":
    main()
