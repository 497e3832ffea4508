// minicog's page: a form built from the live /openapi.json, runs through this server only.
//
// Rules kept throughout: every string that comes from the model or its schema is put in
// the page with textContent or a checked attribute (never innerHTML); every request is a
// relative URL, so it goes to the server that served the page and nowhere else.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const STORE_KEY = "minicog.docs.run";
  const POLL_MS = 400;
  const HEALTH_MS = 2000;

  const state = {
    doc: null,          // the OpenAPI document
    kind: "prediction", // or "training"
    kinds: [],          // the kinds the schema offers
    fields: [],         // one per input: {name, prop, required, get(), set(v), clear(), box, problem}
    run: null,          // {id, kind, startedAt, streaming, done, abort}
  };

  // ------------------------------------------------------------------ small helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "cls") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function newId() {
    // crypto.randomUUID needs a secure context; getRandomValues works on plain http hosts too.
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return "page-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function collection(kind) { return kind === "training" ? "trainings" : "predictions"; }

  // The run's address in Cog's API, relative to /docs: "predictions/ID" is /predictions/ID.
  function runURL(kind, id) { return collection(kind) + "/" + encodeURIComponent(id); }

  async function fetchJSON(url, options) {
    const resp = await fetch(url, Object.assign({ cache: "no-store", headers: { Accept: "application/json" } }, options || {}));
    let body = null;
    const text = await resp.text();
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = { error: text }; }
    return { status: resp.status, ok: resp.ok, body };
  }

  function errorText(body, status) {
    if (body && typeof body.error === "string") return body.error;
    if (body && typeof body.detail === "string") return body.detail;
    return "HTTP " + status;
  }

  // ------------------------------------------------------------------ schema
  function resolve(ref) {
    if (typeof ref !== "string" || !ref.startsWith("#/")) return {};
    let node = state.doc;
    for (const part of ref.slice(2).split("/")) node = node && node[part];
    return node || {};
  }

  // A property with its allOf/$ref parts merged in (Cog puts enums in a component).
  function flatten(prop) {
    let out = Object.assign({}, prop);
    if (prop.$ref) out = Object.assign({}, resolve(prop.$ref), out);
    for (const part of prop.allOf || []) {
      const sub = part.$ref ? resolve(part.$ref) : part;
      // The component's title is the enum's type name, not the input's: keep the input's.
      for (const [k, v] of Object.entries(sub)) if (k !== "title" && k !== "description" && (!(k in out) || k === "enum")) out[k] = v;
    }
    if (out.items) out.items = flatten(out.items);
    return out;
  }

  function component(name) {
    return (((state.doc || {}).components || {}).schemas || {})[name] || null;
  }

  function inputSchema(kind) { return component(kind === "training" ? "TrainingInput" : "Input"); }
  function outputSchema(kind) { return flatten(component(kind === "training" ? "TrainingOutput" : "Output") || {}); }

  function isStreaming(kind) {
    const path = ((state.doc || {}).paths || {})["/" + collection(kind)];
    return Boolean(path && path.post && path.post["x-cog-streaming"]);
  }

  function typeLabel(p) {
    if (p.enum) return "choice";
    if (p.type === "array") return "list of " + typeLabel(p.items || {});
    if (p.format === "uri") return "file";
    if (p["x-cog-secret"] || p.format === "password") return "secret";
    return p.type || "any";
  }

  // ------------------------------------------------------------------ controls
  // Each builder returns {node, get, set}: get() → {set: false} (send nothing) or {set: true, value}.
  function textControl(id, p, name) {
    const long = /prompt|text|message|content|description|question|context|system/i.test(name) ||
      (typeof p.default === "string" && (p.default.length > 60 || p.default.includes("\n"))) ||
      (p.maxLength === undefined && p.type === "string" && !p.format && /^(prompt)$/.test(name));
    const node = long ? el("textarea", { id, rows: 3 }) : el("input", { id, type: "text" });
    if (p.maxLength !== undefined) node.maxLength = p.maxLength;
    if (p.minLength !== undefined) node.minLength = p.minLength;
    if (p.pattern) node.setAttribute("pattern", p.pattern);
    return {
      node,
      get: () => (node.value === "" && (p.default === undefined || p.default === null) ? { set: false } : { set: true, value: node.value }),
      set: (v) => { node.value = v === null || v === undefined ? "" : String(v); },
    };
  }

  function secretControl(id, p) {
    const node = el("input", { id, type: "password", autocomplete: "off" });
    return {
      node,
      get: () => (node.value === "" ? { set: false } : { set: true, value: node.value }),
      set: (v) => { node.value = typeof v === "string" ? v : ""; },
    };
  }

  function numberControl(id, p) {
    const node = el("input", { id, type: "number", inputmode: p.type === "integer" ? "numeric" : "decimal" });
    if (p.minimum !== undefined) node.min = p.minimum;
    if (p.maximum !== undefined) node.max = p.maximum;
    node.step = p.type === "integer" ? "1" : "any";
    return {
      node,
      get: () => {
        if (node.value.trim() === "") return { set: false };
        const n = Number(node.value);
        // An unreadable number is sent as typed, so the server's 422 explains it next to the field.
        return { set: true, value: Number.isFinite(n) ? n : node.value };
      },
      set: (v) => { node.value = v === null || v === undefined ? "" : String(v); },
    };
  }

  function boolControl(id, p) {
    const node = el("input", { id, type: "checkbox" });
    return { node, get: () => ({ set: true, value: node.checked }), set: (v) => { node.checked = Boolean(v); }, inline: true };
  }

  function choiceControl(id, p, required) {
    const node = el("select", { id });
    const values = p.enum.slice();
    if (!required && (p.default === undefined || p.default === null)) node.append(el("option", { value: "", text: "(none)" }));
    values.forEach((v, i) => node.append(el("option", { value: String(i), text: String(v) })));
    return {
      node,
      get: () => (node.value === "" ? { set: false } : { set: true, value: values[Number(node.value)] }),
      set: (v) => {
        const i = values.findIndex((x) => x === v);
        node.value = i >= 0 ? String(i) : (node.querySelector('option[value=""]') ? "" : "0");
      },
    };
  }

  function jsonControl(id, p) {
    const node = el("textarea", { id, rows: 3, cls: "json", spellcheck: "false", placeholder: "JSON" });
    return {
      node,
      get: () => {
        if (node.value.trim() === "") return { set: false };
        try { return { set: true, value: JSON.parse(node.value) }; } catch (e) { return { set: true, value: node.value }; }
      },
      set: (v) => { node.value = v === null || v === undefined ? "" : JSON.stringify(v, null, 2); },
    };
  }

  // A file: picked (sent as a data: URI, read in the browser) or a URL typed in.
  function fileControl(id, p) {
    const picker = el("input", { id, type: "file", accept: p["x-cog-accept"] || null });
    const url = el("input", { id: id + "-url", type: "url", placeholder: "or a URL (https://… or data:…)", "aria-label": "URL" });
    let picked = null; // {name, dataUri}
    picker.addEventListener("change", () => {
      const file = picker.files && picker.files[0];
      picked = null;
      if (!file) return;
      const reader = new FileReader();
      const pending = { name: file.name, dataUri: null };
      picked = pending;
      reader.onload = () => { pending.dataUri = String(reader.result); };
      reader.readAsDataURL(file);
      url.value = "";
    });
    const node = el("div", { cls: "file-row" }, picker, url);
    return {
      node,
      get: () => {
        if (picked && picked.dataUri) return { set: true, value: picked.dataUri, fileName: picked.name };
        if (url.value.trim()) return { set: true, value: url.value.trim() };
        return { set: false };
      },
      set: (v) => { picked = null; picker.value = ""; url.value = typeof v === "string" ? v : ""; },
      ready: () => !picked || picked.dataUri !== null,
    };
  }

  function itemControl(id, p, name) {
    if (p.enum) return choiceControl(id, p, true);
    if (p.format === "uri") return fileControl(id, p);
    if (p.type === "integer" || p.type === "number") return numberControl(id, p);
    if (p.type === "boolean") return boolControl(id, p);
    if (p.type === "string") return textControl(id, Object.assign({}, p, { default: "" }), "item");
    return jsonControl(id, p);
  }

  // A list: one row per item, each row the item's own control, with add and remove buttons.
  function listControl(id, p, name) {
    const items = p.items || {};
    const box = el("div", { cls: "list", id, role: "group" });
    const rows = [];
    const add = el("button", { type: "button", cls: "small", text: "+ Add item" });
    function addRow(value) {
      const n = rows.length;
      const ctl = itemControl(id + "-" + n, items, name);
      if (value !== undefined) ctl.set(value);
      const remove = el("button", { type: "button", cls: "small", "aria-label": "Remove item", text: "✕" });
      const row = el("div", { cls: "item" }, ctl.node, remove);
      const entry = { ctl, row };
      remove.addEventListener("click", () => {
        rows.splice(rows.indexOf(entry), 1);
        row.remove();
        add.focus();
      });
      rows.push(entry);
      box.insertBefore(row, add);
      return ctl;
    }
    add.addEventListener("click", () => {
      const ctl = addRow();
      const focusable = ctl.node.matches("input,textarea,select") ? ctl.node : ctl.node.querySelector("input,textarea,select");
      if (focusable) focusable.focus();
    });
    box.append(add);
    return {
      node: box,
      get: () => {
        const values = [];
        const files = [];
        for (const { ctl } of rows) {
          const got = ctl.get();
          if (got.set) { values.push(got.value); files.push(got.fileName || null); }
        }
        if (!values.length && (p.default === undefined || p.default === null)) return { set: false };
        return { set: true, value: values, fileNames: files };
      },
      set: (v) => {
        for (const { row } of rows.splice(0)) row.remove();
        for (const item of Array.isArray(v) ? v : []) addRow(item);
      },
      ready: () => rows.every(({ ctl }) => !ctl.ready || ctl.ready()),
    };
  }

  function buildField(name, raw, required) {
    const p = flatten(raw);
    const id = "in-" + name;
    let ctl;
    if (p.enum) ctl = choiceControl(id, p, required);
    else if (p.type === "array") ctl = listControl(id, p, name);
    else if (p.format === "uri") ctl = fileControl(id, p);
    else if (p["x-cog-secret"] || p.format === "password") ctl = secretControl(id, p);
    else if (p.type === "integer" || p.type === "number") ctl = numberControl(id, p);
    else if (p.type === "boolean") ctl = boolControl(id, p);
    else if (p.type === "string") ctl = textControl(id, p, name);
    else ctl = jsonControl(id, p);

    const title = p.title || name.replace(/_/g, " ").replace(/\b\w/g, (c) => c.toUpperCase());
    const labelFor = ctl.node.matches("input,textarea,select") ? id : (ctl.node.querySelector("input,textarea,select") || {}).id;
    const label = el("label", { cls: "name", for: labelFor || null });
    label.append(el("span", { text: title }));
    if (required) label.append(el("span", { cls: "req", text: "*", title: "required", "aria-label": "required" }));
    const limits = [];
    if (p.minimum !== undefined) limits.push("min " + p.minimum);
    if (p.maximum !== undefined) limits.push("max " + p.maximum);
    if (p.maxLength !== undefined) limits.push("≤ " + p.maxLength + " characters");
    label.append(el("span", { cls: "type", text: typeLabel(p) + (limits.length ? " · " + limits.join(", ") : "") }));
    const help = p.description ? el("p", { cls: "help", id: id + "-help", text: p.description }) : null;
    const problem = el("p", { cls: "problem", id: id + "-problem", role: "alert", hidden: true });
    const focusable = ctl.node.matches("input,textarea,select") ? ctl.node : ctl.node.querySelector("input,textarea,select,button");
    if (focusable) focusable.setAttribute("aria-describedby", [help && help.id, problem.id].filter(Boolean).join(" "));
    if (required && focusable && focusable.tagName !== "BUTTON") focusable.setAttribute("aria-required", "true");

    let box;
    if (ctl.inline) {
      label.prepend(ctl.node);
      label.classList.add("check");
      box = el("div", { cls: "field", "data-name": name }, label, help, problem);
    } else {
      box = el("div", { cls: "field", "data-name": name }, label, ctl.node, help, problem);
    }
    const field = { name, prop: p, required, box, problem, ctl };
    field.reset = () => ctl.set(p.default === undefined ? (p.type === "array" ? [] : null) : p.default);
    field.reset();
    return field;
  }

  function order(props) {
    return Object.keys(props).map((name, i) => ({ name, i, o: props[name]["x-order"] }))
      .sort((a, b) => (a.o ?? 1e9 + a.i) - (b.o ?? 1e9 + b.i) || a.i - b.i).map((x) => x.name);
  }

  function renderForm() {
    const schema = inputSchema(state.kind) || { properties: {} };
    const props = schema.properties || {};
    const required = new Set(schema.required || []);
    const box = $("fields");
    box.replaceChildren();
    state.fields = order(props).map((name) => buildField(name, props[name], required.has(name)));
    if (!state.fields.length) box.append(el("p", { cls: "nofields", text: "This model takes no input." }));
    for (const f of state.fields) box.append(f.box);
    const params = new URLSearchParams(location.search);
    for (const f of state.fields) {
      // ?input.NAME=VALUE fills a field (JSON when it parses, else the text): shareable links.
      const raw = params.get("input." + f.name);
      if (raw === null) continue;
      let v = raw;
      try { v = JSON.parse(raw); } catch (e) { /* text */ }
      if (f.prop.type === "string" && typeof v !== "string") v = raw;
      f.ctl.set(v);
    }
    updateCommands();
  }

  function collect() {
    const input = {};
    const fileNames = {};
    for (const f of state.fields) {
      const got = f.ctl.get();
      if (!got.set) continue;
      input[f.name] = got.value;
      if (got.fileName) fileNames[f.name] = got.fileName;
      if (got.fileNames && got.fileNames.some(Boolean)) fileNames[f.name] = got.fileNames;
    }
    return { input, fileNames };
  }

  // ------------------------------------------------------------------ commands
  function shq(s) { return "'" + String(s).replace(/'/g, "'\\''") + "'"; }

  function updateCommands() {
    const { input, fileNames } = collect();
    const base = location.origin + location.pathname.replace(/docs\/?$/, "");
    const headers = ["-H 'Content-Type: application/json'"];
    if (isStreaming(state.kind)) headers.push("-H 'Accept: text/event-stream'");
    $("curl-cmd").textContent = "curl -s -X POST " + shq(base + collection(state.kind)) + " \\\n  " + headers.join(" \\\n  ") +
      " \\\n  -d " + shq(JSON.stringify({ input }));
    const parts = ["python -m minicog " + (state.kind === "training" ? "train" : "predict")];
    for (const [name, value] of Object.entries(input)) {
      const names = fileNames[name];
      const values = Array.isArray(value) && (state.fields.find((f) => f.name === name) || {}).prop.type === "array" ? value : [value];
      values.forEach((v, i) => {
        const fname = Array.isArray(names) ? names[i] : names;
        let text;
        if (fname) text = "@" + fname; // the CLI reads a local file for "@path"
        else if (typeof v === "string") text = v;
        else text = JSON.stringify(v);
        parts.push("-i " + shq(name + "=" + text));
      });
    }
    $("cli-cmd").textContent = parts.join(" \\\n  ");
  }

  async function copy(id, button) {
    const text = $(id).textContent;
    let ok = false;
    try { await navigator.clipboard.writeText(text); ok = true; } catch (e) {
      // Plain-http pages have no async clipboard: select the text and use the old command.
      const range = document.createRange();
      range.selectNodeContents($(id));
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      try { ok = document.execCommand("copy"); } catch (e2) { ok = false; }
    }
    button.textContent = ok ? "Copied" : "Select and copy";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  }

  // ------------------------------------------------------------------ health
  async function pollHealth() {
    let status = "unreachable";
    let detail = "";
    try {
      const r = await fetchJSON("health-check");
      status = (r.body && r.body.status) || "HTTP " + r.status;
      if (r.body && r.body.user_healthcheck_error) detail = r.body.user_healthcheck_error;
      if (status === "SETUP_FAILED" && r.body.setup && r.body.setup.logs) detail = r.body.setup.logs;
    } catch (e) { /* server away: shown as unreachable */ }
    const badge = $("health");
    badge.textContent = status.toLowerCase().replace(/_/g, " ");
    badge.title = detail || "GET /health-check";
    badge.className = "badge " + ({ READY: "good", BUSY: "busy", STARTING: "busy" }[status] || "bad");
    if (!state.doc && (status === "READY" || status === "BUSY" || status === "UNHEALTHY")) loadSchema();
    setTimeout(pollHealth, document.hidden ? HEALTH_MS * 5 : HEALTH_MS);
  }

  let loading = false;
  async function loadSchema() {
    if (loading || state.doc) return;
    loading = true;
    try {
      const r = await fetchJSON("openapi.json");
      if (!r.ok) {
        showSchemaProblem(r.status === 503 ? "The model is still starting; the form appears when it is ready." : errorText(r.body, r.status));
        return;
      }
      state.doc = r.body;
      showSchemaProblem(null);
      setUp();
    } catch (e) {
      showSchemaProblem("Could not read openapi.json: " + e);
    } finally {
      loading = false;
    }
  }

  function showSchemaProblem(text) {
    const p = $("schema-problem");
    p.hidden = !text;
    p.textContent = text || "";
  }

  function setUp() {
    const doc = state.doc;
    const info = doc.info || {};
    const title = info.title && info.title !== "Cog" ? info.title : "Model";
    $("model-title").textContent = title;
    document.title = title + " · minicog";
    const paths0 = doc.paths || {};
    const what = [paths0["/predictions"] ? "predictions" : null, paths0["/trainings"] ? "trainings" : null].filter(Boolean).join(" and ");
    const streams = isStreaming("prediction") ? ", streamed as they are produced" : "";
    $("model-description").textContent = info.description ||
      "Runs " + what + streams + " on this server" + (info.version ? " (Cog API " + info.version + ")" : "") + ".";
    const paths = doc.paths || {};
    state.kinds = [];
    if (paths["/predictions"] && component("Input")) state.kinds.push("prediction");
    if (paths["/trainings"] && component("TrainingInput")) state.kinds.push("training");
    if (!state.kinds.length) { showSchemaProblem("The schema offers neither predictions nor trainings."); return; }
    const saved = loadSaved();
    state.kind = saved && state.kinds.includes(saved.kind) ? saved.kind : state.kinds[0];
    const nav = $("modes");
    nav.replaceChildren();
    nav.hidden = state.kinds.length < 2;
    for (const kind of state.kinds) {
      nav.append(el("button", {
        type: "button", "data-kind": kind, "aria-pressed": String(kind === state.kind),
        text: kind === "training" ? "Train" : "Predict",
        onclick: () => switchKind(kind),
      }));
    }
    if (state.kinds.length === 1 && state.kind === "training") $("inputs-heading").textContent = "Training input";
    renderForm();
    $("run").disabled = false;
    if (saved && saved.input) fill(saved.input);
    if (saved && saved.id) attach(saved);
  }

  function switchKind(kind) {
    if (state.run && !state.run.done) return;
    state.kind = kind;
    for (const b of $("modes").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.kind === kind));
    $("inputs-heading").textContent = kind === "training" ? "Training input" : "Input";
    renderForm();
  }

  function fill(input) {
    for (const f of state.fields) if (Object.prototype.hasOwnProperty.call(input, f.name)) f.ctl.set(input[f.name]);
    updateCommands();
  }

  // ------------------------------------------------------------------ runs
  function loadSaved() {
    try { return JSON.parse(sessionStorage.getItem(STORE_KEY) || "null"); } catch (e) { return null; }
  }

  function save(run, input) {
    const record = { id: run.id, kind: run.kind, startedAt: run.startedAt, input };
    try { sessionStorage.setItem(STORE_KEY, JSON.stringify(record)); } catch (e) {
      // Too big (a picked file inlined): keep the id, which is what reattaching needs.
      try { sessionStorage.setItem(STORE_KEY, JSON.stringify({ id: run.id, kind: run.kind, startedAt: run.startedAt })); } catch (e2) { /* no storage */ }
    }
  }

  function clearProblems() {
    for (const f of state.fields) { f.problem.hidden = true; f.problem.textContent = ""; f.box.classList.remove("invalid"); }
    $("form-problem").hidden = true;
    $("form-problem").textContent = "";
  }

  // Cog's 422: {"detail": [{"loc": ["body", "input", NAME], "msg": ...}]} → each under its input.
  function showProblems(detail) {
    const rest = [];
    let first = null;
    for (const d of Array.isArray(detail) ? detail : []) {
      const loc = Array.isArray(d.loc) ? d.loc : [];
      const name = loc[0] === "body" && loc[1] === "input" ? loc[2] : undefined;
      const f = state.fields.find((x) => x.name === name);
      const msg = String(d.msg || "invalid");
      if (f) {
        f.problem.textContent = f.problem.textContent ? f.problem.textContent + "\n" + msg : msg;
        f.problem.hidden = false;
        f.box.classList.add("invalid");
      } else {
        rest.push((loc.length ? loc.join(".") + ": " : "") + msg);
      }
    }
    if (typeof detail === "string") rest.push(detail);
    if (rest.length) { $("form-problem").textContent = rest.join("\n"); $("form-problem").hidden = false; }
    // Focus the first input with a problem, in the form's order (the server's order may differ).
    first = state.fields.find((f) => !f.problem.hidden);
    if (first) {
      const target = first.box.querySelector("input,textarea,select,button");
      if (target) target.focus();
    }
  }

  function setStatus(status) {
    const badge = $("status");
    badge.textContent = status;
    badge.className = "badge " + ({ succeeded: "good", processing: "busy", starting: "busy", "canceling…": "busy" }[status] || (status === "idle" ? "" : "bad"));
  }

  function setRunning(running) {
    $("run").disabled = running || !state.doc;
    $("cancel").disabled = !running;
    for (const b of $("modes").querySelectorAll("button")) b.disabled = running;
  }

  function tick() {
    const run = state.run;
    if (!run) return;
    const end = run.endedAt || Date.now();
    $("elapsed").textContent = ((end - run.startedAt) / 1000).toFixed(1) + " s";
    if (!run.done) run.timer = setTimeout(tick, 100);
  }

  function resetOutput() {
    $("output").replaceChildren();
    $("logs").textContent = "";
    $("error").hidden = true;
    $("error").textContent = "";
    $("metrics").replaceChildren();
    $("metrics-box").hidden = true;
  }

  async function start() {
    if (state.run && !state.run.done) return;
    if (state.fields.some((f) => f.ctl.ready && !f.ctl.ready())) {
      $("form-problem").textContent = "A file is still being read; try again in a moment.";
      $("form-problem").hidden = false;
      return;
    }
    clearProblems();
    const { input } = collect();
    const kind = state.kind;
    const id = newId();
    setRunning(true);
    setStatus("starting");
    let r;
    try {
      // Cog's idempotent create, answered at once: the run is then followed like any other.
      r = await fetchJSON(runURL(kind, id), {
        method: "PUT",
        headers: { "Content-Type": "application/json", Accept: "application/json", Prefer: "respond-async" },
        body: JSON.stringify({ id, input }),
      });
    } catch (e) {
      setRunning(false);
      setStatus("idle");
      $("form-problem").textContent = "Could not reach the server: " + e;
      $("form-problem").hidden = false;
      return;
    }
    if (!r.ok) {
      setRunning(false);
      setStatus("idle");
      if (r.status === 422 && r.body && r.body.detail) showProblems(r.body.detail);
      else {
        $("form-problem").textContent = errorText(r.body, r.status) + (r.status === 409 ? " (all slots are busy; try again when one is free)" : "");
        $("form-problem").hidden = false;
      }
      return;
    }
    resetOutput();
    const run = { id, kind, startedAt: Date.now(), streaming: isStreaming(kind), done: false };
    save(run, input);
    follow(run, true);
  }

  function follow(run, fresh) {
    if (state.run && state.run.abort) state.run.abort.abort();
    state.run = run;
    $("run-id").textContent = run.id;
    setRunning(true);
    setStatus("processing");
    tick();
    if (run.streaming) followStream(run, fresh);
    else poll(run);
  }

  function attach(saved) {
    resetOutput();
    const run = { id: saved.id, kind: saved.kind || state.kind, startedAt: saved.startedAt || Date.now(), streaming: isStreaming(saved.kind || state.kind), done: false, reattached: true };
    follow(run, false);
  }

  async function poll(run) {
    while (!run.done && state.run === run) {
      let r;
      try { r = await fetchJSON(runURL(run.kind, run.id)); } catch (e) { r = null; }
      if (state.run !== run) return;
      if (r && r.status === 200 && r.body) {
        show(run, r.body);
        if (isTerminal(r.body.status)) return finish(run, r.body);
      } else if (r && r.status === 404) {
        return lost(run);
      }
      await new Promise((ok) => setTimeout(ok, POLL_MS));
    }
  }

  async function followStream(run, fresh) {
    // A reloaded page starts from the run's state so far; the events then add to it.
    if (!fresh) {
      try {
        const r = await fetchJSON(runURL(run.kind, run.id));
        if (r.status === 404) return lost(run);
        if (r.status === 200) {
          show(run, r.body);
          if (isTerminal(r.body.status)) return finish(run, r.body);
        }
      } catch (e) { /* go on with the stream */ }
    }
    run.abort = new AbortController();
    // The stream replays the run's log events from its start: the logs are rebuilt from them.
    if (!fresh) setLogs("");
    const live = { items: run.items || [] };
    let completed = null;
    try {
      // A GET with this Accept attaches to the run's events (replayed from its start) and never
      // starts a run; the reader going away (a reload) does not cancel it.
      const resp = await fetch(runURL(run.kind, run.id),
        { headers: { Accept: "text/event-stream" }, cache: "no-store", signal: run.abort.signal });
      if (resp.ok && resp.body) {
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            const ev = parseEvent(block);
            if (!ev) continue;
            if (ev.event === "output") {
              if (typeof ev.data.index === "number" && ev.data.index < live.items.length) continue; // already shown
              live.items.push(ev.data.chunk);
              renderOutput(run, live.items, true);
            } else if (ev.event === "log") {
              appendLog(ev.data.data || "");
            } else if (ev.event === "metric") {
              mergeMetric(run, ev.data);
            } else if (ev.event === "completed") {
              completed = ev.data;
            } else if (ev.event === "error") {
              appendLog("[stream] " + (ev.data.error || "error") + "\n");
            }
          }
        }
      }
    } catch (e) {
      if (state.run !== run) return;
    }
    if (state.run !== run) return;
    if (completed && completed.output !== undefined) return finish(run, completed);
    // No completed event with the output (or the stream ended early): the server's record says the rest.
    poll(run);
  }

  function parseEvent(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const key = i < 0 ? line : line.slice(0, i);
      const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (key === "event") event = val;
      else if (key === "data") data.push(val);
    }
    if (!data.length) return null;
    try { return { event, data: JSON.parse(data.join("\n")) }; } catch (e) { return null; }
  }

  function isTerminal(status) { return status === "succeeded" || status === "failed" || status === "canceled"; }

  function show(run, snap) {
    if (snap.status && !isTerminal(snap.status) && !run.canceling) setStatus(snap.status);
    if (snap.started_at) {
      const t = Date.parse(snap.started_at);
      if (!Number.isNaN(t)) run.startedAt = t;
    }
    if (typeof snap.logs === "string") setLogs(snap.logs);
    if (snap.metrics) renderMetrics(snap.metrics);
    if (snap.output !== undefined && snap.output !== null) {
      run.items = Array.isArray(snap.output) ? snap.output.slice() : null;
      renderOutput(run, snap.output, !isTerminal(snap.status));
    }
  }

  function finish(run, snap) {
    run.done = true;
    run.endedAt = snap.completed_at ? Date.parse(snap.completed_at) || Date.now() : Date.now();
    if (snap.started_at) run.startedAt = Date.parse(snap.started_at) || run.startedAt;
    show(run, snap);
    if (snap.output === undefined || snap.output === null) {
      if (snap.status === "succeeded") renderOutput(run, snap.output === undefined ? null : snap.output, false);
    }
    setStatus(snap.status);
    if (snap.error) { $("error").textContent = snap.error; $("error").hidden = false; }
    clearTimeout(run.timer);
    tick();
    setRunning(false);
    try { sessionStorage.removeItem(STORE_KEY); } catch (e) { /* no storage */ }
  }

  function lost(run) {
    run.done = true;
    setStatus("unknown");
    $("error").textContent = "This server no longer knows run " + run.id +
      " (it was restarted, or the run ended longer ago than it keeps finished predictions: MINICOG_RETENTION_SECONDS).";
    $("error").hidden = false;
    clearTimeout(run.timer);
    setRunning(false);
    try { sessionStorage.removeItem(STORE_KEY); } catch (e) { /* no storage */ }
  }

  async function cancel() {
    const run = state.run;
    if (!run || run.done) return;
    run.canceling = true;
    setStatus("canceling…");
    try {
      await fetch(runURL(run.kind, run.id) + "/cancel", { method: "POST", cache: "no-store" });
    } catch (e) { /* the run's own state says what happened */ }
  }

  // ------------------------------------------------------------------ rendering
  function setLogs(text) {
    const box = $("logs");
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    if (box.textContent !== text) box.textContent = text;
    if (atEnd) box.scrollTop = box.scrollHeight;
  }

  function appendLog(text) { setLogs($("logs").textContent + text); }

  function mergeMetric(run, m) {
    run.metrics = run.metrics || {};
    if (m.value === null) delete run.metrics[m.name];
    else if (m.mode === "increment" && typeof run.metrics[m.name] === "number") run.metrics[m.name] += m.value;
    else if (m.mode === "append") (run.metrics[m.name] = Array.isArray(run.metrics[m.name]) ? run.metrics[m.name] : []).push(m.value);
    else run.metrics[m.name] = m.value;
    renderMetrics(run.metrics);
  }

  function renderMetrics(metrics) {
    const rows = Object.entries(metrics || {});
    $("metrics-box").hidden = !rows.length;
    $("metrics").replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("td", { text: k }),
      el("td", { cls: "mono", text: typeof v === "number" ? String(Math.round(v * 1e6) / 1e6) : JSON.stringify(v) }))));
  }

  const EXT_MIME = {
    png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp", svg: "image/svg+xml", bmp: "image/bmp",
    mp3: "audio/mpeg", wav: "audio/wav", ogg: "audio/ogg", flac: "audio/flac", m4a: "audio/mp4",
    mp4: "video/mp4", webm: "video/webm", mov: "video/quicktime",
    txt: "text/plain", json: "application/json", csv: "text/csv", pdf: "application/pdf", zip: "application/zip",
    html: "text/html", md: "text/markdown", tar: "application/x-tar", gz: "application/gzip",
  };

  function fileMime(url) {
    if (url.startsWith("data:")) return url.slice(5, url.search(/[;,]/)).toLowerCase();
    const m = /\.([a-z0-9]+)(?:[?#]|$)/i.exec(url);
    return m ? EXT_MIME[m[1].toLowerCase()] || "" : "";
  }

  function looksLikeFile(value, schema) {
    if (typeof value !== "string") return false;
    if (value.startsWith("data:")) return true;
    return (schema && schema.format === "uri") && /^https?:\/\//i.test(value);
  }

  function renderItem(value, schema, index) {
    if (looksLikeFile(value, schema)) {
      const mime = fileMime(value);
      const ext = (Object.entries(EXT_MIME).find(([, m]) => m === mime) || [mime.split("/")[1] || "bin"])[0];
      const name = value.startsWith("data:") ? "output" + (index === undefined ? "" : "." + index) + "." + ext : decodeURIComponent(value.split(/[?#]/)[0].split("/").pop() || "output");
      const link = el("a", { href: value, download: name, text: "Download " + name + (mime ? " (" + mime + ")" : "") });
      if (mime.startsWith("image/")) return el("figure", { cls: "file" }, el("img", { src: value, alt: name, loading: "lazy" }), link);
      if (mime.startsWith("audio/")) return el("div", { cls: "file" }, el("audio", { src: value, controls: true }), link);
      if (mime.startsWith("video/")) return el("div", { cls: "file" }, el("video", { src: value, controls: true, playsinline: true }), link);
      return el("div", { cls: "file" }, link);
    }
    if (typeof value === "string") return el("pre", { cls: "text", text: value });
    return el("pre", { cls: "json", text: JSON.stringify(value, null, 2) });
  }

  function renderOutput(run, output, partial) {
    const box = $("output");
    const schema = outputSchema(run.kind);
    const concat = schema.type === "array" && schema["x-cog-array-display"] === "concatenate";
    if (Array.isArray(output) && concat && output.every((x) => typeof x === "string")) {
      // Streamed text: one text node that grows as tokens arrive.
      let pre = box.querySelector("pre.stream");
      if (!pre) { box.replaceChildren(); pre = el("pre", { cls: "text stream" }); box.append(pre); }
      const text = output.join("");
      if (pre.textContent !== text) pre.textContent = text;
      return;
    }
    if (Array.isArray(output) && schema.type === "array") {
      // A list (or iterator) of items: render only what is new, so media do not reload.
      const shown = box.querySelectorAll(":scope > .item-out").length;
      if (shown > output.length || box.querySelector("pre.stream, .single-out")) box.replaceChildren();
      for (let i = box.querySelectorAll(":scope > .item-out").length; i < output.length; i++) {
        box.append(el("div", { cls: "item-out" }, renderItem(output[i], schema.items || {}, i)));
      }
      return;
    }
    if (partial && output === undefined) return;
    box.replaceChildren(el("div", { cls: "single-out" }, output === null ? el("p", { cls: "muted", text: "(no output)" }) : renderItem(output, schema)));
  }

  // ------------------------------------------------------------------ wiring
  function init() {
    $("form").addEventListener("submit", (e) => { e.preventDefault(); start(); });
    $("form").addEventListener("input", updateCommands);
    $("form").addEventListener("change", () => setTimeout(updateCommands, 50));
    $("form").addEventListener("click", (e) => { if (e.target.closest("button")) setTimeout(updateCommands, 0); });
    $("cancel").addEventListener("click", cancel);
    $("reset").addEventListener("click", () => { for (const f of state.fields) f.reset(); clearProblems(); updateCommands(); });
    $("copy-curl").addEventListener("click", (e) => copy("curl-cmd", e.currentTarget));
    $("copy-cli").addEventListener("click", (e) => copy("cli-cmd", e.currentTarget));
    document.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); start(); }
      else if (e.key === "Escape" && state.run && !state.run.done) { e.preventDefault(); cancel(); }
    });
    pollHealth();
    loadSchema();
  }

  // For tests and the curious: the page's state, read-only in spirit.
  window.minicogPage = { state, start, cancel };
  init();
})();
