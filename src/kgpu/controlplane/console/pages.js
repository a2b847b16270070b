// kgpu console pages beyond the overview: a service (charts, spec, replicas, logs, events, actions),
// node pools (charts and each node's GPUs cut into MIG slices and shares) and GPUs (charts).
// Charts read the control plane's own 15-minute history (/api/v1/history), so they work without Prometheus.
// Actions go through the same REST API as the CLI; a caller who may not write sees no buttons,
// and the server refuses a forged write anyway (403).
"use strict";

const HISTORY = "/api/v1/history";

const SERVICE_CHARTS = [
  ["rps", "Requests/s", [{ name: "rps", label: "requests/s" }]],
  ["latency", "Latency (ms)", [{ name: "p50_ms", label: "p50", unit: "ms" }, { name: "p99_ms", label: "p99", unit: "ms" }]],
  ["errors", "Errors (5xx/s)", [{ name: "errors_per_s", label: "5xx/s" }]],
  ["replicas", "Replicas", [{ name: "ready", label: "ready" }, { name: "desired", label: "desired" }]],
];
const GENERATION_CHARTS = [
  ["ttft", "Time to first token (ms)", [{ name: "ttft_p50_ms", label: "p50", unit: "ms" }, { name: "ttft_p99_ms", label: "p99", unit: "ms" }]],
  ["tokens", "Generated tokens/s", [{ name: "tokens_per_s", label: "tokens/s" }]],
];

// ---------------------------------------------------------------- service page

let shownService = null; // "namespace/name" the page shows
let follow = null; // {replica, offset, timer} of the log being followed

function servicePath(ns, name) {
  return `${API}/namespaces/${encodeURIComponent(ns)}/inferenceservices/${encodeURIComponent(name)}`;
}

async function refreshService(ns, name) {
  const key = `${ns}/${name}`;
  if (shownService !== key) {
    forgetCharts("svc-");
    stopFollowing();
    document.getElementById("service-charts").innerHTML = "";
    document.getElementById("service-log").textContent = "";
    document.getElementById("service-log-title").textContent = "Pick a replica's log above.";
    shownService = key;
  }
  const [svc, replicas, history] = await Promise.all([
    getJSON(servicePath(ns, name)),
    getJSON(`${API}/replicas?service=${encodeURIComponent(key)}`),
    getJSON(`${HISTORY}/namespaces/${encodeURIComponent(ns)}/inferenceservices/${encodeURIComponent(name)}`),
  ]);
  const st = svc.status || {};
  const condition = (st.conditions || [])[0] || {};
  document.getElementById("service-title").textContent = key;
  document.getElementById("service-status").innerHTML =
    `<span class="badge phase-${esc(st.phase)}">${esc(st.phase || "Unknown")}</span> ` +
    `${esc(st.readyReplicas ?? 0)}/${esc(st.replicas ?? 0)} ready · reason <b>${esc(condition.reason || "—")}</b>` +
    (condition.message ? ` · ${esc(condition.message)}` : "") +
    (st.endpoint ? ` · <code>${esc(st.endpoint)}</code>` : "") +
    clusterCounts(st);
  const writable = canWrite(ns);
  const actions = document.getElementById("service-actions");
  actions.hidden = !writable;
  if (writable && document.activeElement?.id !== "scale-input") {
    document.getElementById("scale-input").value = svc.spec.replicas ?? 1;
  }
  const chartsEl = document.getElementById("service-charts");
  const generating = ["ttft_p50_ms", "tokens_per_s"].some((n) => (history.series[n] || []).some((v) => v != null));
  for (const [id, title, lines] of [...SERVICE_CHARTS, ...(generating ? GENERATION_CHARTS : [])]) {
    drawChart(chartsEl, `svc-${id}`, title, history, lines);
  }
  document.getElementById("service-spec").textContent = JSON.stringify(svc.spec, null, 2);
  renderReplicas(ns, name, replicas.items || [], writable);
  const events = (st.events || []).slice().reverse();
  document.getElementById("service-events").innerHTML = events.length
    ? events.map((e) => `<li><span class="muted">${new Date(e.time * 1000).toLocaleTimeString()}</span> ${esc(e.message)}</li>`).join("")
    : '<li class="empty">No events yet.</li>';
}

// A service with spec.placement: ready/asked replicas in each of its clusters, and those it cannot use.
function clusterCounts(st) {
  if (!st.clusters || !st.clusters.length) return "";
  const parts = st.clusters.map((c) =>
    `${esc(c.name)} ${esc(c.readyReplicas)}/${esc(c.replicas)}` +
    (c.available ? "" : " <b>unavailable</b>") +
    (c.reason && c.available ? ` <span class="muted">(${esc(c.reason)})</span>` : ""));
  return ` · ${esc(st.placementPolicy || "")} over clusters: ${parts.join(", ")}`;
}

