// The moderators' page: checks dropped images with the served model through this origin's /api (apd ui).
// Vanilla JS, no build step, nothing loaded from elsewhere.
"use strict";

const HISTORY_KEY = "apd-ui-history";
const HISTORY_MAX = 200;
const LABELS = { ai_generated: "AI-generated", real: "Real photo" };

// The API key, once the server asked for one and the moderator typed it: this tab's memory only (never stored in
// localStorage, sessionStorage or a cookie), sent as X-API-Key on each call; reloading the page forgets it.
let apiKey = null;

const state = {
  // The server's image limits (APD_IMAGES__*) replace these defaults once /api/models answers.
  limits: { max_bytes: 10 * 1024 * 1024, max_pixels: 40000000, formats: ["JPEG", "PNG", "WEBP"] },
  targets: [],
  queue: Promise.resolve(),
};

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function megabytes(bytes) {
  const mb = bytes / 1024 / 1024;
  return `${mb.toFixed(1).replace(/\.0$/, "")} MB`;
}

function tooLarge(size, limit) {
  // "file too large: 14 MB, the limit is 10 MB" (in bytes when both round to the same megabytes)
  if (megabytes(size) === megabytes(limit)) return `file too large: ${size} bytes, the limit is ${limit} bytes`;
  return `file too large: ${megabytes(size)}, the limit is ${megabytes(limit)}`;
}

function percent(probability) {
  return `${(probability * 100).toFixed(1)} %`;
}

function labelText(label) {
  return LABELS[label] || label;
}

// ---- what the file is, from its first bytes (the name and the browser's MIME type can lie) ----
function sniff(bytes) {
  const ascii = (start, text) => [...text].every((c, i) => bytes[start + i] === c.charCodeAt(0));
  if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "JPEG";
  if (ascii(1, "PNG") && bytes[0] === 0x89) return "PNG";
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) return "WEBP";
  if (ascii(0, "GIF8")) return "GIF";
  if (ascii(0, "II*") || ascii(0, "MM\0*")) return "TIFF";
  if (ascii(0, "BM")) return "BMP";
  if (ascii(4, "ftypavif")) return "AVIF";
  if (ascii(4, "ftyphei") || ascii(4, "ftypmif1")) return "HEIC";
  if (ascii(0, "%PDF")) return "PDF";
  if (ascii(0, "<svg") || ascii(0, "<?xml")) return "SVG";
  return null;
}

const FORMAT_NAMES = { JPEG: "JPEG", PNG: "PNG", WEBP: "WebP" };

function acceptedText() {
  const names = state.limits.formats.map((f) => FORMAT_NAMES[f] || f);
  return names.length > 1 ? `${names.slice(0, -1).join(", ")} or ${names.at(-1)}` : names[0];
}

class CheckError extends Error {}

// The server refused the key (401: none sent, 403: not valid or revoked): the page asks for one.
class AuthError extends CheckError {}

// Client-side checks before upload. The file itself is what gets sent: its original bytes, never resampled or
// re-encoded (the detector reads native pixels). The byte limit is the server's (/api/models).
async function checkFile(file) {
  if (file.size === 0) throw new CheckError(`empty file: choose a ${acceptedText()} image`);
  const head = new Uint8Array(await file.slice(0, 16).arrayBuffer());
  const format = sniff(head);
  if (format === null) {
    throw new CheckError(`not an image: this file is not a ${acceptedText()} image, send one of those`);
  }
  if (!state.limits.formats.includes(format)) {
    throw new CheckError(`not an image we accept: ${format} is not accepted, send ${acceptedText()}`);
  }
  if (file.size > state.limits.max_bytes) throw new CheckError(tooLarge(file.size, state.limits.max_bytes));
}

