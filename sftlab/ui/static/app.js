// sftlab ui: every page reads the JSON API; nothing here holds state a refresh would lose.
"use strict";
const T = JSON.parse(document.getElementById("texts").textContent);
const $ = (sel, root) => (root || document).querySelector(sel);
const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

function runPath(id) { return id.split("/").map(encodeURIComponent).join("/"); }

async function api(method, url, body, raw) {
  const init = {method, headers: {}};
  if (body !== undefined) {
    init.body = raw ? body : JSON.stringify(body);
    init.headers["Content-Type"] = raw ? "application/octet-stream" : "application/json";
  }
  const res = await fetch(url, init);
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const err = new Error((data && data.error && data.error.message) || res.statusText);
    err.field = data && data.error && data.error.field;
    err.status = res.status;
    throw err;
  }
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) {
    if (k === "class") e.className = attrs[k];
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), attrs[k]);
    else if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) e.setAttribute(k, attrs[k]);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "";
  s = Math.round(s);
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function fmtDate(ts) { return ts ? new Date(ts * 1000).toLocaleString() : ""; }
function fmtLoss(v) { return v === null || v === undefined ? "—" : v.toFixed(4); }
function statusBadge(status) { return el("span", {class: "badge", "data-status": status}, T[status] || status); }

function fitFrame(frame) {
  frame.addEventListener("load", () => {
    try { frame.style.height = (frame.contentDocument.documentElement.scrollHeight + 24) + "px"; } catch (e) { /* */ }
  });
}

function setBusy(on) { const b = $("#busy"); if (b) b.hidden = !on; $$("button").forEach(x => { if (x.closest("form, .actions")) x.disabled = on; }); }

async function uploadInto(input, done) {
  const file = input.files[0];
  if (!file) return;
  const note = $("#upload-note");
  note.textContent = T.working;
  try {
    const r = await api("POST", "/api/upload?name=" + encodeURIComponent(file.name), file, true);
    note.textContent = r.path;
    done(r.path);
  } catch (e) { note.textContent = e.message; }
}

// ---- Runs ------------------------------------------------------------------------------------------------
function pageRuns() {
  const ticked = new Set(JSON.parse(sessionStorage.getItem("compare") || "[]"));
  const cache = {};
  async function drawCompare() {
    const series = [];
    let k = 0;
    for (const id of ticked) {
      try {
        if (!cache[id] || cache[id].status !== "finished") cache[id] = await api("GET", "/api/runs/" + runPath(id));
      } catch (e) { continue; }
      series.push({name: id, color: COLORS[k++ % COLORS.length],
                   points: cache[id].metrics.filter(r => r.loss !== undefined).map(r => [r.step, r.loss])});
    }
    lineChart($("#compare-chart"), series, {empty: T.compare_hint});
  }
  async function load() {
    let data;
    try { data = await api("GET", "/api/runs"); } catch (e) { return; }
    const body = $("#runs tbody");
    body.textContent = "";
    $("#no-runs").hidden = data.runs.length > 0;
    for (const r of data.runs) {
      const box = el("input", {type: "checkbox", "data-id": r.id, checked: ticked.has(r.id),
        onchange: ev => { ev.target.checked ? ticked.add(r.id) : ticked.delete(r.id);
                          sessionStorage.setItem("compare", JSON.stringify([...ticked])); drawCompare(); }});
      const steps = r.steps === null ? "—" : r.steps + "/" + (r.total_steps === null ? "?" : r.total_steps);
      const status = el("td", {}, statusBadge(r.status));
      if (r.error) status.append(el("div", {class: "err"}, r.error));
      body.append(el("tr", {"data-id": r.id}, el("td", {}, box), el("td", {}, el("a", {href: "/runs/" + runPath(r.id)}, r.id)),
        status, el("td", {}, r.model), el("td", {}, r.method), el("td", {}, steps), el("td", {}, fmtLoss(r.last_loss)),
        el("td", {}, r.status === "queued" ? T.queued : fmtDate(r.started))));
    }
  }
  load().then(drawCompare);
  setInterval(load, 3000);
  setInterval(() => { if ([...ticked].some(id => !cache[id] || cache[id].status !== "finished")) drawCompare(); }, 5000);
}

