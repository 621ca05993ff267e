// fleetscore dashboard: a reader of the JSON API under /v1. Plain DOM and
// inline SVG, no framework and nothing from another host, so the page works
// offline and is served from the binary as is. All times are shown in UTC,
// the time zone of the store's hourly partitions and of the jobs' windows.
//
// The range shown is the newest data by default (the API's default range,
// or, when that holds nothing scored, the newest hours /v1/extent finds
// predictions in); a range picked (from/to, earlier/later, jump to data, a
// job's window) is pinned and kept in the URL hash with the device:
// #from=2024-03-01T00:00:00Z&to=2024-03-02T00:00:00Z&device=NAME.
//
// Test hooks: <body data-ready="1"> once the first load of every section has
// finished (with data or an error), #overview[data-range="FROM/TO"] once
// an overview has been drawn, #drill[data-ready="1"] once a drill-down has
// loaded; heat map cells, the fleet row, job bars and series charts carry
// data-* attributes with what they show.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const HOUR = 3600e3;
const STATE_COLOURS = {
  succeeded: "#16a34a",
  failed: "#dc2626",
  running: "#2563eb",
  queued: "#94a3b8",
  cancelled: "#6b7280",
  skipped: "#cbd5e1",
};
const WARN = "#d97706";

/** Longest range one query reads (api.rs MAX_HOURS); /v1/extent says the server's. */
const MAX_HOURS = 24 * 31;

const state = {
  range: null, // a pinned range {from, to} (ms), or null: follow the newest data
  span: 24, // hours shown when following the newest data (and the length picked)
  maxHours: MAX_HOURS,
  extent: null, // the answer of /v1/extent: where predictions and readings are
  extentLoad: null, // its request in flight (a promise), shared
  note: "", // why the overview shows another range than the one asked for
  clampNote: "", // set when a range asked for was longer than one query reads
  overviewSeq: 0, // the newest overview request; older answers are dropped
  overview: null,
  jobs: [],
  selectedJob: null,
  device: null,
  hour: null, // ms of the hour clicked in the heat map, highlighted in the drill-down
  models: null,
  token: localStorage.getItem("fleetscore.token") || "",
  timer: null,
};

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

function build(ns, tag, attrs, children) {
  const el = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of (children || []).flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}
const h = (tag, attrs, ...children) => build(null, tag, attrs, children);
const s = (tag, attrs, ...children) => build(SVGNS, tag, attrs, children);

function fill(container, ...children) {
  container.replaceChildren(...children.flat().filter((c) => c));
}

/** An API error: what was asked, the status and the server's message. */
class ApiError extends Error {
  constructor(path, status, message) {
    super(`GET ${path}: ${status ? "HTTP " + status + " — " : ""}${message}`);
    this.status = status;
  }
}

async function api(path) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  let res;
  try {
    res = await fetch(path, { headers, cache: "no-store" });
  } catch (e) {
    throw new ApiError(path, 0, "the server does not answer (" + e.message + ")");
  }
  const text = await res.text();
  if (!res.ok) {
    let msg = text.trim();
    try {
      const j = JSON.parse(text);
      msg = j.error || j.message || msg;
    } catch (_) {
      // not JSON: show the text as it came
    }
    if (res.status === 401 || res.status === 403) $("auth").hidden = false;
    throw new ApiError(path, res.status, (msg || res.statusText).slice(0, 500));
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(path, res.status, "the answer is not JSON (" + e.message + ")");
  }
}

function errorBox(err) {
  return h("div", { class: "error", role: "alert" }, String(err && err.message ? err.message : err));
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") p.set(k, v);
  const t = p.toString();
  return t ? "?" + t : "";
}

const pad = (n, w = 2) => String(n).padStart(w, "0");
const iso = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");
function fmtDate(ms) {
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}
function fmtHM(ms) {
  const d = new Date(ms);
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
}
function fmtHMS(ms, millis) {
  const d = new Date(ms);
  const t = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  return millis ? `${t}.${pad(d.getUTCMilliseconds(), 3)}` : t;
}
const fmtDateTime = (ms) => `${fmtDate(ms)} ${fmtHMS(ms)} UTC`;
function fmtWindow(startMs, endMs) {
  if (!Number.isFinite(startMs)) return "?";
  const end = Number.isFinite(endMs) ? fmtHM(endMs) : "?";
  return `${fmtDate(startMs)} ${fmtHM(startMs)}–${end}`;
}
function fmtDur(ms) {
  if (!Number.isFinite(ms)) return "–";
  if (ms === 0) return "0 ms";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60e3) return `${(ms / 1000).toFixed(ms < 10e3 ? 2 : 1)} s`;
  if (ms < HOUR) return `${Math.floor(ms / 60e3)} min ${pad(Math.round((ms % 60e3) / 1000))} s`;
  return `${Math.floor(ms / HOUR)} h ${pad(Math.round((ms % HOUR) / 60e3))} min`;
}
const fmtInt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–");
function fmtNum(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
  return String(Math.round(v * 1000) / 1000);
}
const floorHour = (ms) => Math.floor(ms / HOUR) * HOUR;
const ceilHour = (ms) => Math.ceil(ms / HOUR) * HOUR;
/** A length of time in hours or days: "24 h", "7 days". */
function fmtLen(ms) {
  const hours = Math.round(ms / HOUR);
  return hours >= 48 && hours % 24 === 0 ? `${hours / 24} days` : `${hours} h`;
}
/** `from → to`, the date of `to` only where it differs. */
function fmtRange(from, to) {
  const end = fmtDate(to) === fmtDate(from) ? fmtHM(to) : `${fmtDate(to)} ${fmtHM(to)}`;
  return `${fmtDate(from)} ${fmtHM(from)} → ${end} UTC`;
}
// <input type="datetime-local"> holds "YYYY-MM-DDTHH:MM", read here as UTC.
const toInput = (ms) => (Number.isFinite(ms) ? new Date(ms).toISOString().slice(0, 16) : "");
const fromInput = (v) => (v ? Date.parse(v.length === 16 ? v + ":00Z" : v + "Z") : NaN);
const nsToMs = (ns) => (ns === null || ns === undefined ? NaN : Number(ns) / 1e6);
const plural = (n, one, many) => `${fmtInt(n)} ${n === 1 ? one : many || one + "s"}`;
const sum = (xs) => xs.reduce((a, b) => a + (Number(b) || 0), 0);

// Natural order, so device 10 comes after device 9.
const collator = new Intl.Collator("en", { numeric: true });

// ---------------------------------------------------------------- tooltip

const tooltip = $("tooltip");
function showTip(ev, text) {
  tooltip.textContent = text;
  tooltip.hidden = false;
  const r = tooltip.getBoundingClientRect();
  let x = ev.clientX + 14;
  let y = ev.clientY + 14;
  if (x + r.width > window.innerWidth - 8) x = ev.clientX - r.width - 14;
  if (y + r.height > window.innerHeight - 8) y = ev.clientY - r.height - 14;
  tooltip.style.left = `${Math.max(4, x)}px`;
  tooltip.style.top = `${Math.max(4, y)}px`;
}
function hideTip() {
  tooltip.hidden = true;
}
function withTip(el, text) {
  el.addEventListener("mousemove", (ev) => showTip(ev, typeof text === "function" ? text(ev) : text));
  el.addEventListener("mouseleave", hideTip);
  return el;
}

// ---------------------------------------------------------------- colours

