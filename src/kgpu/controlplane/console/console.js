// kgpu console: the overview page (nodes, pools, services with live traffic) and the page router.
// The overview's rates (requests/s, p99, errors) come from the difference between two successive
// /metrics reads; the other pages (pages.js) chart the control plane's 15-minute history.
"use strict";

let previousMetrics = null; // {at: ms, series: Map} of the last /metrics read

// Prometheus text format -> Map of "name{labels}" -> {name, labels, value}.
function parseMetrics(text) {
  const series = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    series.set(match[1] + "{" + (match[2] || "") + "}", { name: match[1], labels, value: parseFloat(match[3]) });
  }
  return series;
}

// Increase of each matching series since the previous read (a counter reset counts from zero).
function increases(now, before, name, service) {
  const out = [];
  for (const [key, s] of now.series) {
    if (s.name !== name || s.labels.service !== service) continue;
    const old = before.series.get(key);
    const delta = old && s.value >= old.value ? s.value - old.value : s.value;
    out.push({ labels: s.labels, delta });
  }
  return out;
}

// Like Prometheus histogram_quantile: linear interpolation inside the bucket holding the quantile.
function quantile(q, buckets) {
  const sorted = buckets
    .map((b) => ({ le: b.labels.le === "+Inf" ? Infinity : parseFloat(b.labels.le), count: b.delta }))
    .sort((a, b) => a.le - b.le);
  const total = sorted.length ? sorted[sorted.length - 1].count : 0;
  if (!total) return null;
  const rank = q * total;
  let lowerLe = 0;
  let lowerCount = 0;
  for (const b of sorted) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lowerLe;
      return lowerLe + ((b.le - lowerLe) * (rank - lowerCount)) / Math.max(b.count - lowerCount, 1e-9);
    }
    lowerLe = b.le;
    lowerCount = b.count;
  }
  return null;
}

function traffic(now, service) {
  if (!previousMetrics || !now) return null;
  const seconds = (now.at - previousMetrics.at) / 1000;
  if (seconds <= 0) return null;
  const codes = increases(now, previousMetrics, "kgpu_gateway_requests_total", service);
  const requests = codes.reduce((sum, c) => sum + c.delta, 0);
  const errors = codes.filter((c) => Number(c.labels.code) >= 500).reduce((sum, c) => sum + c.delta, 0);
  const buckets = increases(now, previousMetrics, "kgpu_gateway_request_duration_seconds_bucket", service);
  return { rps: requests / seconds, errors, requests, p99: quantile(0.99, buckets) };
}

function totalRequests(now, service) {
  if (!now) return 0;
  let total = 0;
  for (const s of now.series.values()) {
    if (s.name === "kgpu_gateway_requests_total" && s.labels.service === service) total += s.value;
  }
  return total;
}

function renderNodes(nodes) {
  const el = document.getElementById("nodes");
  if (!nodes.length) {
    el.innerHTML = '<p class="empty">No nodes registered yet.</p>';
    return;
  }
  el.innerHTML = nodes.map((node) => {
    const gpus = node.gpus || [];
    const gpuRows = gpus.map((g) => {
      const used = g.memory_total_mib ? Math.round((100 * g.memory_used_mib) / g.memory_total_mib) : 0;
      const mig = g.mig_enabled
        ? (g.mig_devices || []).map((m) => `<span class="badge">${esc(m.profile)}</span>`).join(" ") || "enabled, no instances"
        : "off";
      return `<tr><td>${esc(g.index)}</td><td>${esc(g.name)}${g.catalog_model ? ` <span class="muted">(${esc(g.catalog_model)})</span>` : ""}</td>
        <td class="num"><span class="bar"><span style="width:${used}%"></span></span> ${gib(g.memory_used_mib)} / ${gib(g.memory_total_mib)}</td>
        <td class="num">${g.utilization_gpu_pct ?? "—"}${g.utilization_gpu_pct == null ? "" : "%"}</td><td>${mig}</td></tr>`;
    }).join("");
    const gpuTable = gpus.length
      ? `<table><thead><tr><th>#</th><th>GPU</th><th>Memory used</th><th>Utilization</th><th>MIG</th></tr></thead><tbody>${gpuRows}</tbody></table>`
      : `<p class="empty">No GPUs on this node${node.note ? ": " + esc(node.note) : "; replicas run on the CPU"}.</p>`;
    return `<div class="card node" data-node="${esc(node.hostname)}">
      <h3>${esc(node.hostname)} <span class="badge">${esc(node.backend || "local")}</span></h3>
      <p class="muted">${esc(node.cpu_count)} CPUs · ${gib(node.memory_mib)} memory · ${gpus.length} GPU(s)
        · driver ${esc(node.driver_version || "none")} · ${esc(node.replicas ?? 0)} replica(s) running</p>
      ${gpuTable}</div>`;
  }).join("");
}