// ---- New run -------------------------------------------------------------------------------------------
function pageNew() {
  const files = JSON.parse($("#files").textContent);
  const form = JSON.parse($("#form-data").textContent);
  const pickers = [];  // every data picker, so an upload shows up in each

  function dataPicker(path) {
    // The data picker: files under the UI's folders that read as data (a run's own file is kept when it is not).
    const select = el("select", {class: "path wide", "data-picker": "data"});
    for (const f of (path && !files.includes(path) ? [path] : []).concat(files)) select.append(el("option", {value: f}, f));
    if (path) select.value = path;
    pickers.push(select);
    return select;
  }
  function addRow(box, spec) {
    spec = spec || {};
    const weight = el("input", {type: "number", class: "weight", step: "any", min: "0", placeholder: T.weight});
    if (spec.weight !== null && spec.weight !== undefined) weight.value = spec.weight;
    const format = el("select", {class: "format"});
    for (const f of ["", ...form.formats]) format.append(el("option", {value: f}, f || T.format_detected));
    format.value = spec.format || "";
    // The file's own column, turn-key and role names, as the YAML of a datasets entry's columns/message_keys/roles.
    const names = el("input", {type: "text", class: "names", placeholder: T.names});
    names.value = spec.names || "";
    const row = el("div", {class: "ds-row"}, dataPicker(spec.path || (files.length ? files[0] : "")), format, weight,
      names, el("button", {type: "button", class: "small", onclick: () => row.remove()}, T.remove));
    $(".ds-rows", box).append(row);
    return row;
  }
  for (const box of $$(".datasets")) {
    const given = form.values[box.dataset.name];
    if (given && given.length) given.forEach(spec => addRow(box, spec));
    else if (box.dataset.name === "datasets") addRow(box);
    $(".ds-add", box).addEventListener("click", () => addRow(box));
  }
  $("#upload").addEventListener("change", ev => uploadInto(ev.target, path => {
    files.push(path);
    for (const p of pickers) if (![...p.options].some(o => o.value === path)) p.append(el("option", {value: path}, path));
    const first = $(".datasets[data-name=datasets] .ds-row select.path");
    if (first) first.value = path; else addRow($(".datasets[data-name=datasets]"), {path});
  }));

  // The method's own defaults, beside it: what it sets when the form leaves those keys empty.
  const method = $("select[name=method]"), lr = $("input[name=learning_rate]");
  function showMethod() {
    const d = form.method_defaults[method.value] || {};
    const shown = Object.entries(d).filter(([k]) => k !== "adapter").map(([k, v]) => k + " " + v);
    $("#method-defaults").textContent = T.method_defaults.replace("{0}", method.value) + ": " + shown.join(" · ");
    if (lr) lr.placeholder = d.learning_rate;
  }
  if (method) { method.addEventListener("change", showMethod); showMethod(); }

  const value = input => input.type === "checkbox" ? input.checked : input.value;
  // A form filled in from a run sends every value it shows; a fresh one only what the user changed.
  const initial = form.from ? new Map() : new Map($$("[data-kind]").filter(i => i.name).map(i => [i.name, value(i)]));

  function collect() {
    const config = {}, yaml = {};
    for (const input of $$("[data-kind]")) {
      const kind = input.dataset.kind;
      if (kind === "datasets") {
        const specs = $$(".ds-row", input).map(r => {
          const path = $(".path", r).value.trim(), w = $("input.weight", r).value;
          const format = $("select.format", r).value, names = $("input.names", r).value.trim();
          if (!path) return null;
          const spec = {path};
          if (format) spec.format = format;
          if (w !== "") spec.weight = Number(w);
          if (names) spec.names = names;
          return spec;
        }).filter(Boolean);
        if (specs.length || input.dataset.name === "datasets") config[input.dataset.name] = specs;
        continue;
      }
      const v = value(input);
      if (input.name !== "model" && v === initial.get(input.name)) continue;  // the default: left to TrainConfig
      if (kind === "bool") config[input.name] = v;
      else if (v === "") continue;
      else if (kind === "int" || kind === "float") config[input.name] = Number(v);
      else if (kind === "yaml") yaml[input.name] = v;
      else config[input.name] = v;
    }
    const name = $("input[name=__name]").value.trim();
    return Object.assign({config, yaml}, name ? {name} : {});
  }

  function clearErrors() {
    $$(".field.invalid").forEach(f => f.classList.remove("invalid"));
    $$(".error").forEach(e => { e.hidden = true; e.textContent = ""; });
  }
  function showError(e) {
    const field = e.field && $(`.field[data-field="${e.field}"]`);
    const target = field ? $(".error", field) : $("#form-error");
    const group = field && field.closest("details");
    if (group) group.open = true;  // a key folded away: its group opens to show the sentence
    if (field) field.classList.add("invalid");
    target.textContent = e.message;
    target.hidden = false;
    (field || target).scrollIntoView({block: "center"});
  }
  async function act(fn) {
    clearErrors();
    setBusy(true);
    try { await fn(); } catch (e) { showError(e); } finally { setBusy(false); }
  }
  $("#preview-yaml").addEventListener("click", () => act(async () => {
    const r = await api("POST", "/api/config/yaml", collect());
    $("#yaml-out pre").textContent = r.yaml;
    $("#yaml-out").hidden = false;
    $("#yaml-out").scrollIntoView();
  }));
  const frame = $("#preview-frame");
  fitFrame(frame);
  $("#preview-data").addEventListener("click", () => act(async () => {
    const r = await api("POST", "/api/preview", collect());
    frame.srcdoc = r.html;
    $("#preview-note").textContent = Object.entries(r.summary).map(([k, v]) => k + ": " + v).join(" · ");
    const body = $("#preview-rows tbody");
    body.textContent = "";
    const rows = [...r.report.rejected_rows, ...r.report.dropped_rows, ...(r.report.cleaned_rows || []).map(c => (
      {source: c.source, row: c.row, reason: c.reasons.map(x => x.check).join(", ")}))];
    if (!rows.length) body.append(el("tr", {}, el("td", {colspan: 3, class: "muted"}, T.none)));
    for (const d of rows) body.append(el("tr", {}, el("td", {}, d.source), el("td", {}, d.row), el("td", {}, d.reason)));
    $("#preview-out").hidden = false;
    $("#preview-out").scrollIntoView();
  }));
  $("#start").addEventListener("click", () => act(async () => {
    const r = await api("POST", "/api/runs", collect());
    location.href = "/runs/" + runPath(r.id);
  }));
}

