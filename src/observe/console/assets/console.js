// The console: reads /api/v1/status every few seconds and draws it. Every value from callers
// or Salesforce is put in the page as text (textContent), never as markup.
"use strict";

const REFRESH_MS = 3000;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function ago(ms, now) {
  if (!ms) return "–";
  const s = Math.round((now - ms) / 1000);
  if (s < 0) return "in " + span(-s);
  return span(s) + " ago";
}

function span(s) {
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return Math.round(s / 86400) + " d";
}

function number(n, digits) {
  return n === null || n === undefined ? "–" : Number(n).toFixed(digits);
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
  const empty = tbody.closest("section").querySelector(".empty");
  if (empty) empty.hidden = rows.length > 0;
}

function row(cells, className) {
  const tr = el("tr", undefined, className);
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function line(svg, values, max, className) {
  if (values.length === 0) return;
  // One sample is a level line across the chart.
  if (values.length === 1) values = [values[0], values[0]];
  const points = values.map((v, i) => {
    const x = (i / (values.length - 1)) * 300;
    const y = 78 - (max > 0 ? (v / max) * 74 : 0);
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  const path = document.createElementNS(SVG, "polyline");
  path.setAttribute("points", points.join(" "));
  path.setAttribute("class", className);
  svg.append(path);
}

function chart(id, series) {
  const svg = document.getElementById(id);
  svg.replaceChildren();
  const max = Math.max(0, ...series.flatMap((s) => s.values));
  for (const s of series) line(svg, s.values, max, s.className);
}

function drawTraffic(t) {
  const samples = t.samples;
  const seconds = samples.reduce((a, s) => a + s.seconds, 0);
  const requests = samples.reduce((a, s) => a + s.proxy.requests + s.salesforce.requests, 0);
  const errors = samples.reduce((a, s) => a + s.proxy.errors + s.salesforce.errors, 0);
  document.getElementById("rps").textContent = seconds > 0 ? (requests / seconds).toFixed(1) : "–";
  document.getElementById("error-ratio").textContent =
    requests > 0 ? ((100 * errors) / requests).toFixed(1) + " %" : "–";
  document.getElementById("p50").textContent = t.p50_ms === null ? "–" : number(t.p50_ms, 1) + " ms";
  document.getElementById("p99").textContent = t.p99_ms === null ? "–" : number(t.p99_ms, 1) + " ms";
  document.getElementById("in-flight").textContent = t.in_flight;
  document.getElementById("shed").textContent = t.shed_total;
  const rate = (s, source) => (s.seconds > 0 ? s[source].requests / s.seconds : 0);
  chart("chart-requests", [
    { values: samples.map((s) => rate(s, "proxy")), className: "proxy" },
    { values: samples.map((s) => rate(s, "salesforce")), className: "salesforce" },
  ]);
  chart("chart-errors", [
    {
      values: samples.map((s) => {
        const n = s.proxy.requests + s.salesforce.requests;
        return n > 0 ? (s.proxy.errors + s.salesforce.errors) / n : 0;
      }),
      className: "errors",
    },
  ]);
  chart("chart-latency", [
    { values: samples.map((s) => s.p50_ms || 0), className: "p50" },
    { values: samples.map((s) => s.p99_ms || 0), className: "p99" },
  ]);
  fill(
    document.querySelector("#operations tbody"),
    t.operations.map((o) =>
      row([o.api, o.operation, number(o.per_second, 2), o.requests, o.errors], o.errors > 0 ? "failed" : "")
    )
  );
}

function drawJobs(jobs, now) {
  fill(
    document.querySelector("#jobs tbody"),
    jobs.map((j) => {
      const b = j.batches;
      const failed = el("td");
      for (const f of j.failed_batches) {
        const item = el("div", f.id, "failed-batch");
        if (f.message) item.append(el("span", " " + f.message, "muted"));
        failed.append(item);
      }
      const state = el("td", j.state || "–", "state");
      return row(
        [
          el("td", j.id, "id"),
          j.api,
          j.object || "–",
          j.operation || "–",
          state,
          b ? [b.queued, b.in_progress, b.completed, b.failed].join(" / ") : "–",
          number(j.records_processed, 0) + " / " + number(j.records_failed, 0),
          failed,
          ago(j.last_seen_ms, now),
          j.via || "own token",
        ],
        j.failed ? "job failed" : "job"
      );
    })
  );
}

function drawLoads(loads) {
  fill(
    document.querySelector("#loads tbody"),
    loads.map((l) =>
      row(
        [
          el("td", l.id, "id"),
          l.object,
          l.operation,
          el("td", l.state, "state"),
          number(l.rows_done, 0) + " / " + number(l.rows_total, 0),
          number(l.rows_failed, 0),
          l.jobs,
          l.waiting || "–",
        ],
        l.state === "Failed" || l.state === "Aborted" ? "load failed" : "load"
      )
    )
  );
}

// An export's rows and pages are counted when its answer ends.
function drawExports(exports, now) {
  fill(
    document.querySelector("#exports tbody"),
    exports.map((e) =>
      row(
        [
          el("td", e.job_id, "id"),
          e.api,
          el("td", e.state, "state"),
          number(e.rows, 0),
          number(e.pages, 0),
          ago(e.created_ms, now),
        ],
        ["Failed", "Aborted", "CutOff"].includes(e.state) ? "export failed" : "export"
      )
    )
  );
}

function drawTokens(tokens, now) {
  fill(
    document.querySelector("#tokens tbody"),
    tokens.map((t) =>
      row(
        [
          el("td", t.path, "path"),
          t.instance,
          span(Math.max(0, Math.round((now - t.stored_at_ms) / 1000))),
          ago(t.next_refresh_ms, now),
          t.refreshes,
          t.last_refresh ? t.last_refresh.result + ", " + ago(t.last_refresh.at_ms, now) : "–",
          ago(t.last_used_ms, now),
        ],
        t.last_refresh && t.last_refresh.result !== "ok" ? "token failed" : "token"
      )
    )
  );
}

// Each org's API usage as Salesforce reported it, and beside it the org-budget guard's figures
// (an org the guard counts may have no report yet: 1.0 answers may carry none).
function drawLimits(limits) {
  const gauges = document.getElementById("gauges");
  gauges.replaceChildren(
    ...limits.map((l) => {
      const reported = l.used !== null && l.limit !== null;
      const share = reported && l.limit > 0 ? Math.min(1, l.used / l.limit) : 0;
      const gauge = el("div", undefined, "gauge" + (share >= 0.9 ? " high" : ""));
      gauge.append(el("span", l.org, "org"));
      const bar = el("div", undefined, "bar");
      const used = el("div", undefined, "used");
      used.style.width = (share * 100).toFixed(1) + "%";
      bar.append(used);
      gauge.append(bar);
      const usage = reported ? l.used + " / " + l.limit + " (" + (share * 100).toFixed(1) + " %)" : "not reported";
      gauge.append(el("span", usage, "usage"));
      if (l.guard) gauge.append(drawGuard(l.guard));
      return gauge;
    })
  );
  document.querySelector("#limits .empty").hidden = limits.length > 0;
}

function drawGuard(g) {
  const figure = (label, value, className, alert) => {
    const item = el("div", undefined, className + (alert ? " alert" : ""));
    item.append(el("span", label, "label"), el("span", value, "figure"));
    return item;
  };
  // At api_ceiling_percent 100 the ceiling is the largest integer: there is none.
  const ceiling =
    g.api_ceiling === null ? "–" : g.api_ceiling >= Number.MAX_SAFE_INTEGER ? "none" : number(g.api_ceiling, 0);
  const atCeiling = g.api_ceiling !== null && g.api_used !== null && g.api_used >= g.api_ceiling;
  const refused = Object.entries(g.refusals).filter(([, n]) => n > 0);
  const guard = el("div", undefined, "guard");
  guard.append(
    figure("guard: API requests / ceiling", number(g.api_used, 0) + " / " + ceiling, "guard-api", atCeiling),
    figure("batches (24 h)", number(g.batches_used, 0), "guard-batches"),
    figure("long-running in flight", g.in_flight, "guard-in-flight"),
    figure(
      "refused",
      refused.length > 0 ? refused.map(([reason, n]) => reason + " " + n).join(", ") : "none",
      "guard-refusals",
      refused.length > 0
    )
  );
  return guard;
}

async function refresh() {
  const updated = document.getElementById("updated");
  try {
    const answer = await fetch("/api/v1/status", { cache: "no-store", credentials: "same-origin" });
    if (!answer.ok) throw new Error("status " + answer.status);
    const status = await answer.json();
    const now = status.replica.now_ms;
    document.getElementById("replica").textContent =
      "sfbulk-proxy " + status.replica.version + ", up " + span(Math.round((now - status.replica.started_ms) / 1000)) +
      ". " + status.replica.note + ".";
    drawTraffic(status.traffic);
    drawJobs(status.jobs, now);
    drawLoads(status.loads);
    drawExports(status.exports, now);
    drawTokens(status.tokens, now);
    drawLimits(status.limits);
    updated.textContent = "updated " + new Date(now).toISOString();
    updated.className = "muted";
    document.body.dataset.loaded = "true";
  } catch (error) {
    updated.textContent = "could not read /api/v1/status: " + error.message;
    updated.className = "alert";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
