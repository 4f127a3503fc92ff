/* Experiment page: summary, plots (history, parallel coordinates, importance), trials, YAML. */
"use strict";

(() => {
  const { el, replace, api, poll, fmt, badge, progress, param } = K;
  const [, , ns, name] = K.pathParts();
  const base = `/api/v1/namespaces/${encodeURIComponent(ns)}/experiments/${encodeURIComponent(name)}`;
  const importanceUrl = `/ui/api/namespaces/${encodeURIComponent(ns)}/experiments/${encodeURIComponent(name)}/importance`;
  const $ = (id) => document.getElementById(id);
  document.title = `${name} · Experiment · Katib`;
  $("exp-name").textContent = name;
  replace($("crumbs"), el("a", { href: "/", text: "Experiments" }), " / ",
    el("a", { href: "/?namespace=" + encodeURIComponent(ns), text: ns }));

  let trialsTable = null;
  let lastPlotKey = "";
  let lastParallelKey = "";
  let parallelAt = 0;
  const PARALLEL_EVERY_MS = 8000;
  let lastImportanceKey = "";
  let lastYaml = "";

  function trialStatus(t) { return K.lastCondition(t); }

  /** The API lists trials in creation order (timestamps only have whole seconds). */
  function ordered(trials) {
    return trials;
  }

  function renderSummary(exp, trials) {
    const obj = K.objective(exp);
    const st = exp.status || {};
    const spec = exp.spec || {};
    const status = K.lastCondition(exp);
    replace($("exp-status"), badge(status));
    const done = trials.filter((t) => K.TERMINAL.has(trialStatus(t))).length;
    const running = trials.filter((t) => trialStatus(t) === "Running").length;
    const best = st.currentOptimalTrial || {};
    const bestMetric = ((best.observation || {}).metrics || []).find((m) => m.name === obj.metric);
    const bestValue = bestMetric ? (bestMetric[obj.strategies[obj.metric] || (obj.type === "maximize" ? "max" : "min")] ?? bestMetric.latest) : null;
    const card = (label, ...value) => el("div", { class: "card" }, el("div", { class: "label", text: label }), el("div", { class: "value" }, ...value));
    replace($("cards"),
      card("Algorithm", (spec.algorithm || {}).algorithmName || "—"),
      card("Objective", el("span", { class: "value small", text: `${obj.type} ${obj.metric}` + (obj.goal !== undefined && obj.goal !== null ? ` (goal ${fmt(obj.goal)})` : "") })),
      card("Trials", progress(done, spec.maxTrialCount), el("div", { class: "sub", text: `${running} running · parallel ${spec.parallelTrialCount ?? "?"} · max failed ${spec.maxFailedTrialCount ?? "—"}` })),
      card("Best value", el("span", { id: "best-value", text: best.bestTrialName && bestValue !== null ? fmt(bestValue) : "—" }),
        best.bestTrialName ? el("div", { class: "sub" }, el("a", { href: `/ui/trials/${encodeURIComponent(ns)}/${encodeURIComponent(best.bestTrialName)}`, text: best.bestTrialName })) : null),
      card("Started", el("span", { class: "value small", text: K.time(st.startTime) }),
        el("div", { class: "sub", text: st.completionTime ? "took " + K.duration(st.startTime, st.completionTime) : (st.startTime ? "running for " + K.duration(st.startTime) : "") })),
    );
    const assignments = best.parameterAssignments || [];
    replace($("best-params"), assignments.length
      ? [el("span", { class: "muted", text: "Best parameters: " }), ...assignments.map((a) => param(a.name, a.value))]
      : el("span", { class: "muted", text: "Couldn't find any successful trial yet." }));
    replace($("conditions"), el("ul", { class: "conditions" }, (st.conditions || []).map((c) =>
      el("li", {}, badge(c.type), c.status && c.status !== "True" ? el("span", { class: "muted", text: ` (${c.status})` }) : null,
        " ", el("strong", { text: c.reason || "" }), c.message ? el("div", { text: c.message }) : null,
        el("span", { class: "when", text: K.time(c.lastTransitionTime || c.lastUpdateTime) }))),
    ));
    if (!(st.conditions || []).length) replace($("conditions"), el("p", { class: "muted", text: "No conditions yet." }));
    const doc = { apiVersion: exp.apiVersion, kind: exp.kind, metadata: exp.metadata, spec: exp.spec };
    const text = K.yaml(doc);
    if (text !== lastYaml) { $("yaml").textContent = text; lastYaml = text; }
  }

  function parameterSpecs(exp, trials) {
    const specs = (exp.spec && exp.spec.parameters) || [];
    if (specs.length) return specs;
    const names = new Set();
    for (const t of trials) for (const n of Object.keys(K.assignments(t))) names.add(n);
    return [...names].map((n) => ({ name: n, parameterType: "unknown" }));
  }

  let lastTrialsKey = "";

  function renderTrials(exp, trials) {
    // Redraw only on change (durations of running trials tick, so those always redraw).
    const key = JSON.stringify([exp.spec, (exp.status || {}).currentOptimalTrial, trials]);
    if (key === lastTrialsKey && !trials.some((t) => trialStatus(t) === "Running")) return;
    lastTrialsKey = key;
    const obj = K.objective(exp);
    const extra = ((exp.spec && exp.spec.objective) || {}).additionalMetricNames || [];
    const specs = parameterSpecs(exp, trials);
    const bestName = ((exp.status || {}).currentOptimalTrial || {}).bestTrialName;
    const numeric = (s) => ["double", "int"].includes(s.parameterType);
    const columns = [
      { key: "name", label: "Trial", class: "name-cell", value: (t) => t.metadata.name,
        render: (t) => el("a", { href: `/ui/trials/${encodeURIComponent(ns)}/${encodeURIComponent(t.metadata.name)}`, text: t.metadata.name }) },
      { key: "status", label: "Status", value: trialStatus, render: (t) => badge(trialStatus(t)) },
      { key: "metric:" + obj.metric, label: obj.metric || "objective", num: true, value: (t) => K.metricValue(t, obj.metric, obj) },
      ...extra.map((m) => ({ key: "metric:" + m, label: m, num: true, value: (t) => K.metricValue(t, m, obj) })),
      ...specs.map((s) => ({ key: "param:" + s.name, label: s.name, num: numeric(s),
        value: (t) => { const v = K.assignments(t)[s.name]; return numeric(s) ? K.num(v) : (v ?? ""); },
        render: (t) => el("span", { class: "mono", text: K.assignments(t)[s.name] ?? "—" }) })),
      { key: "start", label: "Started", value: (t) => K.trialTimes(t).start || "", render: (t) => K.time(K.trialTimes(t).start) },
      { key: "duration", label: "Duration", num: true,
        value: (t) => { const x = K.trialTimes(t); return x.start ? (x.end ? new Date(x.end) : new Date()) - new Date(x.start) : NaN; },
        render: (t) => K.duration(K.trialTimes(t).start, K.trialTimes(t).end) },
    ];
    if (!trialsTable) {
      trialsTable = K.table($("trials"), columns, {
        sortKey: "start", sortDir: -1, empty: "No trials yet.",
        rowAttrs: (t) => ({ class: t.metadata.name === bestName ? "best" : null, dataset: { trial: t.metadata.name, status: trialStatus(t) } }),
      });
      const text = $("trial-filter");
      const status = $("trial-status");
      const apply = () => {
        const q = text.value.trim().toLowerCase();
        const s = status.value;
        trialsTable.setFilter((t) => (!s || trialStatus(t) === s) &&
          (!q || (t.metadata.name + " " + JSON.stringify(K.assignments(t))).toLowerCase().includes(q)));
      };
      text.addEventListener("input", apply);
      status.addEventListener("change", apply);
    } else {
      trialsTable.setColumns(columns);
    }
    trialsTable.setRows(trials);
    $("trial-count").textContent = `${trials.length} trial${trials.length === 1 ? "" : "s"}`;
  }

  function emptyPlot(node, text) {
    if (window.Plotly && node.classList.contains("js-plotly-plot")) Plotly.purge(node);
    replace(node, el("div", { class: "plot-empty", text }));
  }

  function renderHistory(exp, trials) {
    const obj = K.objective(exp);
    const node = $("plot-history");
    const points = ordered(trials).map((t, i) => ({ i: i + 1, t, v: K.metricValue(t, obj.metric, obj) }))
      .filter((p) => !Number.isNaN(p.v));
    if (!points.length) return emptyPlot(node, "No trial has reported the objective metric yet.");
    const better = obj.type === "maximize" ? Math.max : Math.min;
    let best = NaN;
    const bestSoFar = points.map((p) => (best = Number.isNaN(best) ? p.v : better(best, p.v)));
    const traces = [
      { type: "scatter", mode: "markers", name: obj.metric, x: points.map((p) => p.i), y: points.map((p) => p.v),
        text: points.map((p) => p.t.metadata.name), hovertemplate: "%{text}<br>trial #%{x}: %{y}<extra></extra>",
        marker: { size: 8, color: "#2f5bea", opacity: 0.75 } },
      { type: "scatter", mode: "lines", name: "best so far", x: points.map((p) => p.i), y: bestSoFar,
        line: { shape: "hv", color: "#e0522b", width: 2 }, hoverinfo: "skip" },
    ];
    const shapes = obj.goal !== undefined && obj.goal !== null ? [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: obj.goal, y1: obj.goal, line: { dash: "dot", color: "#14804a" } }] : [];
    if (node.querySelector(".plot-empty")) replace(node);
    Plotly.react(node, traces, Object.assign({}, K.PLOT_LAYOUT, {
      xaxis: { title: { text: "trial (creation order)" }, zeroline: false },
      yaxis: { title: { text: obj.metric }, zeroline: false }, shapes,
    }), K.PLOT_CONFIG);
  }

  function renderParallel(exp, trials) {
    const obj = K.objective(exp);
    const node = $("plot-parallel");
    const done = trials.filter((t) => !Number.isNaN(K.metricValue(t, obj.metric, obj)));
    if (!done.length) return emptyPlot(node, "The parallel coordinates appear once a trial has an objective value.");
    const dims = parameterSpecs(exp, trials).map((s) => {
      const raw = done.map((t) => K.assignments(t)[s.name]);
      const numbers = raw.map(K.num);
      if (s.parameterType !== "categorical" && numbers.every((n) => !Number.isNaN(n))) {
        return { label: s.name, values: numbers };
      }
      const cats = (s.feasibleSpace && s.feasibleSpace.list) || [...new Set(raw.map(String))];
      for (const r of raw) if (!cats.includes(String(r))) cats.push(String(r));
      return { label: s.name, values: raw.map((r) => cats.indexOf(String(r))), tickvals: cats.map((_, i) => i), ticktext: cats, range: [0, Math.max(cats.length - 1, 1)] };
    });
    const values = done.map((t) => K.metricValue(t, obj.metric, obj));
    dims.push({ label: obj.metric, values });
    if (node.querySelector(".plot-empty")) replace(node);
    Plotly.react(node, [{
      type: "parcoords", dimensions: dims,
      line: { color: values, colorscale: "Viridis", reversescale: obj.type === "minimize", showscale: true, colorbar: { title: { text: obj.metric }, thickness: 12 } },
      labelangle: 0, labelfont: { size: 12 }, tickfont: { size: 11 },
    }], Object.assign({}, K.PLOT_LAYOUT, { margin: { l: 60, r: 70, t: 40, b: 24 } }), K.PLOT_CONFIG);
  }

  async function renderImportance(exp, trials) {
    const node = $("plot-importance");
    const obj = K.objective(exp);
    const doneCount = trials.filter((t) => !Number.isNaN(K.metricValue(t, obj.metric, obj))).length;
    const key = String(doneCount);
    if (key === lastImportanceKey) return;
    lastImportanceKey = key;
    let data;
    try {
      data = await api(importanceUrl);
    } catch (err) {
      lastImportanceKey = "";
      return emptyPlot(node, "Parameter importance unavailable: " + err.message);
    }
    const entries = Object.entries(data.importances || {}).sort((a, b) => a[1] - b[1]);
    if (!data.available || !entries.length) return emptyPlot(node, data.reason || "Parameter importance needs more completed trials.");
    if (node.querySelector(".plot-empty")) replace(node);
    Plotly.react(node, [{
      type: "bar", orientation: "h", x: entries.map((e) => e[1]), y: entries.map((e) => e[0]),
      marker: { color: "#2f5bea" }, hovertemplate: "%{y}: %{x:.3f}<extra></extra>",
    }], Object.assign({}, K.PLOT_LAYOUT, {
      margin: { l: 110, r: 20, t: 16, b: 44 },
      xaxis: { title: { text: data.method ? `importance (${data.method})` : "importance" }, rangemode: "tozero" },
      yaxis: { automargin: true },
    }), K.PLOT_CONFIG);
  }

  async function refresh() {
    const [exp, trialList] = await Promise.all([api(base), api(base + "/trials")]);
    const trials = trialList.items || [];
    $("page-body").classList.remove("hidden"); // visible first: plotly sizes plots to their box
    renderSummary(exp, trials);
    renderTrials(exp, trials);
    const obj = K.objective(exp);
    const status = K.lastCondition(exp);
    const finished = status === "Succeeded" || status === "Failed";
    const plotKey = JSON.stringify(trials.map((t) => [t.metadata.name, trialStatus(t), K.metricValue(t, obj.metric, obj)]));
    if (plotKey !== lastPlotKey) {
      lastPlotKey = plotKey;
      renderHistory(exp, trials);
    }
    const importance = renderImportance(exp, trials);
    // parcoords draws with WebGL, which costs seconds without a GPU: after the other plots
    // have painted, and while trials run at most every PARALLEL_EVERY_MS.
    if (plotKey !== lastParallelKey && (finished || Date.now() - parallelAt > PARALLEL_EVERY_MS)) {
      lastParallelKey = plotKey;
      parallelAt = Date.now();
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
      renderParallel(exp, trials);
    }
    await importance;
    return !finished || plotKey !== lastParallelKey;
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