// ---- Run page ----------------------------------------------------------------------------------------------
function reportTable(report) {
  const box = el("div");
  if (!report) { box.append(el("p", {class: "muted"}, T.waiting)); return box; }
  const keys = ["rows_read", "converted", "rejected", "dropped", "cleaned", "examples", "tokens", "trained_tokens",
                "trained_token_fraction", "truncated", "split_conversations", "train_examples", "eval_examples", "packing_efficiency"];
  const grid = el("div", {class: "report-grid"});
  for (const k of keys) {
    let v = report[k];
    if (v === null || v === undefined) continue;
    if (k === "trained_token_fraction" || k === "packing_efficiency") v = (100 * v).toFixed(1) + "%";
    grid.append(el("div", {}, el("b", {}, v), el("span", {class: "muted small"}, k)));
  }
  box.append(grid);
  const rows = [...(report.rejected_rows || []), ...(report.dropped_rows || [])];
  if (rows.length) {
    const t = el("table", {class: "rows"}, el("thead", {}, el("tr", {}, el("th", {}, T.file), el("th", {}, T.row), el("th", {}, T.reason))));
    const body = el("tbody");
    for (const d of rows.slice(0, 200)) body.append(el("tr", {}, el("td", {}, d.source), el("td", {}, d.row), el("td", {}, d.reason)));
    t.append(body);
    box.append(el("h2", {}, T.rejected_rows), t);
  }
  return box;
}