const HEAT = [
  [254, 240, 217],
  [253, 204, 138],
  [252, 141, 89],
  [227, 74, 51],
  [153, 0, 0],
];
/** Colour of an anomaly count: log scale up to the largest count shown. */
function heat(n, max) {
  if (!(n > 0)) return "#e9edf2";
  const t = max > 1 ? Math.log1p(n) / Math.log1p(max) : 1;
  const x = Math.min(1, Math.max(0, t)) * (HEAT.length - 1);
  const i = Math.min(HEAT.length - 2, Math.floor(x));
  const f = x - i;
  const c = HEAT[i].map((a, k) => Math.round(a + (HEAT[i + 1][k] - a) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** A "nice" step of about (span / n) from 1-2-5 multiples of units of time. */
function timeStep(spanMs, n) {
  const steps = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3,
    1800e3, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, 24 * HOUR, 48 * HOUR, 168 * HOUR,
  ];
  const want = spanMs / n;
  return steps.find((x) => x >= want) || steps[steps.length - 1];
}
function numTicks(lo, hi, n) {
  const span = hi - lo || 1;
  const raw = span / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((x) => x >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.round(v / step) * step);
  return out;
}

// ---------------------------------------------------------------- range

/** Where the data is (/v1/extent), asked once per refresh and shared. */
function loadExtent(fresh) {
  if (fresh || !state.extentLoad) {
    state.extentLoad = api("/v1/extent")
      .then((x) => {
        state.extent = x;
        const max = Number(x.max_hours);
        if (max > 0 && max !== state.maxHours) {
          state.maxHours = max;
          const last = $("span").querySelector("option[value='" + MAX_HOURS + "']") || $("span").options[$("span").options.length - 2];
          last.value = String(max);
          last.textContent = `${fmtLen(max * HOUR)} (most per query)`;
        }
        renderExtent();
        return x;
      })
      .catch((e) => {
        // The page works without it (an older server): only the jumps do not.
        state.extent = null;
        fill($("extent"), h("span", { class: "warn", title: e.message }, "where the data is: unknown"));
        return null;
      });
  }
  return state.extentLoad;
}

/** The newest data's end (ms, on the hour): predictions, else readings. */
function newestData(ext) {
  const d = ext && (ext.predictions || ext.readings);
  return d ? { end: ceilHour(Date.parse(d.end)), first: floorHour(Date.parse(d.first_hour)), kind: ext.predictions ? "predictions" : "readings" } : null;
}

function renderExtent() {
  const ext = state.extent;
  if (!ext) return;
  const part = (label, d, jumps) => {
    if (!d) return h("span", {}, `no ${label}`);
    const first = Date.parse(d.first_hour);
    const end = Date.parse(d.end);
    return h(
      "span",
      { "data-kind": label },
      `${label} ${fmtRange(first, end)} `,
      jumps ? h("button", { type: "button", class: "link", id: "jump-oldest", title: "show the oldest predictions", onclick: () => jumpToData("oldest") }, "oldest") : null,
      jumps ? " " : null,
      jumps ? h("button", { type: "button", class: "link", id: "jump-newest", title: "show the newest predictions", onclick: () => jumpToData("newest") }, "newest") : null,
    );
  };
  fill(
    $("extent"),
    h("span", { class: "muted" }, "data: "),
    part("predictions", ext.predictions, true),
    " · ",
    part("readings", ext.readings, !ext.predictions),
    ext.complete === false ? h("span", { class: "warn", title: "the server stopped looking through hours that hold nothing; an end may be further out" }, " (ends not all found)") : null,
  );
}

/** The range on screen (ms): the overview's, else the 24 h up to now. */
function currentRange() {
  if (state.range) return state.range;
  const ov = state.overview;
  const from = ov ? Date.parse(ov.from) : NaN;
  const to = ov ? Date.parse(ov.to) : NaN;
  if (Number.isFinite(from) && Number.isFinite(to)) return { from, to };
  const now = ceilHour(Date.now());
  return { from: now - state.span * HOUR, to: now };
}

/** Pins the range [from, to), on whole hours, at most maxHours long. */
async function setRange(from, to, clampWhat) {
  from = floorHour(from);
  to = ceilHour(to);
  if (!Number.isFinite(from) || !Number.isFinite(to) || to <= from) {
    state.clampNote = "The range needs a start before its end.";
    renderNotes();
    return;
  }
  state.clampNote = "";
  const max = state.maxHours * HOUR;
  if (to - from > max) {
    const asked = fmtRange(from, to);
    if (clampWhat === "start") to = from + max;
    else from = to - max;
    state.clampNote =
      `One query reads at most ${state.maxHours} hours (${fmtLen(max)}), so of ${asked} the ${clampWhat === "start" ? "first" : "last"} ${fmtLen(max)} are shown; ` +
      `use ${clampWhat === "start" ? "later ▶" : "◀ earlier"} for the rest.`;
  }
  state.range = { from, to };
  writeHash();
  await reload();
}

/** Back to the default view: the newest data, followed as it moves. */
async function followNewest() {
  state.range = null;
  state.clampNote = "";
  writeHash();
  await reload();
}

function shift(direction) {
  const { from, to } = currentRange();
  const len = to - from;
  return setRange(from + direction * len, to + direction * len);
}

/** Moves the view to the newest (or oldest) hours holding predictions, else readings. */
async function jumpToData(which) {
  const ext = await loadExtent(true);
  const d = newestData(ext);
  if (!d) {
    state.clampNote = ext ? "Nothing is stored yet: there are no predictions and no readings to jump to." : "Where the data is is unknown: the server does not answer /v1/extent.";
    renderNotes();
    return;
  }
  const { from, to } = currentRange();
  const len = Math.min(to - from, state.maxHours * HOUR);
  if (which === "oldest") await setRange(d.first, d.first + len);
  else await setRange(d.end - len, d.end);
}

/** A job's window, in the overview: the chosen length up to its end, or all of it. */
function showWindow(startMs, endMs) {
  const to = ceilHour(endMs);
  const from = Math.min(floorHour(startMs), to - state.span * HOUR);
  $("overview").scrollIntoView({ block: "start", behavior: "smooth" });
  return setRange(from, to, to - from > state.maxHours * HOUR ? "start" : undefined);
}

async function reload() {
  await loadOverview();
  // The open device follows the range, where the reader is (no scroll).
  if (state.device) await openDevice(state.device, state.hour, false);
}

function readHash() {
  const out = {};
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    if (!part) continue;
    const i = part.indexOf("=");
    try {
      out[decodeURIComponent(i < 0 ? part : part.slice(0, i))] = decodeURIComponent(i < 0 ? "" : part.slice(i + 1));
    } catch (_) {
      // a malformed part is ignored
    }
  }
  return out;
}

function rangeFromHash(p) {
  const from = Date.parse(p.from);
  const to = Date.parse(p.to);
  return Number.isFinite(from) && Number.isFinite(to) && to > from ? { from, to } : null;
}

/** The range (when pinned), the length (when not the default) and the device, as the URL hash. */
function writeHash() {
  const enc = (v) => encodeURIComponent(v).replace(/%3A/gi, ":");
  const parts = [];
  if (state.range) parts.push(`from=${enc(iso(state.range.from))}`, `to=${enc(iso(state.range.to))}`);
  else if (state.span !== 24) parts.push(`span=${state.span}`);
  if (state.device) parts.push(`device=${encodeURIComponent(state.device)}`);
  const hash = parts.length ? "#" + parts.join("&") : "";
  if (location.hash !== hash) history.replaceState(null, "", hash || location.pathname + location.search);
}

/** Takes the range and length from the hash; whether they changed. */
function applyHash() {
  const p = readHash();
  const range = rangeFromHash(p);
  const span = Number(p.span) > 0 ? Math.min(Number(p.span), state.maxHours) : 24;
  const same = (a, b) => (a && b ? a.from === b.from && a.to === b.to : a === b);
  const changed = !same(range, state.range) || (!range && span !== state.span);
  if (changed) state.clampNote = "";
  state.range = range;
  if (!range) state.span = span;
  if (range && range.to - range.from > state.maxHours * HOUR) {
    state.range = { from: range.to - state.maxHours * HOUR, to: range.to };
    state.clampNote = `One query reads at most ${state.maxHours} hours: the last ${fmtLen(state.maxHours * HOUR)} of the linked range are shown.`;
  }
  return changed;
}

/** The range inputs and the length show what is on screen. */
function syncRangeInputs(from, to) {
  $("from").value = toInput(from);
  $("to").value = toInput(to);
  const len = Math.round((to - from) / HOUR);
  const sel = $("span");
  const preset = [...sel.options].find((o) => o.value === String(state.range ? len : state.span));
  const custom = sel.querySelector("option[value='custom']");
  if (preset) {
    sel.value = preset.value;
    custom.hidden = true;
  } else {
    custom.textContent = `${fmtLen(to - from)}`;
    custom.hidden = false;
    sel.value = "custom";
  }
  $("newest").classList.toggle("on", !state.range);
  $("newest").setAttribute("aria-pressed", String(!state.range));
}

function renderNotes() {
  const text = [state.note, state.clampNote].filter(Boolean).join(" ");
  $("overview-note").hidden = !text;
  $("overview-note").textContent = text;
}

// ---------------------------------------------------------------- overview

/** Whether an overview holds any scored reading. */
const scored = (ov) => sum((ov.rows || []).map(sum)) > 0;

async function loadOverview() {
  const box = $("heatmap");
  const seq = ++state.overviewSeq;
  try {
    let ov;
    let note = "";
    if (state.range) {
      ov = await api("/v1/overview" + qs({ from: iso(state.range.from), to: iso(state.range.to) }));
    } else {
      // The newest data: the API's default range ends with the newest
      // window a job scored rows in (or now), whatever this page was told.
      ov = await api("/v1/overview");
      const to = Date.parse(ov.to);
      const len = state.span * HOUR;
      if (state.span !== 24) ov = await api("/v1/overview" + qs({ from: iso(to - len), to: iso(to) }));
      if (!scored(ov)) {
        // Nothing there (no job scored lately, or only idle windows): the
        // newest hours holding predictions, wherever they are.
        const d = (await loadExtent()) || {};
        const end = d.predictions ? ceilHour(Date.parse(d.predictions.end)) : NaN;
        if (Number.isFinite(end) && end !== to) {
          ov = await api("/v1/overview" + qs({ from: iso(end - len), to: iso(end) }));
          note = `Nothing was scored in the ${fmtLen(len)} up to ${fmtDateTime(to)}; showing the newest ${fmtLen(len)} that hold predictions instead. "Newest" keeps following them; pick a range to pin one.`;
        }
      }
    }
    if (!scored(ov)) await loadExtent(); // for the empty view's jumps
    if (seq !== state.overviewSeq) return; // a newer request answers
    state.overview = ov;
    state.note = note;
    renderOverview(ov);
  } catch (e) {
    if (seq !== state.overviewSeq) return;
    state.overview = null;
    state.note = "";
    renderNotes();
    fill($("stats"));
    fill($("legend"));
    fill(box, errorBox(e));
    $("overview").dataset.range = "error";
  }
}

/** What to say, and offer, when the range holds nothing scored. */
function emptyOverview(from, to) {
  const ext = state.extent;
  const jumpButton = (id, label, which) => h("button", { type: "button", id, onclick: () => jumpToData(which) }, label);
  const where = (d) => fmtRange(Date.parse(d.first_hour), Date.parse(d.end));
  if (ext && ext.predictions) {
    const p = ext.predictions;
    const inside = Date.parse(p.first_hour) < to && Date.parse(p.end) > from;
    return h(
      "div",
      { class: "empty", id: "overview-empty" },
      h("p", {}, `Nothing was scored in ${fmtRange(from, to)}. `, `Predictions are stored from ${where(p)}${inside ? ", around this range but not in it" : ""}.`),
      h("p", {}, jumpButton("jump-to-data", "Jump to the newest predictions", "newest"), " ", jumpButton("jump-to-oldest", "Jump to the oldest", "oldest")),
    );
  }
  if (ext && ext.readings) {
    const r = ext.readings;
    return h(
      "div",
      { class: "empty", id: "overview-empty" },
      h("p", {}, `Nothing has been scored yet. Readings are stored from ${where(r)}; score them with `, h("code", {}, `fleetscore backfill --from ${iso(Date.parse(r.first_hour))} --to ${iso(Date.parse(r.end))}`), " (or ", h("code", {}, "POST /v1/jobs"), ", or a schedule)."),
      h("p", {}, jumpButton("jump-to-data", "Jump to the newest readings", "newest")),
    );
  }
  return h(
    "div",
    { class: "empty", id: "overview-empty" },
    "No scored readings in this range yet. Ingest readings (",
    h("code", {}, "fleetscore ingest"),
    " or ",
    h("code", {}, "POST /write"),
    ") and let a schedule or ",
    h("code", {}, "fleetscore backfill"),
    " score them.",
  );
}

/** The rows of the heat map: filtered by name, sorted, at most MAX_ROWS. */
const MAX_ROWS = 500;
function visibleDevices(ov) {
  const devices = ov.devices || [];
  const totals = (ov.anomalies || []).map(sum);
  const q = $("device-filter").value.trim().toLowerCase();
  let idx = devices.map((_, i) => i).filter((i) => !q || devices[i].toLowerCase().includes(q));
  if ($("sort").value === "anomalies") {
    idx.sort((a, b) => (totals[b] || 0) - (totals[a] || 0) || collator.compare(devices[a], devices[b]));
  } else {
    idx.sort((a, b) => collator.compare(devices[a], devices[b]));
  }
  const matching = idx.length;
  idx = idx.slice(0, MAX_ROWS);
  return { idx, matching };
}

function renderOverview(ov) {
  const from = Date.parse(ov.from);
  const to = Date.parse(ov.to);
  $("range").textContent = Number.isFinite(from) ? `${fmtDateTime(from)} → ${fmtDateTime(to)}` : "";
  if (Number.isFinite(from)) syncRangeInputs(from, to);
  const devices = ov.devices || [];
  const hours = (ov.hours || []).map((x) => Date.parse(x));
  const anomalies = ov.anomalies || [];
  const rows = ov.rows || [];
  const totalRows = sum(rows.map(sum));
  const totalAnom = sum(anomalies.map(sum));
  const rate = totalRows ? (100 * totalAnom) / totalRows : 0;
  const stat = (v, label, cls) => h("div", { class: "stat " + (cls || "") }, h("b", {}, v), h("span", {}, label));
  fill(
    $("stats"),
    stat(fmtInt(devices.length), "devices"),
    stat(fmtInt(hours.length), "hours"),
    stat(fmtInt(totalRows), "readings scored"),
    stat(fmtInt(totalAnom), "anomalies", totalAnom ? "bad" : ""),
    stat(totalRows ? `${rate.toFixed(2)} %` : "–", "anomaly rate"),
  );
  const box = $("heatmap");
  renderNotes();
  $("overview").dataset.range = `${iso(from)}/${iso(to)}`;
  if (!devices.length || !hours.length || !totalRows) {
    fill($("legend"));
    fill($("device-count"));
    fill(box, emptyOverview(from, to));
    return;
  }

  let max = 0;
  for (const r of anomalies) for (const n of r) max = Math.max(max, n);
  const { idx, matching } = visibleDevices(ov);
  const shown = idx.map((i) => devices[i]);
  $("device-count").textContent =
    matching > idx.length
      ? `the first ${fmtInt(idx.length)} of ${fmtInt(matching)} devices`
      : matching < devices.length
        ? `${fmtInt(matching)} of ${fmtInt(devices.length)} devices`
        : "";
  if (!shown.length) {
    fill(box, h("div", { class: "empty" }, "No device matches the filter."));
    return;
  }

  const labelW = Math.min(200, Math.max(84, 12 + 7 * Math.max(...shown.map((d) => d.length))));
  const totalW = 70;
  const avail = Math.max(400, box.clientWidth - labelW - totalW - 10);
  const cw = Math.max(12, Math.min(44, Math.floor(avail / hours.length)));
  const ch = shown.length > 60 ? 14 : 22;
  const headH = 16; // the "total" heading
  const barH = 46; // the fleet's row: a bar and its count per hour
  const barBottom = headH + barH;
  const top = barBottom + 34; // then the dates and the hour labels
  const totalX = labelW + cw * hours.length + totalW - 4;
  const width = labelW + cw * hours.length + totalW;
  const height = top + ch * shown.length + 6;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "heatmap-svg", role: "img" });

  // The fleet's row: anomalies per hour as bars with their counts, and its
  // total over the range in the total column.
  const perHour = hours.map((_, j) => sum(anomalies.map((r) => r[j])));
  const rowsPerHour = hours.map((_, j) => sum(rows.map((r) => r[j])));
  const maxHour = Math.max(1, ...perHour);
  const compact = (n) => (n < 1000 ? String(n) : n < 1e6 ? `${Math.round(n / 100) / 10}k` : `${Math.round(n / 1e5) / 10}M`);
  svg.append(s("text", { x: totalX, y: headH - 4, "text-anchor": "end", class: "colhead" }, "total"));
  svg.append(s("text", { x: labelW - 8, y: barBottom - 4, "text-anchor": "end", class: "fleet-label" }, "fleet total"));
  hours.forEach((t, j) => {
    const n = perHour[j];
    const bh = n ? Math.max(2, ((barH - 18) * n) / maxHour) : 0;
    const x = labelW + j * cw;
    const label = compact(n);
    const g = s(
      "g",
      { class: "fleet-hour", "data-hour": iso(t), "data-anomalies": n, "data-rows": rowsPerHour[j] },
      s("rect", { x, y: headH, width: cw, height: barH, fill: "transparent" }),
      s("rect", { x: x + 1, y: barBottom - bh, width: cw - 2, height: bh, fill: "#e34a33", rx: 1 }),
      n > 0 && label.length * 6.2 <= cw ? s("text", { x: x + cw / 2, y: barBottom - bh - 3, "text-anchor": "middle", class: "fleetnum" }, label) : null,
    );
    svg.append(
      withTip(
        g,
        `${fmtWindow(t, t + HOUR)} UTC\nfleet: ${plural(n, "anomaly", "anomalies")} in ${plural(rowsPerHour[j], "reading")}`,
      ),
    );
  });
  svg.append(
    withTip(
      s("text", { x: totalX, y: barBottom - 4, "text-anchor": "end", id: "fleet-total", class: "fleettotal" + (totalAnom ? " bad" : ""), "data-anomalies": totalAnom, "data-rows": totalRows }, fmtInt(totalAnom)),
      `fleet, ${fmtRange(from, to)}\n${plural(totalAnom, "anomaly", "anomalies")} in ${plural(totalRows, "reading")} (${rate.toFixed(2)} %)`,
    ),
  );
  svg.append(s("line", { x1: labelW, x2: labelW + cw * hours.length, y1: barBottom + 0.5, y2: barBottom + 0.5, class: "axis" }));

  // Hour labels, thinned so they do not overlap; the date where it changes.
  const every = Math.max(1, Math.ceil(42 / cw));
  hours.forEach((t, j) => {
    const x = labelW + j * cw + cw / 2;
    const d = new Date(t);
    if (j === 0 || d.getUTCHours() === 0) {
      svg.append(s("text", { x: labelW + j * cw, y: barBottom + 14 }, fmtDate(t)));
    }
    if (j % every === 0) {
      svg.append(s("text", { x, y: top - 5, "text-anchor": "middle" }, `${pad(d.getUTCHours())}h`));
    }
  });

  idx.forEach((i, row) => {
    const dev = devices[i];
    const y = top + row * ch;
    const label = s(
      "text",
      { x: labelW - 8, y: y + ch / 2 + 4, "text-anchor": "end", class: "dev" + (dev === state.device ? " selected" : ""), "data-device": dev },
      dev,
    );
    label.addEventListener("click", () => openDevice(dev, null));
    svg.append(label);
    const ra = anomalies[i] || [];
    const rr = rows[i] || [];
    hours.forEach((t, j) => {
      const n = ra[j] || 0;
      const r = rr[j] || 0;
      const x = labelW + j * cw;
      const cell = s("rect", {
        x: x + 1,
        y: y + 1,
        width: cw - 2,
        height: ch - 2,
        rx: 2,
        fill: r ? heat(n, max) : "#ffffff",
        stroke: r ? null : "#e1e5ea",
        class: "cell",
        "data-device": dev,
        "data-hour": iso(t),
        "data-anomalies": n,
        "data-rows": r,
      });
      const pct = r ? ` (${((100 * n) / r).toFixed(1)} %)` : "";
      withTip(
        cell,
        `${dev} · ${fmtWindow(t, t + HOUR)} UTC\n` +
          (r ? `${plural(n, "anomaly", "anomalies")} in ${plural(r, "reading")}${pct}` : "no readings scored"),
      );
      cell.addEventListener("click", () => openDevice(dev, t));
      svg.append(cell);
      if (n > 0 && cw >= 22 && ch >= 18) {
        const dark = Math.log1p(n) / Math.log1p(Math.max(max, 1)) < 0.45;
        svg.append(s("text", { x: x + cw / 2, y: y + ch / 2 + 4, "text-anchor": "middle", class: "cellnum" + (dark ? " dark" : "") }, n > 999 ? "1k+" : n));
      }
    });
    svg.append(
      s("text", { x: totalX, y: y + ch / 2 + 4, "text-anchor": "end", class: "devtotal", "data-device": dev, fill: sum(ra) ? "#b91c1c" : null }, fmtInt(sum(ra))),
    );
  });
  fill(box, svg);

  const sw = (c) => h("i", { style: `background:${c}` });
  fill(
    $("legend"),
    h("span", { class: "item" }, sw("#ffffff"), "no readings"),
    h("span", { class: "item" }, sw(heat(0, max)), "0"),
    h("span", { class: "item" }, sw(heat(1, max)), "1"),
    max > 2 ? h("span", { class: "item" }, sw(heat(Math.round(Math.sqrt(max)), max)), fmtInt(Math.round(Math.sqrt(max)))) : null,
    max > 1 ? h("span", { class: "item" }, sw(heat(max, max)), fmtInt(max)) : null,
    h("span", {}, "anomalies per hour"),
  );
}