// ---- the backend (/api on this origin) ----
async function api(path, blob) {
  let response;
  const headers = blob ? { "Content-Type": blob.type || "application/octet-stream" } : {};
  if (apiKey) headers["X-API-Key"] = apiKey;
  try {
    response = await fetch(path, { method: blob ? "POST" : "GET", body: blob || undefined, headers });
  } catch (error) {
    throw new CheckError("cannot reach this page's server; is apd ui still running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `the server answered HTTP ${response.status}`;
    if (response.status === 401 || response.status === 403) {
      askForKey(response.status === 403 ? message : "");
      throw new AuthError(response.status === 401 ? "sign in with an API key first" : message);
    }
    throw new CheckError(message);
  }
  return body;
}

// ---- the API key: asked for when the server wants one ----
function askForKey(problem) {
  apiKey = null;
  const error = $("#login-error");
  error.textContent = problem;
  error.hidden = !problem;
  $("#login").hidden = false;
  $("#api-key").focus();
}

function signIn(event) {
  event.preventDefault();
  const input = $("#api-key");
  apiKey = input.value.trim() || null;
  input.value = ""; // not left in the page
  $("#login-error").hidden = true;
  state.queue = state.queue.then(loadModels);
}

function selectedModel() {
  return $("#model").value || "";
}

function selectedCompare() {
  return $("#compare").value || "none";
}

async function loadModels() {
  const status = $("#server-status");
  let answer;
  try {
    answer = await api("/api/models");
  } catch (error) {
    status.textContent = error instanceof AuthError ? "This page needs an API key: sign in above." : error.message;
    status.classList.add("problem");
    return;
  }
  $("#login").hidden = true; // answered: no key needed, or the key is good
  state.limits = answer.limits;
  state.targets = answer.targets;
  $("#limit-mb").textContent = megabytes(answer.limits.max_bytes);
  const model = $("#model");
  const compare = $("#compare");
  model.replaceChildren();
  compare.replaceChildren(el("option", { value: "none", text: "nothing" }));
  const lines = [];
  const primary = answer.targets.find((t) => t.target === "primary");
  const names = (t) => {
    const listed = t.models.map((m) => m.name);
    return listed.includes(t.default_model) ? t.models : [{ name: t.default_model, ready: false }, ...t.models];
  };
  for (const m of names(primary)) {
    model.append(el("option", { value: m.name, text: m.ready ? m.name : `${m.name} (not ready)` }));
  }
  model.value = answer.defaults.model;
  for (const target of answer.targets) {
    const where = target.target === "primary" ? "same server" : `compare server ${target.url}`;
    for (const m of names(target)) {
      const text = `${m.name} on ${where}${m.ready ? "" : " (not ready)"}`;
      compare.append(el("option", { value: `${target.target}:${m.name}`, text }));
    }
    const ready = target.models.filter((m) => m.ready).length;
    const count = `${ready} model${ready === 1 ? "" : "s"} ready`;
    lines.push(target.error ? target.error : `${target.target} server ${target.url}: ${count}`);
  }
  compare.value = answer.defaults.compare || "none";
  status.textContent = lines.join(" · ");
  status.classList.toggle("problem", answer.targets.some((t) => t.error));
}

// ---- provenance: what the file declares about its own origin, in plain words ----
const AI_CLAIMS = ["ai", "ai_edited"];
const UNREADABLE_PARTS = {
  c2pa: "C2PA Content Credentials", xmp: "XMP", exif: "EXIF", png_text: "PNG text", container: "the file's structure",
  reader: "the metadata reader failed",
};
const SOURCE_NAMES = { pixels: "pixels", provenance: "file's declaration" };

function sourceText(source) {
  return SOURCE_NAMES[source] || source || "";
}

function c2paQualifier(state, detail) {
  // "signed by ..." is the last part of the reader's detail for a C2PA signal
  const signer = /; signed by (.+)$/.exec(detail || "");
  if (state === "trusted") return signer ? `trusted signer: ${signer[1]}` : "trusted signer";
  if (state === "valid") return "signature valid, signer not on our trust list";
  if (state === "invalid") return "not matching the image";
  return state;
}

// Where a claim comes from, for "Declared AI-generated by the file itself: <source>".
function claimSource(signal, c2pa) {
  const tool = signal.generator;
  if (signal.kind === "c2pa") {
    const made = tool && AI_CLAIMS.includes(signal.declares) ? `, made with ${tool}` : "";
    return `C2PA Content Credentials (${c2paQualifier(c2pa, signal.detail)})${made}`;
  }
  if (signal.kind === "iptc") return "IPTC digital source type in the file's metadata";
  if (signal.kind === "generator_metadata") return tool ? `generation settings written by ${tool}` : "generation settings";
  return tool ? `software tag naming ${tool}` : "a software tag"; // exif_software
}

// The evidence as sentences: [{ text, kind }], kind: declared | warning | note | muted.
function provenanceSentences(r) {
  const p = r.provenance;
  if (!p) {
    return [{ kind: "muted", text: "This model server does not read provenance metadata (an older version): " +
      "the verdict is the pixel model's alone." }];
  }
  const signals = p.signals || [];
  const sentences = [];
  const ai = signals.filter((s) => AI_CLAIMS.includes(s.declares));
  if (r.verdict_source === "provenance" || p.ai_declared) {
    const edited = ai.length > 0 && ai.every((s) => s.declares === "ai_edited");
    const what = edited ? "Declared AI-edited (AI-generated content in the image)" : "Declared AI-generated";
    const sources = [...new Set(ai.map((s) => claimSource(s, p.c2pa)))];
    sentences.push({ kind: "declared", text: `${what} by the file itself: ${sources.join("; ") || "its metadata"}.` },
      { kind: "note", text: "The pixel model's own probability is shown below." });
  }
  if (p.c2pa === "invalid") {
    const claim = signals.some((s) => s.kind === "c2pa" && AI_CLAIMS.includes(s.declares))
      ? "the AI claim in them is still counted (a changed image does not make generated pixels real)"
      : "what they claim is not trusted";
    sentences.push({ kind: "warning",
      text: `The C2PA Content Credentials do not match the image (it was changed after signing); ${claim}.` });
  }
  for (const s of signals.filter((x) => x.declares === "capture")) {
    const where = s.kind === "c2pa" ? `its C2PA Content Credentials (${c2paQualifier(p.c2pa, s.detail)})`
      : s.kind === "iptc" ? "its IPTC digital source type" : "its EXIF";
    const device = s.generator ? ` (${s.generator})` : "";
    const why = s.kind === "c2pa" && p.c2pa === "trusted" ? "signed, but a capture claim does not change the verdict"
      : "this is not verified and does not change the verdict";
    sentences.push({ kind: "note", text: `The file claims a camera capture${device} in ${where}; ${why}.` });
  }
  for (const s of signals.filter((x) => x.declares === "unknown")) {
    const from = s.kind === "c2pa" ? `C2PA Content Credentials (${c2paQualifier(p.c2pa, s.detail)})`
      : s.kind === "iptc" ? "An IPTC digital source type" : "A software tag";
    sentences.push({ kind: "note", text: `${from} in the file, not saying whether it was AI-generated.` });
  }
  if (signals.length === 0) {
    const readable = p.unreadable && p.unreadable.length ? "readable " : "";
    sentences.push({ kind: "muted",
      text: `No ${readable}provenance metadata (absence proves nothing: metadata is easily stripped).` });
  }
  if (p.unreadable && p.unreadable.length) {
    const parts = p.unreadable.map((u) => UNREADABLE_PARTS[u] || u).join(", ");
    sentences.push({ kind: "warning", text: `Some metadata could not be read (${parts}); it is not counted.` });
  }
  return sentences;
}

function provenanceBlock(r) {
  const sentences = provenanceSentences(r);
  const block = el("div", { class: `evidence ${r.verdict_source === "provenance" ? "declared" : ""}`.trim(),
    "data-field": "provenance", "data-source": r.verdict_source || "pixels" },
    ...sentences.map((s) => el("p", { class: s.kind, text: s.text })));
  const signals = (r.provenance && r.provenance.signals) || [];
  if (signals.length) {
    // What was read, as the model server reports it (for an escalation or an appeal).
    block.append(el("details", {}, el("summary", { text: "What the file's metadata says" }),
      el("ul", {}, ...signals.map((s) => el("li", { text: `${s.kind}: ${s.detail}` })))));
  }
  return block;
}

// ---- result cards ----
function gauge(result) {
  const value = Math.round(result.probability * 1000) / 10;
  const fill = el("div", { class: `gauge-fill ${result.label}` });
  fill.style.width = `${value}%`;
  return el("div", {},
    el("div", {
      class: "gauge", role: "meter", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(value),
      "aria-valuetext": `${percent(result.probability)} likely AI-generated`, "aria-label": "Probability AI-generated",
    }, fill),
    el("div", { class: "gauge-scale", "aria-hidden": "true" },
      el("span", { text: "0 % real" }), el("span", { text: "50 %" }), el("span", { text: "100 % AI" })));
}

function fact(dl, term, value, field) {
  dl.append(el("dt", { text: term }), el("dd", { "data-field": field }, value));
}

function compareSection(result, other) {
  const section = el("section", { class: "compare", "data-field": "compare" },
    el("h4", { text: "Compare" }));
  if (other.error) {
    section.append(el("p", { class: "error", role: "alert", "data-field": "compare-error",
      text: `${other.model_name} (${other.target} server) could not score it: ${other.error}` }));
    return section;
  }
  const where = (r) => (r.target === "compare" ? "compare server" : "same server");
  const table = el("table", {},
    el("thead", {}, el("tr", {}, el("td", {}),
      el("th", { scope: "col", text: "This model" }), el("th", { scope: "col", text: "Compare" }))),
    el("tbody", {},
      el("tr", {}, el("th", { scope: "row", text: "Model" }),
        el("td", { text: `${result.model_name} ${result.model_version}` }),
        el("td", { "data-field": "compare-model", text: `${other.model_name} ${other.model_version}, ${where(other)}` })),
      el("tr", {}, el("th", { scope: "row", text: "Label" }),
        el("td", { text: labelText(result.label) }), el("td", { "data-field": "compare-label", text: labelText(other.label) })),
      el("tr", {}, el("th", { scope: "row", text: "Decided by" }),
        el("td", { text: sourceText(result.verdict_source) }),
        el("td", { "data-field": "compare-source", text: sourceText(other.verdict_source) })),
      el("tr", {}, el("th", { scope: "row", text: "Probability" }),
        el("td", { text: percent(result.probability) }),
        el("td", { "data-field": "compare-probability", text: percent(other.probability) })),
      el("tr", {}, el("th", { scope: "row", text: "Latency" }),
        el("td", { text: `${result.latency_ms} ms` }), el("td", { text: `${other.latency_ms} ms` }))));
  const agree = other.same_label;
  const points = (other.difference * 100).toFixed(1);
  const signed = other.difference >= 0 ? `+${points}` : points;
  section.append(table,
    el("p", { class: `agreement ${agree ? "agree" : "disagree"}`, "data-field": "agreement",
      text: agree ? `Agree: both say ${labelText(result.label)}` : "Disagree: the two models give different labels" }),
    el("p", { "data-field": "difference",
      text: `Probability difference (compare − this): ${signed} points (${other.difference.toFixed(4)})` }));
  return section;
}

function newCard(name) {
  const photo = el("img", { class: "photo", alt: `Uploaded image ${name}` });
  const overlay = el("img", { class: "overlay", alt: `Grad-CAM heatmap over ${name}: red where the evidence is strongest`, hidden: true });
  const body = el("div", { class: "card-body" },
    el("h3", { text: name }),
    el("p", { class: "state", "data-field": "state", text: "Checking…" }));
  const card = el("article", { class: "card", "aria-label": `Result for ${name}` },
    el("div", { class: "media" }, photo, overlay), body);
  return { card, photo, overlay, body };
}

function showError(parts, message) {
  parts.body.querySelector("[data-field=state]").remove();
  parts.body.append(el("p", { class: "error", role: "alert", "data-field": "error", text: message }));
  parts.card.classList.add("failed");
}

function showResult(parts, answer, file, model, totalMs) {
  const r = answer.result;
  parts.body.querySelector("[data-field=state]").remove();
  const fromFile = r.verdict_source === "provenance";
  parts.body.append(
    el("p", { class: `verdict ${r.label}`, "data-field": "label", "data-label": r.label, text: labelText(r.label) }),
    provenanceBlock(r),
    gauge(r));
  const dl = el("dl", { class: "facts" });
  fact(dl, fromFile ? "Pixel model's probability" : "Probability AI-generated",
    el("strong", { text: percent(r.probability) }), "probability");
  fact(dl, "Confidence", el("span", { class: `band ${r.confidence}`, text: r.confidence }), "confidence");
  if (r.threshold !== null && r.threshold !== undefined) {
    fact(dl, "Threshold", `${percent(r.threshold)}: ai_generated from this probability on`, "threshold");
  }
  fact(dl, "Model", `${r.model_name}, version ${r.model_version}`, "model-version");
  fact(dl, "Latency", `${r.latency_ms} ms model server, ${Math.round(totalMs)} ms in total`, "latency");
  parts.body.append(dl);

  const toggle = el("button", { type: "button", class: "secondary", "aria-pressed": "false", "data-field": "gradcam",
    text: "Show Grad-CAM overlay" });
  const legend = el("p", { class: "legend", hidden: true,
    text: "Grad-CAM: red where the evidence for the score is strongest, blue where there is none." });
  toggle.addEventListener("click", async () => {
    if (!parts.overlay.src) {
      toggle.disabled = true;
      toggle.textContent = "Computing Grad-CAM…";
      try {
        const explained = await api(`/api/explain?model=${encodeURIComponent(model)}`, file);
        parts.overlay.src = `data:image/png;base64,${explained.heatmap_png_b64}`;
      } catch (error) {
        toggle.disabled = false;
        toggle.textContent = "Show Grad-CAM overlay";
        parts.body.append(el("p", { class: "error", role: "alert", "data-field": "gradcam-error",
          text: `Grad-CAM failed: ${error.message}` }));
        return;
      }
      toggle.disabled = false;
    }
    const show = toggle.getAttribute("aria-pressed") !== "true";
    parts.overlay.hidden = !show;
    legend.hidden = !show;
    toggle.setAttribute("aria-pressed", String(show));
    toggle.textContent = show ? "Hide Grad-CAM overlay" : "Show Grad-CAM overlay";
  });
  parts.body.append(toggle, legend);
  if (answer.compare) parts.body.append(compareSection(r, answer.compare));
}

async function check(file) {
  const parts = newCard(file.name || "pasted image");
  $("#results").prepend(parts.card);
  $("#results-empty").hidden = true;
  const model = selectedModel();
  const compare = selectedCompare();
  const entry = { time: new Date().toISOString(), name: file.name, model };
  parts.photo.addEventListener("error", () => { parts.photo.hidden = true; }); // not displayable: no broken icon
  parts.photo.src = URL.createObjectURL(file);
  try {
    await checkFile(file);
    const started = performance.now();
    const query = new URLSearchParams({ model, compare });
    const answer = await api(`/api/predict?${query}`, file);
    showResult(parts, answer, file, model, performance.now() - started);
    const r = answer.result;
    Object.assign(entry, { label: r.label, probability: r.probability, confidence: r.confidence,
      model_version: r.model_version, verdict_source: r.verdict_source });
    if (answer.compare) {
      const c = answer.compare;
      entry.compare = c.error ? { error: c.error } : { label: c.label, probability: c.probability,
        same_label: c.same_label, difference: c.difference, model_version: c.model_version };
    }
  } catch (error) {
    if (!(error instanceof CheckError)) console.error(error);
    showError(parts, error.message);
    entry.error = error.message;
  }
  addHistory(entry);
}

function checkAll(files) {
  // One at a time, in order: a moderator's batch should not flood the model server.
  for (const file of files) state.queue = state.queue.then(() => check(file));
}

// ---- session history (sessionStorage: this tab only, gone when it closes) ----
function readHistory() {
  try {
    return JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]");
  } catch (error) {
    return [];
  }
}