function renderReplicas(ns, name, replicas, writable) {
  const el = document.getElementById("service-replicas");
  if (!replicas.length) {
    el.innerHTML = '<p class="empty">No replicas.</p>';
    return;
  }
  const rows = replicas.map((r) => `<tr data-replica="${esc(r.name)}"><td>${esc(r.name)}</td>
      <td class="phase-${esc(r.phase)}">${esc(r.phase)}</td><td>${esc(r.device || "—")}</td><td>${esc(r.node || "—")}</td>
      <td class="num">${age(r.started_at)}</td><td class="num restarts">${esc(r.restarts)}</td>
      <td class="message">${esc(r.message || "")}</td>
      <td><a href="#" class="log-link" data-replica="${esc(r.name)}">log</a></td>
      <td>${writable && r.phase !== "Pending" && r.phase !== "Draining" ? `<button class="restart" data-replica="${esc(r.name)}">Restart</button>` : ""}</td></tr>`);
  el.innerHTML = `<table><thead><tr><th>Replica</th><th>Phase</th><th>Device</th><th>Node</th><th>Age</th>
    <th>Restarts</th><th>Message</th><th>Log</th><th></th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  for (const link of el.querySelectorAll(".log-link")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      startFollowing(link.dataset.replica);
    });
  }
  for (const button of el.querySelectorAll("button.restart")) {
    button.addEventListener("click", () =>
      act(`restart ${button.dataset.replica}`, () =>
        send("POST", `${servicePath(ns, name)}/replicas/${encodeURIComponent(button.dataset.replica)}/restart`),
      ),
    );
  }
}

// The log: its last lines, then (while "follow" is on) what the replica writes after them.
async function startFollowing(replica) {
  stopFollowing();
  const pre = document.getElementById("service-log");
  document.getElementById("service-log-title").textContent = `Log of ${replica}`;
  const response = await fetch(`${API}/replicas/${encodeURIComponent(replica)}/log?tail=200`, { headers: authHeaders() });
  pre.textContent = response.ok ? await response.text() : `cannot read the log: HTTP ${response.status}`;
  pre.scrollTop = pre.scrollHeight;
  follow = { replica, offset: Number(response.headers.get("x-log-offset") || 0), timer: null };
  const tick = async () => {
    if (!follow || follow.replica !== replica) return;
    if (document.getElementById("log-follow").checked) {
      const more = await fetch(`${API}/replicas/${encodeURIComponent(replica)}/log?offset=${follow.offset}`, { headers: authHeaders() });
      if (more.ok) {
        const text = await more.text();
        follow.offset = Number(more.headers.get("x-log-offset") || follow.offset);
        if (text) {
          pre.textContent += text;
          pre.scrollTop = pre.scrollHeight;
        }
      }
    }
    if (follow && follow.replica === replica) follow.timer = setTimeout(tick, 1000);
  };
  follow.timer = setTimeout(tick, 1000);
}

function stopFollowing() {
  if (follow) clearTimeout(follow.timer);
  follow = null;
}

async function act(what, fn) {
  const state = document.getElementById("action-state");
  state.textContent = `${what}…`;
  state.className = "muted";
  try {
    await fn();
    state.textContent = `${what}: done`;
    state.className = "ok";
  } catch (error) {
    state.textContent = `${what}: ${error.message}`;
    state.className = "bad";
  }
  refreshNow();
}

function setupServiceActions() {
  document.getElementById("scale-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const [ns, name] = shownService.split("/");
    const replicas = Number(document.getElementById("scale-input").value);
    act(`scale to ${replicas}`, () =>
      send("PATCH", servicePath(ns, name), { spec: { replicas } }, "application/merge-patch+json"),
    );
  });
  document.getElementById("delete-service").addEventListener("click", () => {
    const [ns, name] = shownService.split("/");
    if (!window.confirm(`Delete service ${shownService}? Its replicas drain and stop.`)) return;
    act(`delete ${shownService}`, async () => {
      await send("DELETE", servicePath(ns, name));
      window.location.hash = "#/";
    });
  });
}

// ---------------------------------------------------------------- node pools page

function slotTitle(slot) {
  return `${slot.label}${slot.replica ? `: ${slot.replica}` : " (free)"}`;
}

function renderLayout(nodes) {
  return nodes.map((node) => {
    const gpus = node.gpus.length
      ? node.gpus.map((gpu) => `<div class="gpu" data-mode="${esc(gpu.mode)}">
          <div class="gpu-name">GPU ${esc(gpu.index)} · ${esc(gpu.model)} · ${esc(gpu.mode)}</div>
          <div class="slots">${gpu.slots.map((slot) => `<div class="slot ${slot.replica ? "used" : "free"}"
            style="flex-grow:${slot.size}" title="${esc(slotTitle(slot))}" data-replica="${esc(slot.replica || "")}">
            <span>${esc(slot.label)}</span><b>${esc(slot.replica || "free")}</b></div>`).join("")}</div></div>`).join("")
      : `<p class="empty">No GPUs${node.cpuReplicas.length ? `; on the CPU: ${esc(node.cpuReplicas.join(", "))}` : ""}.</p>`;
    return `<div class="card layout-node" data-node="${esc(node.name)}"><h4>${esc(node.name)}
      <span class="badge">${esc(node.backend)}</span> <span class="muted">${esc(node.status)}</span></h4>${gpus}</div>`;
  }).join("");
}

async function refreshPools() {
  const [pools, layout] = await Promise.all([getJSON(`${API}/nodepools`), getJSON("/api/v1/gpu-layout")]);
  const el = document.getElementById("pools-page");
  const groups = [{ key: "local", title: "This machine", nodes: layout.items.filter((n) => n.pool === null) }];
  for (const p of pools.items || []) {
    const key = `${p.metadata.namespace}/${p.metadata.name}`;
    groups.push({ key, pool: p, title: `Pool ${key}`, nodes: layout.items.filter((n) => n.pool === key) });
  }
  const wanted = groups.map((g) => `pool-${g.key.replace(/[^\w-]/g, "_")}`);
  for (const box of [...el.children]) {
    if (!wanted.includes(box.dataset.group)) box.remove();
  }
  for (const group of groups) {
    const id = `pool-${group.key.replace(/[^\w-]/g, "_")}`;
    let box = [...el.children].find((c) => c.dataset.group === id);
    if (!box) {
      box = document.createElement("section");
      box.dataset.group = id;
      box.innerHTML = `<h2>${esc(group.title)}</h2><p class="muted summary"></p><div class="charts"></div><div class="layout cards"></div>`;
      el.appendChild(box);
    }
    if (group.pool) {
      const f = group.pool.spec.flavor || {};
      const s = group.pool.spec.sharing || { mode: "exclusive" };
      box.querySelector(".summary").textContent =
        `${f.gpuCount ? `${f.gpuCount}x ${f.gpuModel}` : "CPU only"} per node · ${group.pool.spec.minNodes}–${group.pool.spec.maxNodes} nodes · GPU sharing: ${s.mode}`;
      const history = await getJSON(`${HISTORY}/namespaces/${encodeURIComponent(group.pool.metadata.namespace)}/nodepools/${encodeURIComponent(group.pool.metadata.name)}`);
      const charts = box.querySelector(".charts");
      drawChart(charts, `${id}-nodes`, "Nodes", history, [{ name: "nodes", label: "nodes" }, { name: "ready_nodes", label: "ready" }]);
      drawChart(charts, `${id}-gpus`, "GPU devices allocated", history, [
        { name: "gpus_allocated", label: "allocated" },
        { name: "gpus_allocatable", label: "allocatable" },
      ]);
    } else {
      box.querySelector(".summary").textContent = "The machine `kgpu up` runs on: replicas are processes on its GPUs (or its CPU).";
    }
    box.querySelector(".layout").innerHTML = group.nodes.length
      ? renderLayout(group.nodes)
      : '<p class="empty">No nodes yet (a pool on a sim cluster gets virtual nodes; on Kubernetes, its operator reports them).</p>';
  }
}

// ---------------------------------------------------------------- GPUs page

async function refreshGpus() {
  const history = await getJSON(`${HISTORY}/gpus`);
  const el = document.getElementById("gpus-page");
  const entries = Object.entries(history.items || {});
  if (!entries.length) {
    forgetCharts("gpu-");
    el.innerHTML = '<p class="empty">No NVIDIA GPU metrics on this machine (no driver or no GPU): replicas run on the CPU.</p>';
    return;
  }
  el.querySelector(".empty")?.remove();
  for (const [key, data] of entries) {
    const id = `gpu-${key.replace(/[^\w-]/g, "_")}`;
    let box = el.querySelector(`[data-gpu="${CSS.escape(key)}"]`);
    if (!box) {
      box = document.createElement("div");
      box.className = "card gpu-card";
      box.dataset.gpu = key;
      box.innerHTML = `<h4></h4><div class="charts"></div>`;
      el.appendChild(box);
    }
    const meta = data.meta || {};
    box.querySelector("h4").textContent =
      `${meta.node || ""} GPU ${meta.gpu ?? ""}${meta.mig ? " MIG " + meta.mig : ""} · ${meta.model || ""}${meta.replica ? " · " + meta.replica : ""}`;
    const charts = box.querySelector(".charts");
    drawChart(charts, `${id}-util`, "Utilization (%)", data, [{ name: "util_pct", label: "util", unit: "%" }]);
    drawChart(charts, `${id}-memory`, "Memory (MiB)", data, [
      { name: "memory_used_mib", label: "used", unit: "MiB" },
      { name: "memory_total_mib", label: "total", unit: "MiB" },
    ]);
    drawChart(charts, `${id}-power`, "Power (W)", data, [{ name: "power_w", label: "power", unit: "W" }]);
  }
}