function pageRun() {
  const run = JSON.parse($("#run-data").textContent);
  const id = run.id;
  const metrics = new Map(run.metrics.map(r => [r.step, r]));
  let source = null, poll = null, drawPending = false, lastStatus = run;

  function draw() {
    drawPending = false;
    const rs = [...metrics.values()].sort((a, b) => a.step - b.step);
    const s = key => rs.filter(r => r[key] !== undefined && r[key] !== null).map(r => [r.step, r[key]]);
    lineChart($("#chart-loss"), [{name: "loss", color: COLORS[0], points: s("loss")},
                                 {name: "eval_loss", color: COLORS[1], points: s("eval_loss"), dashed: true}], {empty: T.waiting});
    lineChart($("#chart-lr"), [{name: "learning_rate", color: COLORS[2], points: s("learning_rate")}], {empty: T.waiting});
    lineChart($("#chart-grad"), [{name: "grad_norm", color: COLORS[3], points: s("grad_norm")}], {empty: T.waiting});
    lineChart($("#chart-tps"), [{name: "tokens/s", color: COLORS[4], points: s("tokens_per_second")}], {empty: T.waiting});
  }
  const redraw = () => { if (!drawPending) { drawPending = true; requestAnimationFrame(draw); } };

  function showStatus(st) {
    lastStatus = st;
    const badge = $("#status");
    badge.dataset.status = st.status;
    badge.textContent = T[st.status] || st.status;
    $("#run-error").hidden = !st.error;
    $("#run-error").textContent = st.error || "";
    const total = st.total_steps, steps = st.steps || 0;
    $("#bar-fill").style.width = total ? Math.min(100, 100 * steps / total) + "%" : (st.status === "finished" ? "100%" : "0");
    $("#progress-text").textContent = `${T.steps}: ${st.steps === null || st.steps === undefined ? "—" : steps}/${total || "?"} · ${T.last_loss}: ${fmtLoss(st.last_loss)}`;
    $("#eta").textContent = st.status === "running" && st.eta_seconds ? T.eta.replace("{0}", fmtDuration(st.eta_seconds)) : "";
    $("#stop").disabled = !(st.status === "running" || st.status === "queued");
    $("#resume").disabled = !(st.status === "stopped" || st.status === "failed");
  }
  async function loadReport() {
    try { const d = await api("GET", "/api/runs/" + runPath(id)); $("#report").replaceChildren(reportTable(d.data_report)); } catch (e) { /* */ }
  }
  function connect() {
    if (source) source.close();
    if (poll) { clearInterval(poll); poll = null; }
    const last = Math.max(0, ...metrics.keys());
    source = new EventSource(`/api/runs/${runPath(id)}/events?after=${last}`);
    source.addEventListener("metric", ev => { const r = JSON.parse(ev.data); metrics.set(r.step, r); redraw(); });
    source.addEventListener("reset", () => { metrics.clear(); redraw(); });
    source.addEventListener("status", ev => {
      const st = JSON.parse(ev.data);
      if (st.has_report && !$("#report .report-grid")) loadReport();
      showStatus(st);
    });
    source.addEventListener("log", ev => { const pre = $("#log"); pre.textContent = JSON.parse(ev.data).log; pre.scrollTop = pre.scrollHeight; });
    source.addEventListener("end", () => {
      source.close(); source = null;
      // A finished, failed or stopped run can be resumed elsewhere (another tab, the CLI): look now and then.
      poll = setInterval(async () => {
        try { const d = await api("GET", "/api/runs/" + runPath(id));
              if (d.status === "running" || d.status === "queued") connect(); } catch (e) { /* */ }
      }, 4000);
    });
  }
  $("#stop").addEventListener("click", async () => {
    try { const r = await api("POST", `/api/runs/${runPath(id)}/stop`);
          showStatus(Object.assign({}, lastStatus, {status: r.status})); } catch (e) { alert(e.message); }
  });
  $("#resume").addEventListener("click", async () => {
    try { await api("POST", `/api/runs/${runPath(id)}/resume`); connect(); } catch (e) { alert(e.message); }
  });
  showStatus(run);
  $("#report").replaceChildren(reportTable(run.data_report));
  draw();
  connect();
  window.addEventListener("resize", redraw);
}

