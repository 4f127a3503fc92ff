/* Shared helpers for every page. Data goes into the DOM only through textContent and
   setAttribute (never innerHTML), so names and values from users always show as text. */
"use strict";

const K = (() => {
  /** el("td", {class: "num", title: x}, child, "text", ...) builds an element. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function replace(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  class ApiError extends Error {
    constructor(status, message, problems) {
      super(message);
      this.status = status;
      this.problems = problems || [];
    }
  }

  /** Messages from {"detail": "..."} or {"detail": [{path, message, line}]}. */
  function problemsOf(body) {
    const detail = body && body.detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => ({
        path: d.path || (Array.isArray(d.loc) ? d.loc.join(".") : ""),
        message: d.message || d.msg || JSON.stringify(d),
        line: d.line ?? null,
      }));
    }
    if (typeof detail === "string") return [{ path: "", message: detail, line: null }];
    return [];
  }

  /** fetch() on the same origin; a 401 goes to the login page; other errors throw ApiError. */
  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
    if (response.status === 401) {
      location.assign("/ui/login?next=" + encodeURIComponent(location.pathname + location.search));
      throw new ApiError(401, "authentication required");
    }
    const type = response.headers.get("content-type") || "";
    const body = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) {
      const problems = typeof body === "object" ? problemsOf(body) : [];
      const message = problems.length ? problems.map((p) => p.message).join("; ")
        : `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message, problems);
    }
    return body;
  }

  /** Calls fn every `ms` (not while the tab is hidden) until it returns false. */
  function poll(fn, ms) {
    let timer = null;
    let stopped = false;
    async function tick() {
      timer = null;
      if (stopped) return;
      let again = true;
      try {
        again = (await fn()) !== false;
        connection(true);
      } catch (err) {
        // An API refusal (4xx) means the server answered: only network and 5xx errors are "down".
        if (err instanceof ApiError && err.status < 500) connection(true);
        else connection(false, err);
        if (err instanceof ApiError && err.status === 404) again = false;
      }
      if (again && !stopped) timer = setTimeout(tick, document.hidden ? ms * 5 : ms);
    }
    tick();
    return { stop() { stopped = true; if (timer) clearTimeout(timer); } };
  }

  function connection(ok, err) {
    const node = document.getElementById("conn");
    if (!node) return;
    node.classList.toggle("down", !ok);
    node.textContent = ok ? "live · updated " + new Date().toLocaleTimeString()
      : "connection problem: " + (err && err.message ? err.message : "unknown");
  }

  function showError(container, err) {
    const text = err instanceof ApiError ? `${err.status}: ${err.message}` : String(err && err.message || err);
    replace(container, el("div", { class: "notice error", text }));
  }

  // --- formatting -----------------------------------------------------------------

  function num(value) {
    if (value === null || value === undefined || value === "") return NaN;
    const n = typeof value === "number" ? value : Number(value);
    return Number.isFinite(n) ? n : NaN;
  }

  function fmt(value) {
    const n = num(value);
    if (Number.isNaN(n)) return value === null || value === undefined ? "—" : String(value);
    if (Number.isInteger(n) && Math.abs(n) < 1e9) return String(n);
    const abs = Math.abs(n);
    if (abs !== 0 && (abs < 1e-4 || abs >= 1e7)) return n.toExponential(4);
    return String(Number(n.toPrecision(6)));
  }

  function time(ts) {
    if (!ts) return "—";
    const d = new Date(ts);
    return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
  }

  function duration(start, end) {
    if (!start) return "—";
    const ms = (end ? new Date(end) : new Date()) - new Date(start);
    if (!Number.isFinite(ms) || ms < 0) return "—";
    const s = Math.round(ms / 1000);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  }

  function age(ts) {
    if (!ts) return "—";
    return duration(ts, null);
  }

  function badge(status) {
    const text = status || "Unknown";
    return el("span", { class: "badge " + text.toLowerCase().replace(/[^a-z]/g, ""), text });
  }

  function progress(done, total) {
    const pct = total ? Math.min(100, Math.round((100 * done) / total)) : 0;
    const bar = el("span", { class: "bar" }, el("i"));
    bar.firstChild.style.width = pct + "%";
    return el("span", { class: "progress" }, bar, el("span", { class: "count", text: `${done}/${total ?? "?"}` }));
  }

  function param(name, value) {
    return el("span", { class: "param", title: `${name}=${value}` }, `${name}=${value}`);
  }

  // --- experiment and trial documents ---------------------------------------------

  const TERMINAL = new Set(["Succeeded", "Failed", "Killed", "MetricsUnavailable", "EarlyStopped"]);

  function lastCondition(doc) {
    const conditions = (doc.status && doc.status.conditions) || [];
    const live = conditions.filter((c) => c.status === undefined || c.status === "True");
    const last = (live.length ? live : conditions)[(live.length ? live : conditions).length - 1];
    return last ? last.type : "Created";
  }

  function objective(experiment) {
    const o = (experiment.spec && experiment.spec.objective) || {};
    return {
      type: o.type || "minimize",
      metric: o.objectiveMetricName || "",
      goal: o.goal,
      strategies: Object.fromEntries((o.metricStrategies || []).map((s) => [s.name, s.value])),
    };
  }

  /** The value of `metric` for a trial under the experiment's metric strategy (NaN if none). */
  function metricValue(trial, metric, obj) {
    const metrics = (trial.status && trial.status.observation && trial.status.observation.metrics) || [];
    const m = metrics.find((x) => x.name === metric);
    if (!m) return NaN;
    const strategy = obj.strategies[metric] || (obj.type === "maximize" ? "max" : "min");
    return num(m[strategy] ?? m.latest);
  }

  function assignments(trial) {
    return Object.fromEntries(((trial.spec && trial.spec.parameterAssignments) || []).map((a) => [a.name, a.value]));
  }

  function trialTimes(trial) {
    const s = trial.status || {};
    const first = (s.conditions || [])[0] || {};
    return {
      created: (trial.metadata || {}).creationTimestamp || first.lastTransitionTime || first.lastUpdateTime,
      start: s.startTime, end: s.completionTime,
    };
  }

  /** A small YAML writer for showing documents (JSON-quoted strings are valid YAML). */
  function yaml(value, indent) {
    indent = indent || "";
    const scalar = (v) => {
      if (v === null || v === undefined) return "null";
      if (typeof v === "number" || typeof v === "boolean") return String(v);
      const s = String(v);
      const plain = /^[A-Za-z_/][\w./${}\-|\[\]: ]*$/.test(s) && !/: |:$| #|^(true|false|null|yes|no|on|off|~)$/i.test(s) && !/^[-\d.]/.test(s);
      return plain ? s : JSON.stringify(s);
    };
    if (Array.isArray(value)) {
      if (!value.length) return "[]";
      return value.map((item) => {
        if (item && typeof item === "object" && !(Array.isArray(item) && !item.length) && Object.keys(item).length) {
          const inner = yaml(item, indent + "  ");
          return indent + "- " + inner.slice(indent.length + 2);
        }
        return indent + "- " + (item && typeof item === "object" ? (Array.isArray(item) ? "[]" : "{}") : scalar(item));
      }).join("\n");
    }
    if (value && typeof value === "object") {
      const keys = Object.keys(value);
      if (!keys.length) return "{}";
      return keys.map((key) => {
        const v = value[key];
        const k = scalar(key);
        if (v && typeof v === "object" && (Array.isArray(v) ? v.length : Object.keys(v).length)) {
          return indent + k + ":\n" + yaml(v, Array.isArray(v) ? indent : indent + "  ");
        }
        return indent + k + ": " + (v && typeof v === "object" ? (Array.isArray(v) ? "[]" : "{}") : scalar(v));
      }).join("\n");
    }
    return indent + scalar(value);
  }

  /** A sortable, filterable table. columns: [{key, label, value(row), render(row), num}]. */
  function table(container, columns, options) {
    options = options || {};
    let rows = [];
    let sortKey = options.sortKey || columns[0].key;
    let sortDir = options.sortDir || 1;
    let filter = () => true;
    const head = el("tr");
    const body = el("tbody");
    const tableNode = el("table", { class: "data" + (options.class ? " " + options.class : "") }, el("thead", {}, head), body);
    replace(container, tableNode);

    function drawHead() {
      replace(head, columns.map((c) => {
        const arrow = el("span", { class: "arrow", text: c.key === sortKey ? (sortDir > 0 ? "▲" : "▼") : "" });
        return el("th", {
          class: "sortable" + (c.num ? " num" : ""), dataset: { key: c.key },
          "aria-sort": c.key === sortKey ? (sortDir > 0 ? "ascending" : "descending") : "none",
          onclick: () => { if (sortKey === c.key) sortDir = -sortDir; else { sortKey = c.key; sortDir = 1; } draw(); },
        }, c.label, " ", arrow);
      }));
    }

    function compare(a, b) {
      const col = columns.find((c) => c.key === sortKey) || columns[0];
      const va = col.value(a);
      const vb = col.value(b);
      const na = typeof va === "number" ? va : NaN;
      const nb = typeof vb === "number" ? vb : NaN;
      if (!Number.isNaN(na) || !Number.isNaN(nb)) {
        if (Number.isNaN(na)) return 1; // missing values last in either direction
        if (Number.isNaN(nb)) return -1;
        return sortDir * (na - nb);
      }
      return sortDir * String(va ?? "").localeCompare(String(vb ?? ""), undefined, { numeric: true });
    }

    function draw() {
      drawHead();
      const shown = rows.filter(filter).sort(compare);
      if (!shown.length) {
        replace(body, el("tr", {}, el("td", { class: "empty", colspan: columns.length, text: rows.length ? "No rows match the filter." : (options.empty || "Nothing yet.") })));
        return;
      }
      replace(body, shown.map((row) => {
        const tr = el("tr", options.rowAttrs ? options.rowAttrs(row) : {});
        for (const c of columns) {
          const content = c.render ? c.render(row) : fmt(c.value(row));
          tr.append(el("td", { class: (c.num ? "num" : "") + (c.class ? " " + c.class : "") }, content));
        }
        return tr;
      }));
    }

    return {
      setRows(next) { rows = next; draw(); },
      setColumns(next) { columns = next; if (!columns.find((c) => c.key === sortKey)) sortKey = columns[0].key; draw(); },
      setFilter(fn) { filter = fn; draw(); },
      sortBy(key, dir) { sortKey = key; sortDir = dir || 1; draw(); },
    };
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  }

  const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  const PLOT_LAYOUT = {
    margin: { l: 56, r: 20, t: 16, b: 44 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    font: { family: "system-ui, sans-serif", size: 12, color: "#1d2330" },
    legend: { orientation: "h", y: 1.12, x: 0 },
  };

  /** Names in path segments (/ui/experiments/{ns}/{name}). */
  function pathParts() {
    return location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  }

  function markNav() {
    for (const a of document.querySelectorAll(".topbar nav a")) {
      if (a.getAttribute("href") === location.pathname) a.classList.add("active");
    }
  }
  document.addEventListener("DOMContentLoaded", markNav);

  return {
    el, append, replace, api, ApiError, problemsOf, poll, showError, num, fmt, time, duration, age,
    badge, progress, param, TERMINAL, lastCondition, objective, metricValue, assignments, trialTimes,
    yaml, table, debounce, PLOT_CONFIG, PLOT_LAYOUT, pathParts,
  };
})();