function renderClusters(clusters) {
  const el = document.getElementById("cluster-list");
  el.innerHTML = clusters.length
    ? `<h3>Declared clusters</h3><table><thead><tr><th>Project</th><th>Name</th><th>Backend</th><th>Version</th></tr></thead><tbody>${clusters
        .map((c) => `<tr><td>${esc(c.metadata.namespace)}</td><td>${esc(c.metadata.name)}</td><td>${esc(c.spec.backend)}</td><td>${esc(c.spec.version || "—")}</td></tr>`)
        .join("")}</tbody></table>`
    : "";
}

function renderPools(pools) {
  const el = document.getElementById("pool-list");
  if (!pools.length) {
    el.innerHTML = '<p class="empty">No node pools. Create one with <code>kgpu apply -f pool.yaml</code> (kind: NodePool).</p>';
    return;
  }
  const rows = pools.map((p) => {
    const f = p.spec.flavor || {};
    const s = p.spec.sharing || { mode: "exclusive" };
    let sharing = esc(s.mode);
    if (s.replicas) sharing += `, ${esc(s.replicas)} clients per GPU`;
    if (s.migLayout) {
      sharing += " " + Object.entries(s.migLayout).map(([profile, n]) => `<span class="badge">${esc(n)}x ${esc(profile)}</span>`).join(" ");
    }
    const status = p.status || {};
    const allocatable = status.allocatable
      ? Object.entries(status.allocatable).map(([k, v]) => `${esc(k)}: ${esc(v)}`).join("<br>")
      : '<span class="muted">—</span>';
    const key = `${p.metadata.namespace}/${p.metadata.name}`;
    return `<tr data-pool="${esc(key)}"><td>${esc(key)}</td>
      <td>${f.gpuCount ? `${esc(f.gpuCount)}x ${esc(f.gpuModel)}` : "CPU only"}</td>
      <td>${esc(f.cpu ?? "—")} CPU · ${esc(f.memory ?? "—")}</td>
      <td class="num">${esc(p.spec.minNodes)}–${esc(p.spec.maxNodes)}</td><td>${sharing}</td><td>${allocatable}</td></tr>`;
  }).join("");
  el.innerHTML = `<table><thead><tr><th>Pool</th><th>GPUs per node</th><th>CPU · memory</th><th>Nodes (min–max)</th>
    <th>GPU sharing</th><th>Allocatable</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function renderServices(services, metrics) {
  const el = document.getElementById("service-list");
  if (!services.length) {
    el.innerHTML = '<p class="empty">No services yet. Deploy one with <code>kgpu apply -f service.yaml</code>.</p>';
    return;
  }
  const rows = services.map((svc) => {
    const key = `${svc.metadata.namespace}/${svc.metadata.name}`;
    const st = svc.status || {};
    const ready = st.readyReplicas ?? 0;
    const desired = st.replicas ?? svc.spec.replicas ?? 0;
    const phaseClass = st.phase === "Ready" ? "ok" : st.phase === "Degraded" ? "bad" : "warn";
    const t = traffic(metrics, key);
    const rps = t ? t.rps.toFixed(1) : "…";
    const p99 = t && t.p99 != null ? `${(t.p99 * 1000).toFixed(t.p99 < 0.01 ? 1 : 0)} ms` : "—";
    const errors = t ? (t.errors ? `<span class="bad">${t.errors} (${((100 * t.errors) / t.requests).toFixed(1)}%)</span>` : "0") : "…";
    const link = `#/services/${encodeURIComponent(svc.metadata.namespace)}/${encodeURIComponent(svc.metadata.name)}`;
    return `<tr data-service="${esc(key)}"><td><a href="${link}">${esc(key)}</a></td>
      <td class="${phaseClass}">${esc(st.phase || "Unknown")}</td>
      <td class="num replicas">${esc(ready)}/${esc(desired)}</td>
      <td class="num rps">${rps}</td><td class="num p99">${p99}</td><td class="num errors">${errors}</td>
      <td class="num total">${totalRequests(metrics, key)}</td>
      <td><code>${esc(svc.spec.model?.uri)}</code></td></tr>`;
  }).join("");
  el.innerHTML = `<table><thead><tr><th>Service</th><th>Phase</th><th>Ready / desired</th><th>Requests/s</th>
    <th>p99 latency</th><th>Errors (5xx)</th><th>Total requests</th><th>Model</th></tr></thead><tbody>${rows}</tbody></table>`;
}

