/* Experiments list: polls GET /api/v1/experiments every 2 s; namespace and status filters. */
"use strict";

(() => {
  const { el, replace, api, poll, fmt, badge, progress, param } = K;
  const params = new URLSearchParams(location.search);
  const nsSelect = document.getElementById("filter-namespace");
  const statusSelect = document.getElementById("filter-status");
  const search = document.getElementById("filter-text");
  const summary = document.getElementById("summary");
  const namespaces = new Set(["default"]);
  if (params.get("namespace")) namespaces.add(params.get("namespace"));

  function fillNamespaces() {
    const current = nsSelect.value || params.get("namespace") || "";
    replace(nsSelect, el("option", { value: "", text: "all namespaces" }),
      [...namespaces].sort().map((ns) => el("option", { value: ns, text: ns })));
    nsSelect.value = current;
  }
  fillNamespaces();
  statusSelect.value = params.get("status") || "";
  search.value = params.get("q") || "";

  function done(t) {
    return (t.succeeded || 0) + (t.failed || 0) + (t.killed || 0) + (t.earlyStopped || 0) + (t.metricsUnavailable || 0);
  }

  const columns = [
    { key: "name", label: "Name", value: (x) => x.name, class: "name-cell",
      render: (x) => el("a", { href: `/ui/experiments/${encodeURIComponent(x.namespace)}/${encodeURIComponent(x.name)}`, class: "exp-link", text: x.name }) },
    { key: "namespace", label: "Namespace", value: (x) => x.namespace },
    { key: "algorithm", label: "Algorithm", value: (x) => x.algorithm || "" },
    { key: "status", label: "Status", value: (x) => x.status, render: (x) => badge(x.status) },
    { key: "trials", label: "Trials done/total", value: (x) => done(x.trials || {}),
      render: (x) => el("span", { class: "trials-cell" }, progress(done(x.trials || {}), x.maxTrialCount),
        (x.trials && x.trials.running) ? el("span", { class: "muted", text: ` · ${x.trials.running} running` }) : null) },
    { key: "best", label: "Best value", num: true, value: (x) => (x.best ? K.num(x.best.value) : NaN),
      render: (x) => el("span", { class: "best-value", title: x.objectiveMetricName ? `${x.objectiveType || ""} ${x.objectiveMetricName}` : null, text: x.best ? fmt(x.best.value) : "—" }) },
    { key: "bestParams", label: "Best parameters", value: (x) => (x.best ? JSON.stringify(x.best.parameters) : ""),
      render: (x) => el("span", { class: "params" }, x.best ? Object.entries(x.best.parameters || {}).map(([k, v]) => param(k, v)) : "—") },
    { key: "created", label: "Created", value: (x) => x.creationTimestamp || "",
      render: (x) => el("span", { title: K.time(x.creationTimestamp), text: K.age(x.creationTimestamp) + " ago" }) },
  ];
  const table = K.table(document.getElementById("experiments"), columns, {
    sortKey: "created", sortDir: -1,
    empty: "No experiments yet. Create one from YAML.",
    rowAttrs: (x) => ({ dataset: { experiment: `${x.namespace}/${x.name}`, status: x.status } }),
  });

  function textFilter() {
    const q = search.value.trim().toLowerCase();
    table.setFilter((x) => !q || `${x.name} ${x.namespace} ${x.algorithm}`.toLowerCase().includes(q));
  }

  function syncUrl() {
    const next = new URLSearchParams();
    if (nsSelect.value) next.set("namespace", nsSelect.value);
    if (statusSelect.value) next.set("status", statusSelect.value);
    if (search.value.trim()) next.set("q", search.value.trim());
    history.replaceState(null, "", next.toString() ? "?" + next : location.pathname);
  }

  async function refresh() {
    const query = new URLSearchParams();
    if (nsSelect.value) query.set("namespace", nsSelect.value);
    if (statusSelect.value) query.set("status", statusSelect.value);
    const data = await api("/api/v1/experiments" + (query.toString() ? "?" + query : ""));
    const items = data.items || [];
    let grew = false;
    for (const x of items) if (!namespaces.has(x.namespace)) { namespaces.add(x.namespace); grew = true; }
    if (grew) fillNamespaces();
    table.setRows(items);
    const running = items.filter((x) => x.status === "Running").length;
    summary.textContent = `${items.length} experiment${items.length === 1 ? "" : "s"}` + (running ? `, ${running} running` : "");
  }

  let poller = poll(refresh, 2000);
  function restart() { syncUrl(); poller.stop(); poller = poll(refresh, 2000); }
  nsSelect.addEventListener("change", restart);
  statusSelect.addEventListener("change", restart);
  search.addEventListener("input", () => { syncUrl(); textFilter(); });
  textFilter();
})();
