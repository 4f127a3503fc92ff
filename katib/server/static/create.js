/* Create page: paste or upload YAML, validate inline (POST ?dryRun=true), then submit. */
"use strict";

(() => {
  const { el, replace, api } = K;
  const $ = (id) => document.getElementById(id);
  const editor = $("yaml-input");
  const result = $("validation");
  const submit = $("submit");
  let generation = 0;
  let valid = false;

  async function post(dryRun) {
    return api("/api/v1/experiments" + (dryRun ? "?dryRun=true" : ""), {
      method: "POST", headers: { "Content-Type": "application/yaml" }, body: editor.value,
    });
  }

  function lineStart(text, line) {
    let pos = 0;
    for (let i = 1; i < line && pos !== -1; i++) pos = text.indexOf("\n", pos) + (pos === -1 ? 0 : 1);
    return Math.max(0, pos);
  }

  function jumpTo(line) {
    const text = editor.value;
    const start = lineStart(text, line);
    const end = text.indexOf("\n", start);
    editor.focus();
    editor.setSelectionRange(start, end === -1 ? text.length : end);
    const lineHeight = parseFloat(getComputedStyle(editor).lineHeight) || 19;
    editor.scrollTop = Math.max(0, (line - 4) * lineHeight);
  }

  function showProblems(problems, heading) {
    valid = false;
    submit.disabled = true;
    replace(result,
      el("div", { class: "notice error", id: "validation-summary", text: heading }),
      el("ul", { class: "problems", id: "problems" }, problems.map((p) => el("li", {
        dataset: { path: p.path || "", line: p.line ?? "" }, title: p.line ? "Go to line " + p.line : null,
        onclick: () => { if (p.line) jumpTo(p.line); },
      }, el("span", { class: "where", text: [p.line ? "line " + p.line : null, p.path || null].filter(Boolean).join(" · ") || "document" }),
      el("span", { class: "message", text: p.message })))));
  }

  function describe(exp) {
    const spec = exp.spec || {};
    const meta = exp.metadata || {};
    return el("dl", { class: "kv" },
      el("dt", { text: "Name" }), el("dd", { text: meta.name || "" }),
      el("dt", { text: "Namespace" }), el("dd", { text: meta.namespace || "default" }),
      el("dt", { text: "Algorithm" }), el("dd", { text: (spec.algorithm || {}).algorithmName || "" }),
      el("dt", { text: "Objective" }), el("dd", { text: `${(spec.objective || {}).type || ""} ${(spec.objective || {}).objectiveMetricName || ""}` }),
      el("dt", { text: "Parameters" }), el("dd", { text: (spec.parameters || []).map((p) => p.name).join(", ") || "—" }),
      el("dt", { text: "Trials" }), el("dd", { text: `${spec.maxTrialCount ?? "?"} (${spec.parallelTrialCount ?? "?"} in parallel)` }));
  }

  async function validate() {
    const mine = ++generation;
    if (!editor.value.trim()) {
      valid = false;
      submit.disabled = true;
      replace(result, el("p", { class: "muted", text: "Paste an Experiment (YAML or JSON) or upload a file." }));
      return;
    }
    replace(result, el("p", { class: "muted", text: "Validating…" }));
    try {
      const exp = await post(true);
      if (mine !== generation) return;
      valid = true;
      submit.disabled = false;
      replace(result, el("div", { class: "notice ok", id: "validation-summary", text: "Valid. Ready to create:" }), describe(exp));
    } catch (err) {
      if (mine !== generation) return;
      if (err instanceof K.ApiError && err.problems.length) {
        const n = err.problems.length;
        showProblems(err.problems, `${n} problem${n === 1 ? "" : "s"} (${err.status === 409 ? "conflict" : "not created"}):`);
      } else {
        showProblems([{ path: "", message: err.message, line: null }], "Could not validate:");
      }
    }
  }

  const later = K.debounce(validate, 500);
  editor.addEventListener("input", () => { submit.disabled = true; $("file-name").textContent = ""; later(); });
  $("validate").addEventListener("click", validate);
  $("file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    editor.value = await file.text();
    $("file-name").textContent = file.name;
    validate();
  });
  $("example").addEventListener("click", async () => {
    const response = await fetch("/ui/static/example.yaml", { credentials: "same-origin" });
    editor.value = await response.text();
    validate();
  });
  $("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!valid) return validate();
    submit.disabled = true;
    try {
      const exp = await post(false);
      const meta = exp.metadata || {};
      location.assign(`/ui/experiments/${encodeURIComponent(meta.namespace || "default")}/${encodeURIComponent(meta.name)}`);
    } catch (err) {
      if (err instanceof K.ApiError && err.problems.length) showProblems(err.problems, err.status === 409 ? "Already exists:" : "Not created:");
      else showProblems([{ path: "", message: err.message, line: null }], "Not created:");
    }
  });
  validate();
})();
