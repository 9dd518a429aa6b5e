// Airbag console: polls /api/ for state and reads /api/alerts (Server-Sent
// Events, read with fetch so that a bearer token can be sent) for the live
// feed. Rendering is throttled: alerts are queued and drawn at most every
// RENDER_MS, and the list is capped at MAX_ALERTS, so the page stays usable
// in a storm of thousands of alerts per second.

const MAX_ALERTS = 500;
const RENDER_MS = 200;
const BACKFILL = 200;
const SPARK_POINTS = 300; // one per second: five minutes

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("airbag-token") || "";
let lastSeq = 0;         // the newest alert received
let queued = [];          // alerts not drawn yet
let shown = 0;            // alerts received since the page opened
let renderTimer = null;
let haltsTimer = null;
const history = new Map(); // symbol -> { points: [[t, price]], marks: [t], prevSeq, prevT, rate }

function headers() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

class Unauthorized extends Error {}

async function api(path) {
  const r = await fetch(path, { headers: headers() });
  if (r.status === 401 || r.status === 403) {
    const body = await r.json().catch(() => ({}));
    throw new Unauthorized(body.error || r.statusText);
  }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function askForToken(message) {
  $("token-form").hidden = false;
  $("token-error").textContent = message;
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("airbag-token", token);
  $("token-form").hidden = true;
  $("token-error").textContent = "";
  connect();
  poll();
});

const time = (ns) => (ns == null ? "" : new Date(Number(ns) / 1e6).toISOString().replace("T", " ").replace("Z", ""));
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

// --- The live feed ----------------------------------------------------------

function setState(text, cls) {
  const el = $("feed-state");
  el.textContent = text;
  el.className = `state ${cls || ""}`;
}

async function connect() {
  let from = 0;
  try {
    const s = await api("/api/status");
    from = lastSeq > 0 ? lastSeq + 1 : s.last_seq > 0 ? Math.max(1, s.last_seq - BACKFILL + 1) : 0;
  } catch (e) {
    if (e instanceof Unauthorized) return askForToken(e.message);
  }
  for (;;) {
    try {
      await readFeed(from);
    } catch (e) {
      if (e instanceof Unauthorized) return askForToken(e.message);
      setState("disconnected", "down");
    }
    await new Promise((r) => setTimeout(r, 1000));
    from = lastSeq > 0 ? lastSeq + 1 : 0;
  }
}

async function readFeed(from) {
  const h = headers();
  let url = "/api/alerts";
  if (lastSeq > 0) h["Last-Event-ID"] = String(lastSeq);
  else if (from > 0) url += `?from_seq=${from}`;
  const r = await fetch(url, { headers: h });
  if (r.status === 401 || r.status === 403) throw new Unauthorized((await r.json()).error);
  if (r.status === 410) { // older than the log keeps: start from now
    lastSeq = 0;
    return readFeed(0);
  }
  if (!r.ok || !r.body) throw new Error(`feed: ${r.status}`);
  setState("live", "live");
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      event(block);
    }
  }
  setState("reconnecting", "down");
}

function event(block) {
  let name = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trimStart();
  }
  if (name === "alert") {
    const alert = JSON.parse(data);
    lastSeq = alert.seq;
    shown++;
    queued.push(alert);
    if (queued.length > MAX_ALERTS) queued = queued.slice(-MAX_ALERTS);
    mark(alert);
    scheduleRender();
    scheduleHalts();
  } else if (name === "end") {
    const end = JSON.parse(data);
    if (end.resume_seq) lastSeq = end.resume_seq - 1;
  }
}

function scheduleRender() {
  if (renderTimer === null) renderTimer = setTimeout(renderAlerts, RENDER_MS);
}

function renderAlerts() {
  renderTimer = null;
  const list = $("alerts");
  const fragment = document.createDocumentFragment();
  for (let i = queued.length - 1; i >= 0; i--) fragment.appendChild(alertItem(queued[i]));
  queued = [];
  list.insertBefore(fragment, list.firstChild);
  while (list.children.length > MAX_ALERTS) list.removeChild(list.lastChild);
  $("alerts-count").textContent = `${shown} received, newest ${list.children.length} shown`;
}

