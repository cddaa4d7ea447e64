// The DAN_G console (docs/console.md): plain JavaScript, no build step, no library. Every string
// from the plant (tag names, messages, reasons) goes into the page as text, never as HTML.
"use strict";

const state = { token: sessionStorage.getItem("dang.token") || "", view: "alarms", lastEvent: 0, status: null, stream: null };

function $(selector) { return document.querySelector(selector); }

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

function age(ms) {
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function time(ms) { return ms ? new Date(ms).toLocaleTimeString() : ""; }

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: Object.assign({ Authorization: "Bearer " + state.token }, body ? { "Content-Type": "application/json" } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await response.json().catch(() => ({}));
  if (response.status === 401) showLogin("The token was refused.");
  if (!response.ok) throw new Error(json.error || response.status + "");
  return json;
}

function notice(text) {
  const box = $("#notice");
  box.textContent = text;
  box.hidden = !text;
}

// MARK: - Alarms

const rank = { critical: 0, warning: 1, info: 2 };

async function loadAlarms() {
  const filter = $("#alarm-state").value;
  // The unit choices follow the status (units of the topic map); the chosen one is kept.
  const units = ((state.status && state.status.detectors && state.status.detectors.units) || []).map((u) => u.name);
  const unitSelect = $("#alarm-unit");
  if (unitSelect.options.length !== units.length + 1) {
    const chosen = unitSelect.value;
    unitSelect.replaceChildren(element("option", { value: "" }, "all"), ...units.map((u) => element("option", { value: u }, u)));
    unitSelect.value = units.includes(chosen) ? chosen : "";
  }
  let query = "&limit=500";
  if ($("#alarm-severity").value) query += "&severity=" + encodeURIComponent($("#alarm-severity").value);
  if (unitSelect.value) query += "&unit=" + encodeURIComponent(unitSelect.value);
  const [standing, journal] = await Promise.all([api("GET", "/alerts?state=" + filter + query), api("GET", "/alerts?state=all&limit=200")]);
  const rows = standing.alerts.sort((a, b) => (rank[a.severity] - rank[b.severity]) || (a.raised_at - b.raised_at));
  const body = $("#alarms tbody");
  body.replaceChildren(...rows.map(alarmRow));
  $("#alarm-count").textContent = rows.length + " " + filter;
  $("#journal tbody").replaceChildren(...journal.alerts.map((a) => element("tr", {},
    element("td", {}, time(a.raised_at)), element("td", { class: "sev " + a.severity }, a.severity), element("td", {}, a.tag),
    element("td", {}, a.kind), element("td", {}, a.state + (a.suppressed ? " (" + a.suppressed.replace(/_/g, " ") + ")" : "")),
    element("td", {}, a.message))));
  // ISA-18.2: about 1 annunciated alarm per 10 minutes per operator is manageable, 2 is the most,
  // 10 or more a flood.
  const recent = journal.alerts.filter((a) => !a.suppressed && a.severity !== "info" && Date.now() - a.raised_at < 600000).length;
  const rate = $("#alarm-rate");
  rate.textContent = recent + " alarms in the last 10 min (ISA-18.2: ~1 manageable, over 2 demanding, 10+ a flood)";
  rate.className = recent >= 10 ? "flood" : recent > 2 ? "busy" : "calm";
}

function alarmRow(a) {
  const actions = element("td", { class: "actions" });
  if (!a.acked_at) actions.append(element("button", { class: "ack", onclick: () => act("POST", "/alerts/" + a.alert_id + "/ack", { by: operator() }) }, "Acknowledge"));
  if (a.shelved_until && a.shelved_until > Date.now()) {
    actions.append(element("button", { onclick: () => act("POST", "/alerts/" + a.alert_id + "/unshelve", { by: operator(), reason: prompt("Why unshelve?") || undefined }) }, "Unshelve"));
  } else {
    actions.append(element("button", { onclick: () => shelve(a) }, "Shelve"));
  }
  actions.append(element("button", { onclick: () => act("POST", "/service", { tag: a.tag, out_of_service: true, by: operator(), reason: prompt("Why take " + a.tag + " out of service?") || undefined }) }, "Out of service"));
  const status = [a.acked_at ? "acknowledged by " + (a.acked_by || "?") : "unacknowledged"];
  if (a.shelved_until && a.shelved_until > Date.now()) status.push("shelved until " + time(a.shelved_until));
  if (a.suppressed) status.push(a.suppressed.replace(/_/g, " "));
  return element("tr", { class: a.acked_at ? "acked" : "unacked", "data-alert": a.alert_id },
    element("td", { class: "sev " + a.severity }, a.severity), element("td", {}, age(a.raised_at)), element("td", {}, a.tag),
    element("td", {}, a.kind), element("td", {}, a.message), element("td", { class: "status" }, status.join(", ")), actions);
}

function operator() { return sessionStorage.getItem("dang.operator") || "console"; }

async function shelve(a) {
  const duration = prompt("Shelve " + a.tag + " (" + a.kind + ") for how long? (e.g. 30m, 2h; up to 7d)", "30m");
  if (!duration) return;
  await act("POST", "/alerts/" + a.alert_id + "/shelve", { duration, by: operator(), reason: prompt("Why?") || undefined });
}

async function act(method, path, body) {
  try {
    await api(method, path, body);
    notice("");
  } catch (error) {
    notice(path + ": " + error.message);
  }
  await refresh();
}

// MARK: - Plant, decisions, gateway

async function loadPlant() {
  const [advisories, service] = await Promise.all([api("GET", "/alerts?severity=info&limit=100"), api("GET", "/service")]);
  const units = (state.status && state.status.detectors && state.status.detectors.units) || [];
  const readings = await Promise.all(units.map((u) => api("GET", "/tags?samples=60&unit=" + encodeURIComponent(u.name))));
  const standing = await api("GET", "/alerts?limit=500");
  const alarmed = new Set(standing.alerts.filter((a) => a.severity !== "info").map((a) => a.tag));
  $("#units").replaceChildren(...units.map((u, i) => {
    const monitor = readings[i].monitor;
    const drivers = new Map(((monitor && monitor.in_alarm && monitor.drivers) || []).map((d) => [d.tag, d.share]));
    return element("div", { class: "unit" + (monitor && monitor.in_alarm ? " in-alarm" : "") },
      element("h3", {}, u.name + " "), monitorState(monitor),
      element("table", {}, element("thead", {}, element("tr", {}, ...["tag", "", "value", "limits", "last minutes", ""].map((h) => element("th", {}, h)))),
        element("tbody", {}, ...readings[i].tags.map((t) => tagRow(t, alarmed.has(t.tag), drivers.get(t.tag))))));
  }));
  $("#advisories tbody").replaceChildren(...advisories.alerts.map((a) => element("tr", {},
    element("td", {}, age(a.raised_at)), element("td", {}, a.tag), element("td", {}, a.kind), element("td", {}, a.message))));
  $("#service tbody").replaceChildren(...service.out_of_service.map((t) => element("tr", {},
    element("td", {}, t.tag), element("td", {}, time(t.since)), element("td", {}, t.by || ""), element("td", {}, t.reason || ""),
    element("td", {}, element("button", { onclick: () => act("POST", "/service", { tag: t.tag, out_of_service: false, by: operator() }) }, "Back in service")))));
}

// The unit monitor: learning (how far), or watching — in alarm or not, how near its limit, and
// while in alarm the tags that drive it.
function monitorState(m) {
  if (!m) return element("span", { class: "muted" }, "no unit monitor");
  if (m.training_error) return element("span", { class: "bad" }, "monitor: could not train (" + m.training_error + ")");
  if (!m.trained) return element("span", { class: "muted" }, "monitor: learning its normal operation (" + m.baseline_samples + " of " + m.baseline_size + " samples)");
  const near = m.ratio == null ? "" : " — " + Math.round(m.ratio * 100) + " % of its limit";
  if (!m.in_alarm) return element("span", { class: "ok" }, "monitor: within its normal operation" + near);
  const driven = m.drivers.map((d) => d.tag.split("/").pop() + " " + Math.round(d.share * 100) + " %").join(", ");
  return element("span", { class: "bad monitor-alarm" }, "monitor: IN ALARM" + near + "; driven by " + driven);
}

function tagRow(t, alarmed, driverShare) {
  const values = t.values.filter((v) => v != null);
  const last = values.length ? values[values.length - 1] : null;
  const l = t.limits;
  // (A limit the topic map does not set is absent from the JSON: `!= null` covers both.)
  const outside = last != null && ((l.hi != null && last > l.hi) || (l.lo != null && last < l.lo));
  const limits = [["LOLO", l.lolo], ["LO", l.lo], ["HI", l.hi], ["HIHI", l.hihi]].filter(([, v]) => v != null).map(([n, v]) => n + " " + v).join(" · ");
  return element("tr", { class: (alarmed || outside ? "alarmed" : "") + (driverShare != null ? " driver" : "") },
    element("td", {}, t.tag.split("/").pop()), element("td", { class: "muted" }, t.description || ""),
    element("td", { class: "value" }, last == null ? "—" : (+last.toPrecision(5)) + (t.unit ? " " + t.unit : "")),
    element("td", { class: "muted" }, limits), element("td", {}, sparkline(values, l)),
    element("td", { class: "driver-share" }, driverShare != null ? "drives " + Math.round(driverShare * 100) + " %" : ""));
}

// The last minutes of a tag as a line, with its HI and LO limits dashed when they are in range.
function sparkline(values, limits) {
  const svg = "http://www.w3.org/2000/svg", width = 160, height = 28;
  const chart = document.createElementNS(svg, "svg");
  chart.setAttribute("width", width);
  chart.setAttribute("height", height);
  chart.setAttribute("class", "spark");
  if (values.length < 2) return chart;
  const shown = values.concat([limits.hi, limits.lo].filter((v) => v != null));
  let low = Math.min(...values), high = Math.max(...values);
  for (const v of shown) if (Math.abs(v - (low + high) / 2) < 3 * Math.max(high - low, 1e-9)) { low = Math.min(low, v); high = Math.max(high, v); }
  const span = high - low || 1;
  const y = (v) => (height - 2 - ((v - low) / span) * (height - 4)).toFixed(1);
  for (const limit of [limits.hi, limits.lo]) {
    if (limit == null || limit < low || limit > high) continue;
    const line = document.createElementNS(svg, "line");
    Object.entries({ x1: 0, x2: width, y1: y(limit), y2: y(limit), class: "limit" }).forEach(([k, v]) => line.setAttribute(k, v));
    chart.append(line);
  }
  const path = document.createElementNS(svg, "polyline");
  path.setAttribute("points", values.map((v, i) => (i * (width / (values.length - 1))).toFixed(1) + "," + y(v)).join(" "));
  chart.append(path);
  return chart;
}

async function loadDecisions() {
  const found = await api("GET", "/decisions?limit=25");
  $("#decisions tbody").replaceChildren(...found.decisions.map((d) => element("tr", { class: d.action },
    element("td", {}, new Date(d.ts).toLocaleTimeString()), element("td", {}, d.module), element("td", {}, d.action),
    element("td", {}, (d.trigger && (d.trigger.name || d.trigger.kind)) || ""), element("td", {}, outcome(d), result(d)),
    element("td", { class: "steps" }, ...(Array.isArray(d.reasons) ? d.reasons : []).map((r) =>
      element("span", { class: "step " + r.verdict, title: r.detail }, r.step))),
    element("td", {}, d.action === "defer" && d.outcome === "none" ? approval(d) : ""))));
}

// The latest invocation's status, attempts and time to its result.
function outcome(d) {
  if (!d.invocation) return d.outcome === "none" ? "—" : d.outcome;
  const parts = [d.outcome, d.invocation.attempts + (d.invocation.attempts === 1 ? " attempt" : " attempts")];
  if (d.invocation.latency_ms != null) parts.push((d.invocation.latency_ms / 1000).toFixed(1) + " s");
  return parts.join(" · ");
}

// The module's result, folded: its JSON as text (never as HTML), or its size when too large to carry.
function result(d) {
  const i = d.invocation;
  if (!i || i.result_bytes == null) return "";
  const body = i.result != null ? JSON.stringify(i.result, null, 1) : i.result_bytes + " bytes: in the record and on the result topic";
  return element("details", { class: "result" }, element("summary", {}, "result"), element("pre", {}, body));
}

function approval(d) {
  return element("span", {},
    element("button", { onclick: () => act("POST", "/approve/" + d.decision_id, { approve: true, by: operator() }) }, "Approve"),
    element("button", { onclick: () => act("POST", "/approve/" + d.decision_id, { approve: false, by: operator() }) }, "Reject"));
}

function showGateway() {
  const s = state.status;
  if (!s) return;
  const reasons = Object.entries(s.ingest.rejected_by_reason || {}).filter(([, n]) => n > 0).map(([r, n]) => r + " " + n).join(", ") || "none";
  const rows = [
    ["state", s.state], ["version", s.version], ["started", new Date(s.started_at).toLocaleString()],
    ["MQTT broker", s.mqtt.connected ? "connected" : "away" + (s.mqtt.last_error ? " (" + s.mqtt.last_error + ")" : "")],
    ["database", s.database.connected ? "connected" : "away (records are spooled)"], ["spool", s.database.spool_bytes + " bytes"],
    ["samples", String(s.ingest.samples)], ["ingest rate", state.rate ? state.rate.toFixed(1) + " samples/s" : "…"],
    ["rejected", reasons], ["shelved alarms", String(s.shelved_alarms)], ["tags out of service", String(s.out_of_service_tags)],
  ];
  $("#gateway tbody").replaceChildren(...rows.map(([k, v]) => element("tr", {}, element("th", {}, k), element("td", {}, v))));
  const health = $("#health");
  health.textContent = "broker " + (s.mqtt.connected ? "✓" : "✗") + " · database " + (s.database.connected ? "✓" : "✗") + " · " + s.version;
  health.className = s.state === "ok" ? "ok" : "bad";
}

// MARK: - Live

async function refresh() {
  try {
    if (state.view === "alarms") await loadAlarms();
    if (state.view === "plant") await loadPlant();
    if (state.view === "decisions") await loadDecisions();
    showGateway();
  } catch (error) {
    notice(error.message);
  }
}

// The first change after a calm is shown within 100 ms; in a flood the view is read again at most
// twice a second (each reading is two queries of the record: many open pages must not load it).
let pending = null, lastRefresh = 0;
function refreshSoon() {
  if (pending) return;
  const wait = Math.max(100, 500 - (Date.now() - lastRefresh));
  pending = setTimeout(() => { pending = null; lastRefresh = Date.now(); refresh(); }, wait);
}

async function listen() {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  try {
    const response = await fetch("/events", { headers: { Authorization: "Bearer " + state.token }, signal: controller.signal });
    if (response.status === 401) return showLogin("The token was refused.");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        handle(frame);
      }
    }
  } catch (error) {
    if (controller.signal.aborted) return;
  }
  setTimeout(listen, 2000);  // the server's retry
}