// ---- Data --------------------------------------------------------------------------------------------------
function pageData() {
  const frame = $("#check-frame");
  fitFrame(frame);
  $("#upload").addEventListener("change", ev => uploadInto(ev.target, path => {
    const select = $("#data-path");
    select.append(el("option", {value: path}, path));
    select.value = path;
  }));
  $("#check-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = ev.target;
    $("#check-error").hidden = true;
    setBusy(true);
    try {
      const r = await api("POST", "/api/data/check", {path: f.path.value, model: f.model.value, template: f.template.value,
        format: f.format.value, max_length: Number(f.max_length.value), clusters: f.clusters.checked});
      frame.srcdoc = r.html;
      $("#check-out").hidden = false;
    } catch (e) { $("#check-error").textContent = e.message; $("#check-error").hidden = false; }
    finally { setBusy(false); }
  });
}

// ---- Chat --------------------------------------------------------------------------------------------------
async function streamAnswer(body, bubble) {
  const res = await fetch("/api/chat", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  if (!res.ok) {
    let m = res.statusText; try { m = (await res.json()).error.message; } catch (e) { /* */ }
    throw new Error(m);
  }
  const reader = res.body.getReader(), decoder = new TextDecoder();
  let buffer = "", text = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data:")) continue;
      const msg = JSON.parse(line.slice(5));
      if (msg.error) throw new Error(msg.error);
      if (msg.text) { text += msg.text; bubble.textContent = text; }
    }
  }
  return text;
}

function pageChat() {
  const sides = {a: [], b: []};
  const title = () => {
    $("#title-a").textContent = $("#model-a").value || "smollm2-135m-instruct";
    $("#title-b").textContent = $("#model-b").value || "—";
    $("#side-b").style.opacity = $("#model-b").value ? 1 : 0.5;
  };
  $("#model-a").addEventListener("change", title);
  $("#model-b").addEventListener("change", title);
  title();
  $("#clear").addEventListener("click", () => { sides.a = []; sides.b = []; $("#chat-a").textContent = ""; $("#chat-b").textContent = ""; });
  $("#chat-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const text = $("#message").value.trim();
    if (!text) return;
    $("#message").value = "";
    $("#send").disabled = true;
    const jobs = [];
    for (const side of ["a", "b"]) {
      const model = $("#model-" + side).value.trim();
      if (side === "b" && !model) continue;
      const box = $("#chat-" + side);
      sides[side].push({role: "user", content: text});
      box.append(el("div", {class: "msg user"}, text));
      const bubble = el("div", {class: "msg assistant"}, "…");
      box.append(bubble);
      const body = {model: model || "smollm2-135m-instruct", messages: sides[side], system: $("#system").value,
                    temperature: $("#temperature").value === "" ? null : Number($("#temperature").value), max_new_tokens: Number($("#max-new").value)};
      jobs.push(streamAnswer(body, bubble).then(answer => { sides[side].push({role: "assistant", content: answer}); box.scrollTop = box.scrollHeight; },
        e => { bubble.className = "msg error"; bubble.textContent = e.message; sides[side].pop(); }));
    }
    await Promise.all(jobs);
    $("#send").disabled = false;
  });
}

// ---- Eval --------------------------------------------------------------------------------------------------
// The state of a run's eval or export (`/api/runs/RUN/WHAT`), rendered now and every 2 s while it is running.
function pollRun(form, what, render) {
  let timer = null;
  async function load() {
    const id = form.run.value;
    if (!id) return;
    try {
      const d = await api("GET", `/api/runs/${runPath(id)}/${what}`);
      render(d);
      if (d.status !== "running" && timer) { clearInterval(timer); timer = null; }
      if (d.status === "running" && !timer) timer = setInterval(load, 2000);
    } catch (e) { /* */ }
  }
  return load;
}