function alertItem(a) {
  const li = document.createElement("li");
  li.className = `alert ${a.severity}`;
  li.dataset.seq = a.seq;
  li.dataset.instrument = a.instrument;
  li.dataset.rule = a.rule_id;
  const values = Object.entries(a.values || {}).map(([k, v]) => `${k} = ${v}`).join("\n");
  li.innerHTML =
    `<span class="sev">${esc(a.severity)}</span> <b>${esc(a.instrument)}</b> ${esc(a.rule_id)} ` +
    `<i>${esc(a.kind)}</i> ${esc((a.actions || []).join(", "))} <small>#${a.seq} ${esc(time(a.event_time_ns))}</small>` +
    `<div class="values">${esc(values)}${a.reason ? `\nreason: ${esc(a.reason)}` : ""}\nmode: ${esc(a.mode)}, ruleset v${a.ruleset_version}</div>`;
  li.addEventListener("click", () => li.classList.toggle("open"));
  return li;
}

// --- State, polled ------------------------------------------------------------

function scheduleHalts() {
  if (haltsTimer === null) {
    haltsTimer = setTimeout(async () => {
      haltsTimer = null;
      try { renderHalts(await api("/api/halts")); } catch (e) { /* the next poll retries */ }
    }, 100);
  }
}

function renderHalts(h) {
  const rows = h.in_force.map((s) =>
    `<tr class="${esc(s.severity)}" data-instrument="${esc(s.instrument)}" data-rule="${esc(s.rule_id)}">` +
    `<td>${esc(s.instrument)}${s.trigger_instrument ? ` <small>(by ${esc(s.trigger_instrument)})</small>` : ""}</td>` +
    `<td>${esc(s.rule_id)}</td><td>${esc(s.kind)}</td><td>${esc(s.severity)}</td><td>${esc(s.actions.join(", "))}</td>` +
    `<td>${esc(time(s.since_ns))}</td><td>${esc(time(s.until_ns))}</td></tr>`);
  $("halts").tBodies[0].innerHTML = rows.join("");
  $("halts-empty").hidden = rows.length > 0;
  $("halts-count").textContent = h.total ? `${h.total} in force` : "";
}

function entry(symbol) {
  let e = history.get(symbol);
  if (!e) {
    e = { points: [], marks: [], prevSeq: null, prevT: null, rate: 0 };
    history.set(symbol, e);
  }
  return e;
}

function mark(alert) {
  const e = entry(alert.instrument);
  e.marks.push(Date.now());
  if (e.marks.length > 100) e.marks.shift();
}

function sparkline(e) {
  const w = 160, h = 28;
  const now = Date.now(), span = SPARK_POINTS * 1000;
  const prices = e.points.map((p) => p[1]);
  if (prices.length === 0) return "";
  const lo = Math.min(...prices), hi = Math.max(...prices);
  const x = (t) => (w * (t - (now - span))) / span;
  const y = (p) => (hi === lo ? h / 2 : h - 2 - ((h - 4) * (p - lo)) / (hi - lo));
  const line = e.points.map(([t, p]) => `${x(t).toFixed(1)},${y(p).toFixed(1)}`).join(" ");
  const last = prices[prices.length - 1];
  const marks = e.marks.filter((t) => t > now - span)
    .map((t) => `<circle class="alert-mark" cx="${x(t).toFixed(1)}" cy="${y(priceAt(e, t) ?? last).toFixed(1)}" r="2.5"/>`).join("");
  return `<svg class="spark" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"><polyline points="${line}"/>${marks}</svg>`;
}

function priceAt(e, t) {
  let best = null;
  for (const [pt, p] of e.points) if (pt <= t + 1000) best = p;
  return best;
}

