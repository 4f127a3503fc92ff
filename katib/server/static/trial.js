/* Trial page: parameters, metrics, metric curves from the observation log, logs (live while running). */
"use strict";

(() => {
  const { el, replace, api, poll, fmt, badge } = K;
  const [, , ns, name] = K.pathParts();
  const base = `/api/v1/namespaces/${encodeURIComponent(ns)}/trials/${encodeURIComponent(name)}`;
  const $ = (id) => document.getElementById(id);
  const LOG_TAIL = 1000;
  document.title = `${name} · Trial · Katib`;
  $("trial-name").textContent = name;
  let lastCurveKey = "";
  let lastLogs = null;

  function experimentOf(trial) {
    const labels = (trial.metadata || {}).labels || {};
    if (labels["katib.kubeflow.org/experiment"]) return labels["katib.kubeflow.org/experiment"];
    const owner = ((trial.metadata || {}).ownerReferences || []).find((o) => o.kind === "Experiment");
    return owner ? owner.name : null;
  }

  function renderTrial(trial) {
    const status = K.lastCondition(trial);
    const exp = experimentOf(trial);
    replace($("crumbs"), el("a", { href: "/", text: "Experiments" }), " / ",
      el("a", { href: "/?namespace=" + encodeURIComponent(ns), text: ns }),
      exp ? [" / ", el("a", { href: `/ui/experiments/${encodeURIComponent(ns)}/${encodeURIComponent(exp)}`, text: exp })] : null);
    replace($("trial-status"), badge(status));
    const times = K.trialTimes(trial);
    const spec = trial.spec || {};
    const obj = spec.objective || {};
    replace($("overview"), el("dl", { class: "kv" },
      el("dt", { text: "Experiment" }), el("dd", { text: exp || "—" }),
      el("dt", { text: "Objective" }), el("dd", { text: `${obj.type || ""} ${obj.objectiveMetricName || ""}`.trim() || "—" }),
      el("dt", { text: "Created" }), el("dd", { text: K.time(times.created) }),
      el("dt", { text: "Started" }), el("dd", { text: K.time(times.start) }),
      el("dt", { text: "Completed" }), el("dd", { text: K.time(times.end) }),
      el("dt", { text: "Duration" }), el("dd", { text: K.duration(times.start, times.end) }),
    ));
    const assignments = spec.parameterAssignments || [];
    replace($("parameters"), assignments.length ? el("table", { class: "data", id: "param-table" },
      el("thead", {}, el("tr", {}, el("th", { text: "Parameter" }), el("th", { text: "Value" }))),
      el("tbody", {}, assignments.map((a) => el("tr", {}, el("td", { text: a.name }), el("td", { class: "mono", text: a.value }))))) :
      el("p", { class: "muted", text: "No parameters." }));
    const metrics = ((trial.status || {}).observation || {}).metrics || [];
    replace($("metrics"), metrics.length ? el("table", { class: "data" },
      el("thead", {}, el("tr", {}, ["Metric", "Latest", "Min", "Max"].map((h, i) => el("th", { class: i ? "num" : null, text: h })))),
      el("tbody", {}, metrics.map((m) => el("tr", {}, el("td", { text: m.name }),
        el("td", { class: "num", text: fmt(m.latest) }), el("td", { class: "num", text: fmt(m.min) }), el("td", { class: "num", text: fmt(m.max) })))))
      : el("p", { class: "muted", text: "No metrics reported yet." }));
    replace($("conditions"), el("ul", { class: "conditions" }, ((trial.status || {}).conditions || []).map((c) =>
      el("li", {}, badge(c.type), " ", el("strong", { text: c.reason || "" }), c.message ? el("div", { text: c.message }) : null,
        el("span", { class: "when", text: K.time(c.lastTransitionTime || c.lastUpdateTime) })))));
    return status;
  }

  function renderCurves(items) {
    const node = $("plot-metrics");
    const key = String(items.length) + (items.length ? JSON.stringify(items[items.length - 1]) : "");
    if (key === lastCurveKey) return;
    lastCurveKey = key;
    const byMetric = new Map();
    for (const o of items) {
      const v = K.num(o.value);
      if (Number.isNaN(v)) continue;
      if (!byMetric.has(o.metricName)) byMetric.set(o.metricName, []);
      byMetric.get(o.metricName).push(o);
    }
    if (!byMetric.size) {
      if (window.Plotly && node.classList.contains("js-plotly-plot")) Plotly.purge(node);
      replace(node, el("div", { class: "plot-empty", text: "No observations yet." }));
      return;
    }
    const useSteps = items.every((o) => o.step !== undefined && o.step !== null && o.step !== "");
    const traces = [...byMetric.entries()].map(([metric, obs], i) => ({
      type: "scatter", mode: obs.length > 60 ? "lines" : "lines+markers", name: metric,
      x: obs.map((o, j) => (useSteps ? Number(o.step) : (o.timestamp ? new Date(o.timestamp) : j))),
      y: obs.map((o) => K.num(o.value)), yaxis: i === 0 ? "y" : "y2",
    }));
    if (node.querySelector(".plot-empty")) replace(node);
    const layout = Object.assign({}, K.PLOT_LAYOUT, {
      xaxis: { title: { text: useSteps ? "step" : "time" } },
      yaxis: { title: { text: traces[0].name } },
    });
    if (traces.length > 1) {
      layout.yaxis2 = { overlaying: "y", side: "right", title: { text: traces.slice(1).map((t) => t.name).join(", ") } };
      layout.margin = Object.assign({}, layout.margin, { r: 60 });
    }
    Plotly.react(node, traces, layout, K.PLOT_CONFIG);
  }

  function renderLogs(text) {
    if (text === lastLogs) return;
    lastLogs = text;
    const pre = $("logs");
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    pre.textContent = text || "(no output yet)";
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  async function refresh() {
    const trial = await api(base);
    $("page-body").classList.remove("hidden"); // visible first: plotly sizes plots to their box
    const status = renderTrial(trial);
    const [obs, logs] = await Promise.all([
      api(base + "/observations").catch((err) => ({ items: [], error: err })),
      api(base + "/logs?tail=" + LOG_TAIL).catch((err) => "(logs unavailable: " + err.message + ")"),
    ]);
    renderCurves(obs.items || []);
    renderLogs(typeof logs === "string" ? logs : JSON.stringify(logs, null, 2));
    return !K.TERMINAL.has(status);
  }

  poll(async () => {
    try {
      return await refresh();
    } catch (err) {
      if (err instanceof K.ApiError && err.status === 404) K.showError($("page-error"), err);
      throw err;
    }
  }, 2000);
})();