function handle(frame) {
  state.lastEvent = Date.now();
  let event = "message", data = "";
  for (const line of frame.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (event === "status") {
    const status = JSON.parse(data);
    if (state.status) state.rate = (status.ingest.samples - state.status.ingest.samples) / 2;
    state.status = status;
    showGateway();
    // Decisions and their results are not pushed one by one: the view is read again with each
    // status (every 2 s) while it is shown.
    if (state.view === "decisions") refreshSoon();
  } else if (event === "alert" || event === "transition" || event === "service") {
    refreshSoon();
  }
}

// A connection that has said nothing for 6 s (the status comes every 2 s) is shown as stale.
setInterval(() => {
  const stale = Date.now() - state.lastEvent > 6000;
  $("#live").textContent = stale ? "stale: no news from the gateway for " + age(state.lastEvent || Date.now()) : "live";
  $("#live").className = stale ? "stale" : "live";
}, 1000);

// MARK: - Views and login

function show(view) {
  state.view = view;
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== "view-" + view;
  for (const tab of document.querySelectorAll("nav button")) tab.classList.toggle("current", tab.dataset.view === view);
  refresh();
}

function showLogin(message) {
  $("#login").hidden = false;
  $("#login-message").textContent = message || "";
}

async function login(event) {
  event.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("dang.token", state.token);
  const name = $("#operator").value.trim();
  if (name) sessionStorage.setItem("dang.operator", name);
  $("#login").hidden = true;
  state.status = await api("GET", "/status").catch(() => null);
  show(state.view);
  listen();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll("nav button")) tab.addEventListener("click", () => show(tab.dataset.view));
  $("#login form").addEventListener("submit", login);
  for (const id of ["#alarm-state", "#alarm-severity", "#alarm-unit"]) $(id).addEventListener("change", refresh);
  $("#operator").value = sessionStorage.getItem("dang.operator") || "";
  if (state.token) {
    $("#login").hidden = true;
    api("GET", "/status").then((s) => { state.status = s; show("alarms"); }).catch(() => {});
    listen();
  } else {
    showLogin();
  }
});