// ---------------------------------------------------------------- jobs

async function loadJobs() {
  const box = $("timeline");
  try {
    const res = await api("/v1/jobs" + qs({ limit: 30 }));
    state.jobs = res.jobs || [];
    renderJobs(state.jobs);
  } catch (e) {
    fill($("jobs-sub"));
    fill(box, errorBox(e));
  }
}

function jobTimes(j) {
  const created = nsToMs(j.created_ns);
  const started = nsToMs(j.started_ns);
  const finished = nsToMs(j.finished_ns);
  const end = Number.isFinite(finished) ? finished : j.state === "running" ? Date.now() : NaN;
  return { created, started, finished, end, dur: Number.isFinite(started) && Number.isFinite(end) ? end - started : NaN };
}

function renderJobs(jobs) {
  const box = $("timeline");
  const legend = Object.entries(STATE_COLOURS).map(([k, c]) => h("span", { class: "item" }, h("i", { style: `background:${c}` }), k));
  legend.push(h("span", { class: "item" }, h("i", { style: `background:#fff;border:2px solid ${WARN}` }), "with failed models"));
  fill($("job-legend"), legend);
  if (!jobs.length) {
    fill($("jobs-sub"));
    fill(
      box,
      h(
        "div",
        { class: "empty" },
        "No jobs yet. Jobs appear here when a schedule fires, or after ",
        h("code", {}, "fleetscore backfill --from … --to …"),
        ".",
      ),
    );
    return;
  }
  const counts = {};
  for (const j of jobs) counts[j.state] = (counts[j.state] || 0) + 1;
  $("jobs-sub").textContent =
    `the ${plural(jobs.length, "most recent job")}: ` +
    Object.entries(counts)
      .map(([k, n]) => `${n} ${k}`)
      .join(", ") +
    "; bars run from start to finish (queue wait lighter); click a job for its tasks";

  // Oldest at the top, like a waterfall.
  const list = jobs
    .map((j) => ({ j, t: jobTimes(j) }))
    .sort((a, b) => (a.t.created || 0) - (b.t.created || 0) || a.j.id - b.j.id);
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const { t } of list) {
    for (const v of [t.created, t.started]) if (Number.isFinite(v)) t0 = Math.min(t0, v);
    for (const v of [t.end, t.started, t.created]) if (Number.isFinite(v)) t1 = Math.max(t1, v);
  }
  if (!Number.isFinite(t0)) {
    t0 = Date.now() - 60e3;
    t1 = Date.now();
  }
  if (t1 - t0 < 10) t1 = t0 + 10;
  const padMs = (t1 - t0) * 0.02;
  t0 -= padMs;
  t1 += padMs;

  const labelW = 250;
  const infoW = 290;
  const width = Math.max(720, box.clientWidth || 1000);
  const plotW = width - labelW - infoW;
  const rowH = 22;
  const top = 22;
  const height = top + rowH * list.length + 8;
  const x = (ms) => labelW + ((ms - t0) / (t1 - t0)) * plotW;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "timeline-svg" });

  const step = timeStep(t1 - t0, Math.max(3, Math.floor(plotW / 110)));
  for (let v = Math.ceil(t0 / step) * step; v <= t1; v += step) {
    svg.append(s("line", { x1: x(v), x2: x(v), y1: top - 4, y2: height - 6, class: "grid" }));
    svg.append(s("text", { x: x(v), y: top - 8, "text-anchor": "middle" }, fmtHMS(v, step < 1000)));
  }
  svg.append(s("text", { x: 0, y: top - 8 }, `${fmtDate(t0)} (UTC, wall clock)`));

  list.forEach(({ j, t }, i) => {
    const y = top + i * rowH;
    const colour = STATE_COLOURS[j.state] || "#94a3b8";
    const failedModels = Number(j.failed_models) || 0;
    const g = s("g", {
      class: "job" + (state.selectedJob === j.id ? " selected" : ""),
      "data-job-id": j.id,
      "data-state": j.state,
      "data-failed-models": failedModels,
    });
    g.append(s("rect", { x: 0, y, width, height: rowH, fill: i % 2 ? "#fafbfc" : "transparent" }));
    const win = fmtWindow(nsToMs(j.from_ns), nsToMs(j.to_ns));
    g.append(s("text", { x: 4, y: y + rowH / 2 + 4, class: "label" }, `#${j.id}`));
    g.append(s("text", { x: 52, y: y + rowH / 2 + 4 }, win + (j.schedule ? ` · ${j.schedule}` : "")));
    if (Number.isFinite(t.created) && Number.isFinite(t.started) && t.started > t.created) {
      g.append(s("rect", { x: x(t.created), y: y + 6, width: Math.max(1, x(t.started) - x(t.created)), height: rowH - 12, fill: colour, opacity: 0.3, rx: 2 }));
    }
    const bs = Number.isFinite(t.started) ? t.started : t.created;
    const be = Number.isFinite(t.end) ? t.end : bs;
    if (Number.isFinite(bs)) {
      g.append(
        s("rect", {
          x: x(bs),
          y: y + 4,
          width: Math.max(4, x(be) - x(bs)),
          height: rowH - 8,
          rx: 2,
          fill: colour,
          stroke: failedModels && j.state !== "failed" ? WARN : null,
          "stroke-width": failedModels ? 2 : null,
          class: "bar",
        }),
      );
    }
    const parts = [];
    parts.push(s("tspan", {}, j.state === "queued" ? "queued" : fmtDur(t.dur)));
    if (Number.isFinite(Number(j.anomalies)) && j.state !== "queued") parts.push(s("tspan", {}, ` · ${plural(Number(j.anomalies), "anomaly", "anomalies")}`));
    if (failedModels) parts.push(s("tspan", { class: "warntext" }, ` · ${plural(failedModels, "failed model")}`));
    if (j.state === "failed") parts.push(s("tspan", { class: "badtext" }, " · failed"));
    g.append(s("text", { x: labelW + plotW + 10, y: y + rowH / 2 + 4 }, parts));
    withTip(
      g,
      [
        `job #${j.id} · ${j.state}${j.kind ? " · " + j.kind : ""}${j.schedule ? " · " + j.schedule : ""}`,
        `window ${win} UTC`,
        Number.isFinite(t.started) ? `ran ${fmtDateTime(t.started)}, ${fmtDur(t.dur)}` : "not started",
        Number.isFinite(t.created) && Number.isFinite(t.started) ? `queued ${fmtDur(t.started - t.created)}` : null,
        `${plural(Number(j.models) || 0, "model")}, ${plural(Number(j.rows) || 0, "reading")}, ${plural(Number(j.anomalies) || 0, "anomaly", "anomalies")}`,
        failedModels ? `${plural(failedModels, "failed model")}` : null,
        `load ${fmtDur(j.load_ms)} · score ${fmtDur(j.score_ms)} · write ${fmtDur(j.write_ms)}`,
        j.error ? `${j.state === "skipped" ? "reason" : "error"}: ${j.error}` : null,
      ]
        .filter(Boolean)
        .join("\n"),
    );
    g.addEventListener("click", () => loadJob(j.id));
    svg.append(g);
  });
  svg.append(s("line", { x1: labelW, x2: labelW, y1: top - 4, y2: height - 6, class: "axis" }));
  fill(box, svg);
}