const PAGES = ["overview", "service", "pools", "gpus"];

// "#/" overview, "#/services/NAMESPACE/NAME", "#/pools", "#/gpus".
function route() {
  const parts = (window.location.hash || "#/").replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "services" && parts.length === 3) return { page: "service", ns: parts[1], name: parts[2] };
  if (parts[0] === "pools") return { page: "pools" };
  if (parts[0] === "gpus") return { page: "gpus" };
  return { page: "overview" };
}

function showPage(page) {
  for (const name of PAGES) document.getElementById(`page-${name}`).hidden = name !== page;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
  document.body.dataset.page = page;
}

async function refreshOverview() {
  const [nodes, clusters, pools, services, metricsText] = await Promise.all([
    getJSON("/api/v1/nodes"),
    getJSON(`${API}/clusters`),
    getJSON(`${API}/nodepools`),
    getJSON(`${API}/inferenceservices`),
    fetch("/metrics", { headers: authHeaders() }).then((r) => (r.ok ? r.text() : "")),
  ]);
  const metrics = { at: performance.now(), series: parseMetrics(metricsText) };
  renderNodes(nodes.items || []);
  renderClusters(clusters.items || []);
  renderPools(pools.items || []);
  renderServices(services.items || [], metrics);
  previousMetrics = metrics;
}

let timer = null;
let running = false;
let again = false; // a refresh was asked for while one was running

async function refresh() {
  if (running) {
    again = true;
    return;
  }
  running = true;
  const state = document.getElementById("refresh-state");
  const where = route();
  showPage(where.page);
  try {
    await readCaller();
    if (where.page === "service") await refreshService(where.ns, where.name);
    else if (where.page === "pools") await refreshPools();
    else if (where.page === "gpus") await refreshGpus();
    else await refreshOverview();
    showAuthMessage("");
    state.textContent = `updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`;
    state.className = "muted";
  } catch (error) {
    if (error instanceof AuthError) {
      showAuthMessage(error.message);
      state.textContent = "not signed in";
      caller = null;
      // What an earlier token showed is not this caller's to see.
      for (const id of ["nodes", "pool-list", "service-list", "pools-page", "gpus-page", "service-charts", "service-replicas"]) {
        document.getElementById(id).innerHTML = '<p class="empty">Needs an API token.</p>';
      }
      forgetCharts("");
      shownService = null;
      document.getElementById("service-actions").hidden = true;
      document.getElementById("cluster-list").innerHTML = "";
    } else {
      // An answer with an HTTP status (a service deleted meanwhile) is not an unreachable server.
      state.textContent = error.message.includes(": HTTP ") ? error.message : `cannot reach the server: ${error.message}`;
    }
    state.className = "bad";
  } finally {
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
    // The next read starts after this one ends, so a slow server never gets overlapping reads.
    running = false;
    timer = setTimeout(refresh, again ? 0 : REFRESH_MS);
    again = false;
  }
}

// A new token or page takes effect at once (not at the next tick).
function refreshNow() {
  clearTimeout(timer);
  previousMetrics = null;
  refresh();
}

setupTokenForm();
setupServiceActions();
window.addEventListener("hashchange", refreshNow);
refresh();