function addHistory(entry) {
  const history = [entry, ...readHistory()].slice(0, HISTORY_MAX);
  try {
    sessionStorage.setItem(HISTORY_KEY, JSON.stringify(history));
  } catch (error) {
    // storage full or disabled: the history still shows until the page is reloaded
  }
  renderHistory(history);
}

function renderHistory(history = readHistory()) {
  const rows = history.map((h) => {
    const time = new Date(h.time).toLocaleTimeString();
    let compare = "";
    if (h.compare && h.compare.error) compare = `error: ${h.compare.error}`;
    else if (h.compare) {
      compare = `${h.compare.same_label ? "agree" : "DISAGREE"}, ${labelText(h.compare.label)} ` +
        `${percent(h.compare.probability)} (${h.compare.difference >= 0 ? "+" : ""}${(h.compare.difference * 100).toFixed(1)} points)`;
    }
    return el("tr", {},
      el("td", { class: "time", text: time }), el("td", { class: "file", text: h.name }),
      el("td", { text: h.error ? `error: ${h.error}` : labelText(h.label) }),
      el("td", { class: "source", text: h.error ? "" : sourceText(h.verdict_source) }),
      el("td", { text: h.error ? "" : percent(h.probability) }),
      el("td", { text: h.confidence || "" }), el("td", { text: h.model_version || "" }), el("td", { text: compare }));
  });
  $("#history tbody").replaceChildren(...rows);
  $("#history").hidden = rows.length === 0;
  $("#history-empty").hidden = rows.length > 0;
}

// ---- wiring ----
function setup() {
  const zone = $("#dropzone");
  const input = $("#file");
  input.addEventListener("change", () => {
    checkAll([...input.files]);
    input.value = ""; // choosing the same file again is a new check
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    checkAll([...event.dataTransfer.files]);
  });
  // A file dropped next to the zone must not make the browser navigate away from the page (and its results).
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  $("#login-form").addEventListener("submit", signIn);
  $("#clear-history").addEventListener("click", () => {
    sessionStorage.removeItem(HISTORY_KEY);
    renderHistory([]);
  });
  renderHistory();
  state.queue = loadModels(); // checks wait for the model list (limits, default model)
}

setup();