function renderInstruments(list) {
  const now = Date.now();
  const rows = list.instruments.map((i) => {
    const e = entry(i.symbol);
    const price = i.price ?? i.mark;
    if (price != null) {
      e.points.push([now, Number(price)]);
      if (e.points.length > SPARK_POINTS) e.points.shift();
    }
    if (e.prevSeq != null && i.last_seq != null && now > e.prevT) {
      e.rate = (Math.max(0, i.last_seq - e.prevSeq) * 1000) / (now - e.prevT);
    }
    e.prevSeq = i.last_seq;
    e.prevT = now;
    const quote = i.bid != null ? `${esc(i.bid)} / ${esc(i.ask)}` : "";
    return `<tr data-symbol="${esc(i.symbol)}"><td>${esc(i.symbol)}</td><td class="price">${esc(price ?? "")}</td>` +
      `<td>${quote}</td><td>${e.rate.toFixed(1)}</td><td>${sparkline(e)}</td></tr>`;
  });
  $("instruments").tBodies[0].innerHTML = rows.join("");
  $("instruments-count").textContent = `${list.total}` + (list.total > list.instruments.length ? `, first ${list.instruments.length} shown` : "");
}

let prevApplied = null, prevT = null;
function renderStatus(s) {
  const now = Date.now();
  if (prevApplied != null && now > prevT) $("h-rate").textContent = (((s.ticks_applied - prevApplied) * 1000) / (now - prevT)).toFixed(0);
  prevApplied = s.ticks_applied;
  prevT = now;
  $("h-applied").textContent = s.ticks_applied;
  $("h-rejected").textContent = s.ticks_rejected;
  $("h-alerts").textContent = s.last_seq;
  $("h-latency").textContent = s.tick_to_alert_ms.count
    ? `${s.tick_to_alert_ms.p50.toFixed(3)} / ${s.tick_to_alert_ms.p99.toFixed(3)} ms` : "–";
  $("h-subscribers").textContent = s.subscribers;
  $("h-journal").textContent = s.journal ? (s.journal.healthy ? `healthy, ${s.journal.pending_alerts} pending` : "UNHEALTHY") : "off (no data_dir)";
  $("h-ruleset").textContent = s.ruleset_version;
}

function renderRules(r, reload) {
  $("rules-version").textContent = `v${r.version}, ${r.rules.length} rules in ${r.dir}`;
  $("sources").innerHTML = r.sources.map((s) => `<li>${esc(s.name)} <small>sha256 ${esc(s.sha256.slice(0, 16))}…</small></li>`).join("");
  $("rules").tBodies[0].innerHTML = r.rules.map((x) =>
    `<tr data-rule="${esc(x.id)}"><td title="${esc(x.description)}">${esc(x.id)}</td><td>${esc(x.kind)}</td><td>${esc(x.severity)}</td>` +
    `<td>${esc(x.mode)}</td><td>${esc(x.actions.join(", "))}</td><td>${x.alerts}</td></tr>`).join("");
  const el = $("reload");
  if (reload.ok) {
    el.className = "ok";
    el.textContent = `Last reload ok (${time(reload.last_ok_ns)}); ${reload.applied} applied, ${reload.unchanged} unchanged, ${reload.failures} failed.`;
  } else {
    el.className = "failed";
    el.textContent = `Last reload FAILED (${time(reload.last_failed_ns)}); rules v${r.version} kept:\n` +
      reload.errors.map((e) => e.text).join("\n");
  }
}

let tick = 0;
async function poll() {
  try {
    const [s, i, h] = await Promise.all([api("/api/status"), api("/api/instruments"), api("/api/halts")]);
    renderStatus(s);
    renderInstruments(i);
    renderHalts(h);
    if (tick++ % 3 === 0) {
      const [r, reload] = await Promise.all([api("/api/rules"), api("/api/reload")]);
      renderRules(r, reload);
    }
  } catch (e) {
    if (e instanceof Unauthorized) return askForToken(e.message);
  }
}

connect();
poll();
setInterval(poll, 1000);