async function loadJob(id) {
  state.selectedJob = id;
  for (const g of document.querySelectorAll("#timeline-svg .job")) {
    g.classList.toggle("selected", Number(g.dataset.jobId) === Number(id));
  }
  const box = $("job-detail");
  fill(box, h("div", { class: "detail muted" }, `Loading job #${id}…`));
  try {
    const res = await api(`/v1/jobs/${encodeURIComponent(id)}`);
    renderJob(res);
  } catch (e) {
    fill(box, h("div", { class: "detail" }, errorBox(e)));
  }
  box.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function renderJob(res) {
  const j = res.job || {};
  const tasks = res.tasks || [];
  const failures = res.failures || [];
  const t = jobTimes(j);
  const fact = (label, value, cls) => h("div", {}, h("span", {}, label), h("b", { class: cls }, value));
  const taskRows = tasks.map((k) => {
    const st = nsToMs(k.started_ns);
    const fin = nsToMs(k.finished_ns);
    return h(
      "tr",
      {},
      h("td", { class: "num" }, k.kind === "map" ? `map ${k.idx}` : k.idx),
      h("td", {}, h("span", { class: "pill " + k.state }, k.state)),
      h("td", { class: "num" }, k.attempts),
      h("td", { class: "mono" }, k.first_key === k.last_key ? k.first_key : `${k.first_key} … ${k.last_key}`),
      h("td", { class: "num" }, fmtInt(k.n_keys)),
      h("td", { class: "num" }, fmtInt(k.rows)),
      h("td", { class: "num" }, fmtInt(k.anomalies)),
      h("td", { class: "num" + (k.failed_models ? " warn" : "") }, fmtInt(k.failed_models)),
      h("td", { class: "num" }, fmtDur(fin - st)),
      h("td", { class: "num" }, fmtDur(k.score_ms)),
      h("td", { class: "num" }, fmtDur(k.write_ms)),
      h("td", { class: "bad" }, k.error || ""),
    );
  });
  const failureRows = failures.map((f) =>
    h("tr", {}, h("td", { class: "mono" }, f.device), h("td", { class: "mono" }, f.tag), h("td", { class: "warn" }, f.reason), h("td", {}, f.detail || ""), h("td", { class: "num" }, fmtInt(f.rows))),
  );
  fill(
    $("job-detail"),
    h(
      "div",
      { class: "detail", id: "job-detail-body", "data-job-id": j.id },
      h(
        "h3",
        {},
        `Job #${j.id} `,
        h("span", { class: "pill " + j.state }, j.state),
        " ",
        h("span", { class: "sub" }, `window ${fmtWindow(nsToMs(j.from_ns), nsToMs(j.to_ns))} UTC `),
        Number.isFinite(nsToMs(j.from_ns)) && Number.isFinite(nsToMs(j.to_ns))
          ? h("button", { type: "button", id: "show-window", title: "show this job's window in the fleet overview", onclick: () => showWindow(nsToMs(j.from_ns), nsToMs(j.to_ns)) }, "Show its window in the overview")
          : null,
      ),
      h(
        "div",
        { class: "facts" },
        fact("schedule / kind", `${j.schedule || "–"} / ${j.kind || "–"}`),
        fact("created", Number.isFinite(t.created) ? fmtDateTime(t.created) : "–"),
        fact("duration", fmtDur(t.dur)),
        fact("models", fmtInt(j.models)),
        fact("readings", fmtInt(j.rows)),
        fact("anomalies", fmtInt(j.anomalies), j.anomalies ? "bad" : ""),
        fact("failed models", fmtInt(j.failed_models), j.failed_models ? "warn" : ""),
        fact("tasks", fmtInt(j.tasks)),
        fact("load / score / write", `${fmtDur(j.load_ms)} / ${fmtDur(j.score_ms)} / ${fmtDur(j.write_ms)}`),
      ),
      // A skipped job (a window with no readings, or one past catch-up)
      // did not fail: its text is a reason, not an error.
      j.error && j.state === "skipped" ? h("div", { class: "note" }, `skipped: ${j.error}`) : null,
      j.error && j.state !== "skipped" ? errorBox(`job error: ${j.error}`) : null,
      h("h3", {}, `Tasks (${tasks.length})`),
      tasks.length
        ? h(
            "table",
            { id: "tasks-table" },
            h("thead", {}, h("tr", {}, ["#", "state", "attempts", "models", "n", "readings", "anomalies", "failed", "duration", "score", "write", "error"].map((c, i) => h("th", { class: [0, 2, 4, 5, 6, 7, 8, 9, 10].includes(i) ? "num" : "" }, c)))),
            h("tbody", {}, taskRows),
          )
        : h("div", { class: "empty" }, "No tasks recorded for this job."),
      h("h3", {}, `Failed models (${failures.length})`),
      failures.length
        ? h(
            "table",
            { id: "failures-table" },
            h("thead", {}, h("tr", {}, h("th", {}, "device"), h("th", {}, "tag"), h("th", {}, "reason"), h("th", {}, "detail"), h("th", { class: "num" }, "readings"))),
            h("tbody", {}, failureRows),
          )
        : h("div", { class: "empty" }, "None: every model of this job scored."),
    ),
  );
}

// ---------------------------------------------------------------- rejected messages

const REJECTED_SHOWN = 20;

async function loadRejected() {
  try {
    const res = await api("/v1/rejected" + qs({ limit: REJECTED_SHOWN }));
    renderRejected(res.counts || [], res.letters || []);
  } catch (e) {
    fill($("rejected-body"), errorBox(e));
  }
}

function renderRejected(counts, letters) {
  const box = $("rejected-body");
  const total = counts.reduce((n, c) => n + Number(c.count || 0), 0);
  $("rejected-sub").textContent = total
    ? `${plural(total, "message")} refused since this server started (${counts.map((c) => `${c.source} ${c.reason}: ${fmtInt(c.count)}`).join(", ")}); the newest below, from the store`
    : "what the sources could not read: kept under rejected/ in the store (dead letters)";
  if (!letters.length) {
    fill(box, h("div", { class: "empty" }, "None: every message the sources received could be read."));
    return;
  }
  const payload = (l) => {
    const text = l.payload != null ? l.payload : l.payload_base64 != null ? `base64:${l.payload_base64}` : "";
    const cut = text.length > 160 ? text.slice(0, 160) + "…" : text;
    return cut + (l.truncated ? ` (cut; ${fmtInt(l.size)} bytes in all)` : "");
  };
  const rows = letters.map((l) =>
    h(
      "tr",
      { "data-source": l.source, "data-reason": l.reason },
      h("td", { class: "mono" }, l.time),
      h("td", {}, l.source),
      h("td", {}, h("span", { class: "pill failed" }, l.reason)),
      h("td", { class: "mono" }, l.origin),
      h("td", {}, l.error),
      h("td", { class: "mono" }, payload(l)),
    ),
  );
  fill(
    box,
    h(
      "table",
      { id: "rejected-tbl", class: "slowest-tbl" },
      h("thead", {}, h("tr", {}, ["received", "source", "reason", "from", "what is wrong", "message"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows),
    ),
  );
}

// ---------------------------------------------------------------- slowest tasks

const SLOWEST_SHOWN = 10;

async function loadSlowest() {
  // Tasks that read the data (map tasks) apart from those that score it,
  // each kind's slowest asked for on its own.
  await Promise.all(
    ["map", "score"].map(async (kind) => {
      try {
        const res = await api("/v1/tasks/slowest" + qs({ limit: SLOWEST_SHOWN, kind }));
        renderSlowest(kind, res.tasks || []);
      } catch (e) {
        fill($(kind === "map" ? "slowest-read" : "slowest-score"), errorBox(e));
      }
    }),
  );
}

function renderSlowest(kind, tasks) {
  const read = kind === "map";
  const box = $(read ? "slowest-read" : "slowest-score");
  if (!tasks.length) {
    const what = read ? "No task that reads the data" : "No scoring task";
    fill(box, h("div", { class: "empty" }, `${what} has finished yet.`));
    return;
  }
  const max = Math.max(...tasks.map((t) => Number(t.duration_ms) || 0), 1);
  const keys = (t) => (t.first_key === t.last_key ? t.first_key : `${t.first_key} … ${t.last_key}`);
  const rows = tasks.map((t) => {
    const tr = h(
      "tr",
      { class: "clickable", "data-job-id": t.job_id, "data-kind": read ? "map" : "score", title: `open job #${t.job_id}` },
      h("td", {}, `#${t.job_id}`),
      h("td", { class: "num" }, read ? `map ${t.idx}` : t.idx),
      h("td", {}, h("span", { class: "pill " + t.state }, t.state)),
      h("td", { class: "num" }, fmtDur(Number(t.duration_ms)), h("span", { class: "durbar" + (read ? " read" : ""), style: `width:${Math.max(2, (80 * (Number(t.duration_ms) || 0)) / max)}px` })),
      h("td", { class: "num" }, fmtInt(t.n_keys)),
      h("td", { class: "num" }, fmtInt(t.rows)),
      read ? null : h("td", { class: "num" }, fmtDur(Number(t.score_ms))),
      read ? null : h("td", { class: "num" }, fmtDur(Number(t.write_ms))),
      h("td", { class: "mono" }, keys(t)),
    );
    tr.addEventListener("click", () => loadJob(t.job_id));
    return tr;
  });
  const head = read
    ? [["job"], ["task", "num"], ["state"], ["duration", "num"], ["row groups", "num"], ["readings kept", "num"], ["raw objects"]]
    : [["job"], ["task", "num"], ["state"], ["duration", "num"], ["models", "num"], ["readings", "num"], ["score", "num"], ["write", "num"], ["model keys"]];
  fill(
    box,
    h(
      "table",
      { id: read ? "slowest-read-tbl" : "slowest-score-tbl", class: "slowest-tbl" },
      h("thead", {}, h("tr", {}, head.map(([c, cls]) => h("th", { class: cls || "" }, c)))),
      h("tbody", {}, rows),
    ),
  );
}

// ---------------------------------------------------------------- drill-down

async function openDevice(device, hourMs, scroll = true) {
  state.device = device;
  state.hour = hourMs;
  writeHash();
  for (const el of document.querySelectorAll("#heatmap-svg .dev")) {
    el.classList.toggle("selected", el.dataset.device === device);
  }
  const sec = $("drill");
  sec.hidden = false;
  sec.dataset.ready = "";
  sec.dataset.device = device;
  $("drill-device").textContent = device;
  fill($("drill-body"), h("p", { class: "muted" }, "Loading readings and predictions…"));
  if (scroll) sec.scrollIntoView({ block: "start", behavior: "smooth" });
  try {
    await renderDevice(device);
  } catch (e) {
    fill($("drill-body"), errorBox(e));
  }
  if (state.device === device) sec.dataset.ready = "1";
}

function closeDevice() {
  state.device = null;
  $("drill").hidden = true;
  writeHash();
  for (const el of document.querySelectorAll("#heatmap-svg .dev.selected")) el.classList.remove("selected");
}

async function renderDevice(device) {
  if (!state.models) state.models = (await api("/v1/models")).models || [];
  const mine = state.models.filter((m) => m.device === device);
  const fallback = state.models.filter((m) => m.device === "*" && !mine.some((x) => x.tag === m.tag));
  const byTag = new Map();
  for (const m of [...mine, ...fallback]) byTag.set(String(m.tag), m);
  const tags = [...byTag.keys()].sort(collator.compare);
  const ov = state.overview;
  let from = ov ? Date.parse(ov.from) : NaN;
  let to = ov ? Date.parse(ov.to) : NaN;
  if (!Number.isFinite(from) || !Number.isFinite(to)) {
    to = Date.now();
    from = to - 24 * HOUR;
  }
  // Zoom to the hours in which this device has scored readings (and the
  // hour clicked), so a device that reports for a few hours is not a sliver.
  const i = ov ? (ov.devices || []).indexOf(device) : -1;
  if (i >= 0) {
    const hours = (ov.hours || []).map((x) => Date.parse(x));
    const withRows = hours.filter((_, j) => ((ov.rows[i] || [])[j] || 0) > 0);
    if (state.hour !== null) withRows.push(state.hour);
    if (withRows.length) {
      from = Math.max(from, Math.min(...withRows));
      to = Math.min(to, Math.max(...withRows) + HOUR);
    }
  }
  $("drill-sub").textContent = `readings and anomalies per tag, ${fmtDateTime(from)} → ${fmtDateTime(to)}`;
  const range = { from: iso(from), to: iso(to) };
  // One request per kind for all the device's tags; rows carry their tag.
  const [r, p] = await Promise.all([
    api("/v1/readings" + qs({ device, ...range })),
    api("/v1/predictions" + qs({ device, ...range, anomalies: "true" })),
  ]);
  const readings = new Map();
  const anomalies = new Map();
  const add = (m, tag, row) => {
    if (!m.has(tag)) m.set(tag, []);
    m.get(tag).push(row);
  };
  for (const row of r.rows || []) add(readings, String(row.tag), row);
  for (const row of p.rows || []) if (Number(row.prediction) === 1) add(anomalies, String(row.tag), row);
  // Tags with readings but no model show too (their readings are not scored).
  for (const t of [...readings.keys(), ...anomalies.keys()]) if (!tags.includes(t)) tags.push(t);
  tags.sort(collator.compare);
  const results = tags.map((tag) => ({ tag, readings: readings.get(tag) || [], anomalies: anomalies.get(tag) || [] }));
  const notes = [];
  if (r.truncated) notes.push(`only the first ${plural((r.rows || []).length, "reading")} of the range are shown`);
  if (p.truncated) notes.push(`only the first ${plural((p.rows || []).length, "anomaly", "anomalies")} of the range are marked`);
  if (state.device !== device) return; // another device was opened meanwhile
  const body = $("drill-body");
  if (!results.length) {
    fill(body, h("div", { class: "empty" }, "No readings for this device in the range."));
    return;
  }
  const width = Math.max(600, body.clientWidth || 1000);
  fill(
    body,
    notes.length ? h("div", { class: "error" }, notes.join("; ") + "; choose a shorter range.") : null,
    results.map((x) => seriesChart(device, x, byTag.get(x.tag), from, to, width)),
  );
}

/** Keeps the first, lowest, highest and last point of each pixel column. */
function decimate(pts, x0, scale) {
  if (pts.length < 4000) return pts;
  const out = [];
  let col = null;
  let bucket = [];
  const flush = () => {
    if (!bucket.length) return;
    let lo = bucket[0];
    let hi = bucket[0];
    for (const p of bucket) {
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
    const keep = [bucket[0], lo, hi, bucket[bucket.length - 1]].sort((a, b) => a[0] - b[0]);
    for (const p of keep) if (out[out.length - 1] !== p) out.push(p);
    bucket = [];
  };
  for (const p of pts) {
    const c = Math.floor((p[0] - x0) * scale);
    if (c !== col) {
      flush();
      col = c;
    }
    bucket.push(p);
  }
  flush();
  return out;
}

function seriesChart(device, r, model, from, to, width) {
  const head = h(
    "div",
    { class: "series-head" },
    h("b", {}, `tag ${r.tag}`),
    r.error ? null : h("span", { class: "sub" }, `${plural(r.readings.length, "reading")} · `, h("span", { class: r.anomalies.length ? "bad" : "" }, plural(r.anomalies.length, "anomaly", "anomalies"))),
    model
      ? h("span", { class: "sub" }, `model (${model.device}, ${model.tag})${model.live !== undefined && model.live !== null ? " v" + model.live : ""}${model.runtime === "python" ? " · runs in Python" : ""}${model.description ? " · " + model.description : ""}`)
      : h("span", { class: "sub warn" }, "no model: these readings are not scored"),
  );
  const wrap = h("div", { class: "series", "data-tag": r.tag }, head);
  if (r.error) {
    wrap.append(errorBox(r.error));
    return wrap;
  }
  const pts = r.readings.map((x) => [Date.parse(x.ts), Number(x.value)]).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
  pts.sort((a, b) => a[0] - b[0]);
  const marks = r.anomalies.map((x) => [Date.parse(x.ts), Number(x.value), Number(x.score)]).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
  if (!pts.length && !marks.length) {
    wrap.append(h("div", { class: "empty" }, "No readings for this tag in the range."));
    return wrap;
  }
  const height = 150;
  const left = 58;
  const right = 24;
  const top = 8;
  const bottom = 22;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of pts.concat(marks)) {
    lo = Math.min(lo, p[1]);
    hi = Math.max(hi, p[1]);
  }
  if (hi - lo < 1e-9) {
    lo -= 1;
    hi += 1;
  }
  const padV = (hi - lo) * 0.06;
  lo -= padV;
  hi += padV;
  const x = (ms) => left + ((ms - from) / (to - from)) * plotW;
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * plotH;
  const svg = s("svg", {
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    class: "series-svg",
    "data-tag": r.tag,
    "data-readings": pts.length,
    "data-anomalies": marks.length,
  });
  if (state.hour !== null && Number.isFinite(state.hour)) {
    svg.append(s("rect", { x: x(state.hour), y: top, width: Math.max(2, x(state.hour + HOUR) - x(state.hour)), height: plotH, class: "band" }));
  }
  for (const v of numTicks(lo, hi, 3)) {
    svg.append(s("line", { x1: left, x2: left + plotW, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, fmtNum(v)));
  }
  const step = timeStep(to - from, Math.max(3, Math.floor(plotW / 90)));
  for (let v = Math.ceil(from / step) * step; v <= to; v += step) {
    svg.append(s("line", { x1: x(v), x2: x(v), y1: top + plotH, y2: top + plotH + 4, class: "axis" }));
    svg.append(s("text", { x: x(v), y: height - 6, "text-anchor": "middle" }, fmtHM(v)));
  }
  svg.append(s("line", { x1: left, x2: left + plotW, y1: top + plotH, y2: top + plotH, class: "axis" }));

  // Break the line where readings stop for much longer than usual.
  const gaps = [];
  for (let i = 1; i < pts.length; i++) gaps.push(pts[i][0] - pts[i - 1][0]);
  gaps.sort((a, b) => a - b);
  const typical = gaps.length ? gaps[Math.floor(gaps.length / 2)] : 0;
  const shown = decimate(pts, from, plotW / (to - from));
  let seg = [];
  const segments = [];
  shown.forEach((p, i) => {
    if (i && typical && p[0] - shown[i - 1][0] > Math.max(typical * 10, 60e3)) {
      segments.push(seg);
      seg = [];
    }
    seg.push(`${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
  });
  segments.push(seg);
  for (const sg of segments) if (sg.length) svg.append(s("polyline", { points: sg.join(" "), class: "line" }));
  for (const m of marks) {
    svg.append(s("circle", { cx: x(m[0]), cy: y(m[1]), r: 3.2, class: "anomaly", "data-ts": iso(m[0]) }));
  }

  // Hover: the nearest reading, and whether it is an anomaly.
  const anomalyAt = new Map(marks.map((m) => [m[0], m]));
  const cursor = s("line", { x1: 0, x2: 0, y1: top, y2: top + plotH, class: "cursor", visibility: "hidden" });
  svg.append(cursor);
  const hit = s("rect", { x: left, y: top, width: plotW, height: plotH, fill: "transparent" });
  hit.addEventListener("mousemove", (ev) => {
    if (!pts.length) return;
    const rect = svg.getBoundingClientRect();
    const ms = from + ((ev.clientX - rect.left - left) / plotW) * (to - from);
    let a = 0;
    let b = pts.length - 1;
    while (a < b) {
      const m = (a + b) >> 1;
      if (pts[m][0] < ms) a = m + 1;
      else b = m;
    }
    if (a > 0 && Math.abs(pts[a - 1][0] - ms) < Math.abs(pts[a][0] - ms)) a -= 1;
    const p = pts[a];
    cursor.setAttribute("x1", x(p[0]));
    cursor.setAttribute("x2", x(p[0]));
    cursor.setAttribute("visibility", "visible");
    const an = anomalyAt.get(p[0]);
    showTip(ev, `${device} · tag ${r.tag}\n${fmtDateTime(p[0])}\nvalue ${fmtNum(p[1])}${an ? `\nANOMALY (score ${fmtNum(an[2])})` : ""}`);
  });
  hit.addEventListener("mouseleave", () => {
    cursor.setAttribute("visibility", "hidden");
    hideTip();
  });
  svg.append(hit);
  wrap.append(svg);
  return wrap;
}

// ---------------------------------------------------------------- page

async function refresh() {
  const btn = $("refresh");
  btn.disabled = true;
  loadExtent(true); // shared with the overview, which may need it
  await Promise.all([loadOverview(), loadJobs(), loadSlowest(), loadRejected()]);
  if (state.selectedJob !== null) await loadJob(state.selectedJob);
  $("updated").textContent = "updated " + fmtHMS(Date.now()) + " UTC";
  btn.disabled = false;
}

function schedule() {
  clearInterval(state.timer);
  state.timer = $("auto").checked ? setInterval(refresh, 60e3) : null;
}

function deviceFromHash() {
  return readHash().device || null;
}

async function main() {
  $("refresh").addEventListener("click", refresh);
  $("auto").addEventListener("change", schedule);
  $("drill-close").addEventListener("click", closeDevice);
  let filterTimer = null;
  $("device-filter").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => state.overview && renderOverview(state.overview), 150);
  });
  $("sort").addEventListener("change", () => state.overview && renderOverview(state.overview));
  $("span").addEventListener("change", async (ev) => {
    const hours = Number(ev.target.value);
    if (!(hours > 0)) return;
    state.span = hours;
    if (state.range) {
      await setRange(state.range.to - hours * HOUR, state.range.to);
    } else {
      writeHash();
      await reload();
    }
  });
  $("rangebar").addEventListener("submit", (ev) => {
    ev.preventDefault();
    setRange(fromInput($("from").value), fromInput($("to").value));
  });
  $("earlier").addEventListener("click", () => shift(-1));
  $("later").addEventListener("click", () => shift(1));
  $("newest").addEventListener("click", followNewest);
  $("jump").addEventListener("click", () => jumpToData("newest"));
  $("auth-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    state.token = $("token").value.trim();
    localStorage.setItem("fleetscore.token", state.token);
    $("auth").hidden = true;
    state.models = null;
    await refresh();
  });
  window.addEventListener("hashchange", async () => {
    // A link followed or the address edited (the page's own changes use
    // replaceState, which does not come here).
    const changed = applyHash();
    const d = deviceFromHash();
    if (changed) await loadOverview();
    if (d && (d !== state.device || changed)) await openDevice(d, null);
    else if (!d && state.device) closeDevice();
  });
  let resizeTimer = null;
  // The charts fit the width: drawn again when it changes (not the height).
  let drawnWidth = window.innerWidth;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (window.innerWidth === drawnWidth) return;
      drawnWidth = window.innerWidth;
      if (state.overview) renderOverview(state.overview);
      renderJobs(state.jobs);
    }, 200);
  });
  applyHash();
  await refresh();
  schedule();
  const d = deviceFromHash();
  if (d) await openDevice(d, null);
  document.body.dataset.ready = "1";
}

main();