function pageEval() {
  const form = $("#eval-form");
  const metricKeys = ["loss", "perplexity", "exact_match", "rouge_l", "bleu"];
  const fmt = v => typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(4)) : (v === null || v === undefined ? "—" : v);
  function render(d) {
    const status = $("#eval-status");
    status.dataset.status = d.status;
    status.textContent = d.status === "none" ? "" : (T[d.status] || d.status);
    $("#eval-error").hidden = !d.error; $("#eval-error").textContent = d.error || "";
    $("#eval-log").textContent = d.log || "";
    const s = d.summary;
    $("#eval-summary").hidden = !s;
    $("#eval-responses").hidden = !d.responses.length;
    if (s) {
      const cols = [s].concat(s.baseline ? [s.baseline] : []);
      $("#eval-summary thead").replaceChildren(el("tr", {}, el("th", {}, T.metric), ...cols.map(c => el("th", {}, c.model))));
      const rows = metricKeys.map(k => el("tr", {}, el("td", {}, k), ...cols.map(c => el("td", {}, fmt(c[k])))));
      if (s.judge) for (const k of ["mean", "median", "scored"]) rows.push(el("tr", {}, el("td", {}, "judge " + k), ...cols.map(c => el("td", {}, fmt((c.judge || {})[k])))));
      $("#eval-summary tbody").replaceChildren(...rows);
    }
    const base = new Map(d.baseline_responses.map(r => [r.row + "|" + r.source, r]));
    const head = [T.prompt, T.reference, T.response].concat(d.baseline_responses.length ? ["baseline"] : [], d.responses.some(r => r.judge_score !== undefined) ? [T.score] : []);
    $("#eval-responses thead").replaceChildren(el("tr", {}, ...head.map(h => el("th", {}, h))));
    $("#eval-responses tbody").replaceChildren(...d.responses.map(r => {
      const b = base.get(r.row + "|" + r.source);
      return el("tr", {}, el("td", {class: "text"}, r.prompt), el("td", {class: "text"}, r.reference), el("td", {class: "text"}, r.response),
        d.baseline_responses.length ? el("td", {class: "text"}, b ? b.response : "") : null,
        r.judge_score !== undefined ? el("td", {}, fmt(r.judge_score)) : null);
    }));
  }
  const load = pollRun(form, "eval", render);
  form.run && form.run.addEventListener("change", load);
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    $("#eval-error").hidden = true;
    try {
      await api("POST", `/api/runs/${runPath(form.run.value)}/eval`, {data: form.data.value, baseline: form.baseline.value,
        limit: Number(form.limit.value) || null, max_new_tokens: Number(form.max_new_tokens.value),
        judge_url: form.judge_url.value, judge_model: form.judge_model.value});
      load();
    } catch (e) { $("#eval-error").textContent = e.message; $("#eval-error").hidden = false; }
  });
  load();
}

// ---- Export (only where `sftlab export` exists) -----------------------------------------------------------
function pageExport() {
  const form = $("#export-form");
  function render(d) {
    $("#export-status").hidden = d.status === "none";
    $("#export-status").textContent = d.status;
    $("#export-status").dataset.status = d.status;
    $("#export-error").hidden = !d.error; $("#export-error").textContent = d.error || "";
    $("#export-log").textContent = d.log || "";
    $("#export-result").hidden = !d.lines.length;
    $("#export-out").textContent = d.out || "";
    $("#export-lines").replaceChildren(...d.lines.map(line => el("li", {}, line)));
  }
  const load = pollRun(form, "export", render);
  form.run && form.run.addEventListener("change", load);
  form.format.addEventListener("change", () => { form.quant.disabled = form.format.value !== "gguf"; });
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    $("#export-error").hidden = true;
    try {
      await api("POST", `/api/runs/${runPath(form.run.value)}/export`,
        {format: form.format.value, quant: form.quant.value, verify: form.verify.checked});
      load();
    } catch (e) { $("#export-error").textContent = e.message; $("#export-error").hidden = false; }
  });
  load();
}

const PAGES = {runs: pageRuns, new: pageNew, run: pageRun, data: pageData, chat: pageChat, eval: pageEval, export: pageExport};
const start = PAGES[document.body.dataset.page];
if (start) start();
