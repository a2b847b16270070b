// kgpu console, shared parts: the API token, reads and writes through the REST API, the caller's
// role, and the charts (uPlot, vendored under vendor/uplot) every page draws.
// On a server started with --auth the requests need an API token: it is kept in this tab's
// sessionStorage (gone when the tab closes) and sent only to this server, as a Bearer token.
"use strict";

const API = "/apis/kgpu.dev/v1alpha1";
const REFRESH_MS = 2000;
const TOKEN_KEY = "kgpu-token";

class AuthError extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  return token() ? { authorization: `Bearer ${token()}` } : {};
}

function showAuthMessage(text) {
  const el = document.getElementById("auth-message");
  el.textContent = text;
  el.hidden = !text;
}

function setupTokenForm() {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const clear = document.getElementById("token-clear");
  const sync = () => {
    clear.hidden = !token();
    input.placeholder = token() ? "token saved for this tab" : "kgpu_…";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    input.value = "";
    sync();
    showAuthMessage("");
    refreshNow();
  });
  clear.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    sync();
    refreshNow();
  });
  sync();
}

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function gib(mib) {
  return mib ? `${(mib / 1024).toFixed(1)} GiB` : "—";
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { accept: "application/json", ...authHeaders() } });
  if (response.status === 401) {
    throw new AuthError(
      token()
        ? "The server refused this API token (revoked or mistyped). Paste a valid token above."
        : "This server needs an API token. Paste one above: `kgpu token create -n PROJECT` makes one; " +
          "the cluster-admin token is in the server's state directory (admin-token).",
    );
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}


// A write through the same REST API the CLI uses; the server decides (a viewer's write is a 403).
async function send(method, path, body, contentType = "application/json") {
  const headers = { accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["content-type"] = contentType;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer?.error?.message || answer?.detail || `HTTP ${response.status}`);
  return answer;
}

// Who the token belongs to ({authenticated: false} on a server without --auth: one user, may do anything).
let caller = null;

async function readCaller() {
  caller = await getJSON("/api/v1/whoami");
  return caller;
}

function canWrite(namespace) {
  if (!caller) return false;
  if (!caller.authenticated || caller.clusterAdmin) return true;
  return caller.project === namespace && caller.role === "admin";
}

function age(epochSeconds) {
  if (!epochSeconds) return "—";
  const s = Math.max(0, Date.now() / 1000 - epochSeconds);
  if (s < 120) return `${Math.round(s)}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${(s / 3600).toFixed(1)}h`;
}

// ---------------------------------------------------------------- charts

const COLORS = ["#2e90fa", "#f79009", "#12b76a", "#9e77ed", "#f04438"];
const charts = new Map(); // element id -> uPlot

// One chart per element id, made on first use and given new data on every refresh.
// `history`: {time: [...], series: {name: [...]}}; `lines`: [{name, label, unit}].
function drawChart(parent, id, title, history, lines) {
  let box = document.getElementById(id);
  if (!box) {
    box = document.createElement("div");
    box.id = id;
    box.className = "chart";
    box.innerHTML = `<h4>${esc(title)}</h4><div class="plot"></div>`;
    parent.appendChild(box);
  }
  const data = [history.time, ...lines.map((l) => history.series[l.name] || history.time.map(() => null))];
  const points = data.slice(1).reduce((n, ys) => n + ys.filter((y) => y != null).length, 0);
  box.dataset.points = String(points);
  let plot = charts.get(id);
  if (!plot || !document.body.contains(plot.root)) {
    const plotBox = box.querySelector(".plot");
    plotBox.innerHTML = "";
    plot = new uPlot(
      {
        width: Math.max(260, plotBox.clientWidth || 320),
        height: 160,
        scales: {
          // From the first sample kept (at most the 15-minute window) to the last, on the server's clock;
          // one sample alone gets a minute's room instead of a range stretched over years.
          x: { time: true, range: (_u, min, max) => (max == null || max - min < 1 ? [(max ?? Date.now() / 1000) - 60, max ?? Date.now() / 1000] : [min, max]) },
          y: { range: (_u, min, max) => [Math.min(0, min ?? 0), Math.max(1, (max ?? 0) * 1.1)] },
        },
        axes: [{ stroke: "#667085" }, { stroke: "#667085", size: 52, values: (_u, splits) => splits.map(shortNumber) }],
        legend: { live: false },
        series: [
          {},
          ...lines.map((l, i) => ({
            label: l.label,
            stroke: COLORS[i % COLORS.length],
            width: 2,
            spanGaps: false,
            value: (_u, v) => (v == null ? "—" : `${v.toFixed(v < 10 ? 2 : 0)}${l.unit ? " " + l.unit : ""}`),
          })),
        ],
      },
      data,
      plotBox,
    );
    charts.set(id, plot);
  } else {
    plot.setData(data);
  }
  return box;
}

function shortNumber(value) {
  if (Math.abs(value) >= 1e6) return `${+(value / 1e6).toFixed(1)}M`;
  if (Math.abs(value) >= 1e3) return `${+(value / 1e3).toFixed(1)}k`;
  return String(+value.toFixed(3));
}

function forgetCharts(prefix) {
  for (const [id, plot] of charts) {
    if (id.startsWith(prefix)) {
      plot.destroy();
      charts.delete(id);
    }
  }
}
