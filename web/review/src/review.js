// The page of `segqc review`: worklist, niivue viewer with layers, decisions by keyboard.
// Bundled with niivue into src/segqc/review/static/review.js by `npm run build`.
import { Niivue, NVImage, SLICE_TYPE } from "@niivue/niivue";

const token = document.querySelector('meta[name="segqc-token"]').content;
const KEYS = { a: "accept", r: "reject", f: "needs_fix", u: "unsure" };
const LETTERS = { accept: "A", reject: "R", needs_fix: "F", unsure: "U" };
// Without these the reviewer cannot see the case: if one cannot be shown, nothing is shown but
// the message naming the file (a decision is then taken on that message). The other layers are
// left out on their own when they cannot be shown.
const REQUIRED = ["image", "segmentation"];
const VIEWS = [SLICE_TYPE.AXIAL, SLICE_TYPE.CORONAL, SLICE_TYPE.SAGITTAL, SLICE_TYPE.MULTIPLANAR, SLICE_TYPE.RENDER];
const LAYER_STYLE = {
  image: { title: "image", opacity: 1.0, visible: true },
  segmentation: { title: "segmentation", opacity: 0.5, visible: true },
  reference: { title: "reference", opacity: 0.35, visible: false },
  error: { title: "error", opacity: 0.6, visible: false },
  uncertainty: { title: "uncertainty", opacity: 0.6, visible: false },
};

const state = {
  session: null,
  rows: [],          // the filtered worklist
  resume: null,
  caseId: null,
  info: null,        // the current case
  layers: {},        // name -> {visible, opacity}
  layerOrder: [],    // names of the loaded volumes, in niivue's order
  view: 0,
  loading: null,
  shown: null,       // the id of the case on screen, its pictures or its message (null while loading)
  saving: null,      // the case whose decision is being saved
  ignored: [],       // decision keys ignored since the last decision that was taken
};
window.segqcReview = state;   // for the end-to-end tests and the curious

const $ = (id) => document.getElementById(id);
const fmt = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));
// every text from the server that goes into HTML (class, rater, metric names, ...) goes through esc
const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const esc = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
const UNREACHABLE = "the review server is not reachable (stopped?)";
const COLOUR = /^#[0-9a-fA-F]{6}$/;

// fetch, with an error that says what went wrong: the server's own message (its JSON detail,
// which names the file and the problem) or that the server cannot be reached at all
async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new Error(UNREACHABLE);
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(response.status === 422 ? String(detail) : `${response.status} ${detail}`);
  }
  return response;
}

async function api(path, options = {}) {
  return (await request(path, options)).json();
}

// kind "load": a message about the case on screen, cleared when the next case is shown
function status(text, isError = false, kind = "") {
  const box = $("saved");
  box.textContent = text;
  box.style.color = isError ? "#c62828" : "";
  box.dataset.kind = kind;
  box.dataset.error = isError ? "1" : "0";
}

function noteIgnored(decision, why) {
  noteIgnoredText(`${LETTERS[decision] || decision} (${why})`);
}

function noteIgnoredText(entry) {
  state.ignored.push(entry);
  const box = $("saved");
  const text = box.textContent.replace(/ · ignored: .*$/, "");
  box.textContent = `${text ? `${text} · ` : ""}ignored: ${state.ignored.join(", ")}`;
}

// ------------------------------------------------------------------ viewer
const nv = new Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: true, crosshairColor: [0.3, 0.8, 1, 0.5],
  crosshairWidth: 1, isColorbar: false, dragAndDropEnabled: false, loadingText: "loading" });

function labelColormap(alpha) {
  const labels = state.session.labels;
  const max = Math.max(0, ...labels.map((l) => l.value));
  const cm = { R: [], G: [], B: [], A: [], I: [], labels: [] };
  const byValue = new Map(labels.map((l) => [l.value, l]));
  for (let v = 0; v <= max; v++) {
    const entry = byValue.get(v);
    const hex = entry ? entry.colour : "#808080";
    cm.I.push(v);
    cm.R.push(parseInt(hex.slice(1, 3), 16));
    cm.G.push(parseInt(hex.slice(3, 5), 16));
    cm.B.push(parseInt(hex.slice(5, 7), 16));
    cm.A.push(v === 0 ? 0 : alpha);
    cm.labels.push(entry ? entry.name : v === 0 ? "background" : String(v));
  }
  return cm;
}

function volumeOptions(name, buffer) {
  if (!state.layers[name]) state.layers[name] = { ...LAYER_STYLE[name] };
  const style = state.layers[name];
  const opacity = style.visible ? style.opacity : 0;
  const options = { url: buffer, name: `${name}.nii`, opacity };
  if (name === "image") return { ...options, colormap: "gray" };
  if (name === "uncertainty") return { ...options, colormap: "hot", cal_min: 0.05 };
  return options;
}

// One layer of a case as a niivue volume: the bytes are fetched here (once), so that a refused
// layer comes with the server's message, and handed to niivue as an ArrayBuffer.
async function readLayer(caseId, name) {
  const response = await request(`/api/cases/${encodeURIComponent(caseId)}/layers/${name}.nii`);
  let buffer;
  try { buffer = await response.arrayBuffer(); } catch (error) { throw new Error(UNREACHABLE); }
  try {
    return await NVImage.loadFromUrl(volumeOptions(name, buffer));
  } catch (error) {
    throw new Error(`the viewer cannot read it (${error.message || error})`);
  }
}

function clearViewer(text) {
  nv.opts.loadingText = text;
  nv.volumes = [];
  nv.back = null;
  nv.overlays = [];
  state.layerOrder = [];
  nv.updateGLVolume();   // draws the scene: an empty canvas with `text`
}

function applyLayers() {
  state.layerOrder.forEach((name, index) => {
    const style = state.layers[name];
    if (index < nv.volumes.length) nv.setOpacity(index, style.visible ? style.opacity : 0);
  });
  for (const input of document.querySelectorAll("#layers input[type=checkbox]")) {
    input.checked = !input.disabled && state.layers[input.dataset.layer].visible;
  }
  for (const input of document.querySelectorAll("#layers input[type=range]")) {
    input.value = state.layers[input.dataset.layer].opacity;
  }
  nv.drawScene();
}

function layerTitle(name) {
  return name === "reference" ? state.session.ref_name : LAYER_STYLE[name] ? LAYER_STYLE[name].title : name;
}

// failed: layer name -> why it cannot be shown; its controls are disabled (all of them when
// nothing is shown)
function buildLayerControls(names, failed = {}, nothingShown = false) {
  const box = $("layers");
  box.innerHTML = "";
  for (const name of names) {
    if (!state.layers[name]) state.layers[name] = { ...LAYER_STYLE[name] };
    const title = esc(layerTitle(name));
    const why = name in failed ? `not shown: ${failed[name]}` : nothingShown ? "nothing is shown without the image and the segmentation" : "";
    const off = why ? ` disabled title="${esc(why)}"` : "";
    const span = document.createElement("span");
    span.className = "layer" + (name in failed ? " failed" : "");
    span.innerHTML = `<label><input type="checkbox" data-layer="${esc(name)}"${off}> ${title}</label>` +
      `<input type="range" min="0" max="1" step="0.05" data-layer="${esc(name)}"${off || ` title="${title} opacity"`}>`;
    box.appendChild(span);
  }
  box.querySelectorAll("input[type=checkbox]").forEach((input) => input.addEventListener("change", () => {
    state.layers[input.dataset.layer].visible = input.checked; applyLayers(); input.blur();
  }));
  box.querySelectorAll("input[type=range]").forEach((input) => {
    input.addEventListener("input", () => {
      const layer = state.layers[input.dataset.layer];
      layer.opacity = Number(input.value); layer.visible = layer.opacity > 0; applyLayers();
    });
    // a slider clicked or dragged with the mouse gives the keys back to the page when the button
    // is released (wherever that is), as a checkbox does; one reached with Tab keeps ← → for
    // itself until Esc or a click elsewhere
    input.addEventListener("pointerdown", () => window.addEventListener("pointerup", () => input.blur(), { once: true }));
  });
}

// Reads every layer of the case, then swaps the viewer over in one go. Returns false when the
// case was left meanwhile. A layer that cannot be shown is named with the server's message; when
// it is the image or the segmentation, the viewer is emptied (no other case's pictures stay).
async function showVolumes(info) {
  const names = info.layers;
  const results = await Promise.allSettled(names.map((name) => readLayer(info.id, name)));
  if (state.caseId !== info.id) return false;
  // the panel changes with the pictures, not before: until then the previous case stays whole
  state.info = info;
  renderCase(info);
  const failed = {};
  results.forEach((r, i) => { if (r.status === "rejected") failed[names[i]] = r.reason.message || String(r.reason); });
  const missing = REQUIRED.filter((name) => name in failed);
  buildLayerControls(names, failed, missing.length > 0);
  if (missing.length) {
    clearViewer("not shown");
    status(`${savedBefore()}not shown: ${info.id} — ${describeFailures(failed)}`, true, "load");
    // what is on screen is this case's message, naming its file: a reviewer may decide on it
    // (needs fix, reject), so that a broken case does not stay undecided for good
    state.shown = info.id;
    document.body.dataset.loaded = "error";
    return true;
  }
  const shown = names.filter((name) => !(name in failed));
  nv.opts.loadingText = "loading";
  nv.volumes = [];
  nv.back = null;
  nv.overlays = [];
  for (const name of shown) nv.addVolume(results[names.indexOf(name)].value);
  state.layerOrder = shown;
  shown.forEach((name, index) => {
    if (name === "segmentation" || name === "reference") {
      nv.volumes[index].setColormapLabel(labelColormap(255));
    } else if (name === "error") {
      // white: no class colour is white, so errors stand out over every class
      nv.volumes[index].setColormapLabel({ I: [0, 1], R: [0, 255], G: [0, 255], B: [0, 255], A: [0, 255],
        labels: ["", "disagreement"] });
    }
  });
  nv.updateGLVolume();
  if (info.focus && nv.volumes.length) {
    nv.scene.crosshairPos = nv.vox2frac(info.focus, 0);   // open where the segmentation is
  }
  applyLayers();
  setView(state.view);
  if (Object.keys(failed).length) status(`${savedBefore()}${info.id}: left out ${describeFailures(failed)}`, true, "load");
  else if ($("saved").dataset.kind === "load") status("");
  state.shown = info.id;
  document.body.dataset.loaded = "1";
  return true;
}

// "reference, error: /data/gt/m4.nii.gz: ... not on the grid ..." (layers with the same message together)
function describeFailures(failed) {
  const byMessage = new Map();
  for (const [name, message] of Object.entries(failed)) {
    byMessage.set(message, [...(byMessage.get(message) || []), layerTitle(name)]);
  }
  return [...byMessage].map(([message, layers]) => `${layers.join(", ")}: ${message}`).join("; ");
}

function setView(index) {
  state.view = ((index % VIEWS.length) + VIEWS.length) % VIEWS.length;
  nv.setSliceType(VIEWS[state.view]);
  document.querySelectorAll("#views button").forEach((b) => b.classList.toggle("on", Number(b.dataset.view) === state.view));
}

// ------------------------------------------------------------------ worklist
function decisionBadge(decision) {
  const text = { accept: "A", reject: "R", needs_fix: "F", unsure: "U" }[decision] || "";
  return `<span class="badge ${esc(decision || "none")}">${text}</span>`;
}

function renderList() {
  const list = $("cases");
  list.innerHTML = "";
  for (const row of state.rows) {
    const li = document.createElement("li");
    li.dataset.case = row.id;
    li.className = (row.flagged ? "flagged " : "") + (row.id === state.caseId ? "current" : "");
    li.title = row.reason || "";
    li.innerHTML = `<span class="id"></span><span class="est">${fmt(row.estimate)}</span>${decisionBadge(row.decision)}`;
    li.querySelector(".id").textContent = row.id;
    li.addEventListener("click", () => go(row.id));
    list.appendChild(li);
  }
  const current = list.querySelector("li.current");
  if (current) current.scrollIntoView({ block: "nearest" });
}

function filters() {
  const params = new URLSearchParams();
  if ($("filter-flagged").checked) params.set("flagged", "true");
  if ($("filter-unreviewed").checked) params.set("unreviewed", "true");
  params.set("label", $("filter-label").value);
  params.set("rater", $("filter-rater").value || state.session.rater);
  return params;
}

async function loadList() {
  const data = await api(`/api/worklist?${filters()}`);
  state.rows = data.cases;
  state.resume = data.resume;
  $("progress").textContent = `${data.reviewed} of ${data.total} reviewed`;
  renderList();
  return data;
}

// ------------------------------------------------------------------ one case
function renderCase(info) {
  $("case-id").textContent = info.id;
  $("case-flag").textContent = info.flagged ? `flagged: ${info.reason}` : "";
  const labels = [["all", "all classes"], ...state.session.labels.map((l) => [String(l.value), l.name])];
  const metrics = [...new Set(Object.values(info.values).flatMap((m) => Object.keys(m)))];
  const column = ("estimate" in (Object.values(Object.values(info.values)[0] || {})[0] || {})) ? "estimate" : "value";
  const hasTrue = Object.values(info.values).some((m) => Object.values(m).some((c) => c.true !== undefined && c.true !== null));
  let html = `<tr><th>class</th>${metrics.map((m) => `<th>${esc(m)}</th>`).join("")}</tr>`;
  for (const [value, name] of labels) {
    const cells = info.values[value];
    if (!cells) continue;
    html += `<tr><td>${esc(name)}</td>` + metrics.map((m) => {
      const cell = cells[m] || {};
      const extra = hasTrue && cell.true !== undefined ? ` <span class="muted">(${fmt(cell.true)})</span>` : "";
      return `<td>${fmt(cell[column])}${extra}</td>`;
    }).join("") + "</tr>";
  }
  if (hasTrue) html += `<tr><td colspan="${metrics.length + 1}" class="muted">estimate (true value)</td></tr>`;
  $("case-values").innerHTML = html;
  const history = $("history");
  history.innerHTML = "";
  for (const row of info.history.slice().reverse()) {
    const li = document.createElement("li");
    li.textContent = `${row.decided_at.slice(0, 19).replace("T", " ")} ${row.rater}: ${row.decision}` +
      (row.label !== "all" ? ` (class ${row.label})` : "") + (row.comment ? ` — ${row.comment}` : "");
    history.appendChild(li);
  }
  markChosen();
}

function currentDecision(label) {
  if (!state.info) return null;
  const mine = state.info.history.filter((r) => r.rater === state.session.rater && r.label === label);
  return mine.length ? mine[mine.length - 1] : null;
}

function markChosen() {
  const chosen = currentDecision($("decision-label").value);
  document.querySelectorAll("#decide button").forEach((b) => b.classList.toggle("chosen", !!chosen && chosen.decision === b.dataset.decision));
  $("comment").value = chosen ? chosen.comment : "";
}

// "saved: m4 accept · " while the confirmation of the decision just taken is on screen, so that a
// message about the next case does not hide it
function savedBefore() {
  const box = $("saved");
  return box.dataset.kind === "saved" ? `${box.textContent} · ` : "";
}

function showNoCase(caseId, message) {
  state.info = null;
  $("case-id").textContent = caseId;
  $("case-flag").textContent = "";
  $("case-values").innerHTML = "";
  $("history").innerHTML = "";
  $("layers").innerHTML = "";
  clearViewer("not shown");
  status(`${savedBefore()}not shown: ${caseId} — ${message}`, true, "load");
  document.body.dataset.loaded = "error";
}

async function openCase(caseId) {
  if (!caseId) return;
  state.caseId = caseId;
  state.shown = null;          // no decision until this case's pictures are on screen
  document.body.dataset.case = caseId;
  document.body.dataset.loaded = "0";
  $("decision-label").value = "all";   // each case starts with a decision for the whole case
  history.replaceState(null, "", `#${encodeURIComponent(caseId)}`);
  renderList();
  const loading = (async () => {
    const info = await api(`/api/cases/${encodeURIComponent(caseId)}`);
    if (state.caseId !== caseId) return;
    await showVolumes(info);
  })();
  state.loading = loading;
  try {
    await loading;
  } catch (error) {
    if (state.caseId === caseId) showNoCase(caseId, error.message);
  }
}

// the reviewer moves to another case (the keys ignored so far are forgotten)
function go(caseId) {
  state.ignored = [];
  openCase(caseId);
}

function step(offset) {
  if (!state.rows.length) return;
  const index = state.rows.findIndex((r) => r.id === state.caseId);
  const next = index < 0 ? 0 : Math.min(Math.max(index + offset, 0), state.rows.length - 1);
  if (next !== index) go(state.rows[next].id);
}

async function nextFlagged() {
  let all;
  try {
    all = (await api(`/api/worklist?label=${encodeURIComponent($("filter-label").value)}`)).cases;
  } catch (error) {
    status(`cannot read the worklist: ${error.message}`, true);
    return;
  }
  const index = all.findIndex((r) => r.id === state.caseId);
  const after = all.slice(index + 1).concat(all.slice(0, index + 1));
  const target = after.find((r) => r.flagged && !r.decision) || after.find((r) => r.flagged);
  if (!target) status("no flagged case");
  else if (target.id === state.caseId) status("no other flagged case");
  else go(target.id);
}

// A decision is taken only for the case on screen (its pictures, or the message naming the file
// that cannot be shown), one at a time: a key
// pressed while the previous decision is being saved or while a case is loading is ignored (and
// said so), never applied to a case the reviewer has not seen. (Queueing such keys would apply
// them to whatever case is shown next, before the reviewer has looked at it.)
async function decide(decision) {
  if (!state.caseId) return;
  const caseId = state.caseId;
  if (state.saving) { noteIgnored(decision, `pressed while saving the decision for ${state.saving}`); return; }
  if (state.shown !== caseId) {
    if (document.body.dataset.loaded === "0") noteIgnored(decision, `pressed while ${caseId} was loading`);
    else noteIgnored(decision, `${caseId} is not shown, so it takes no decision; ← → go on`);
    return;
  }
  const label = $("decision-label").value;
  const what = `${caseId} ${decision}${label !== "all" ? ` (class ${label})` : ""}`;
  state.saving = caseId;
  state.ignored = [];
  document.body.dataset.busy = "1";
  let next = null;
  try {
    let row;
    try {
      row = await api(`/api/cases/${encodeURIComponent(caseId)}/decisions`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Segqc-Token": token },
        body: JSON.stringify({ decision, label, comment: $("comment").value }),
      });
    } catch (error) {
      if (error.message === UNREACHABLE) status(`${UNREACHABLE}: the decision ${what} was not saved`, true);
      else status(`not saved: ${what}: ${error.message}`, true);
      return;
    }
    if (state.info && state.info.id === caseId) state.info.history.push(row);
    const ignored = state.ignored;
    status(`saved: ${what}`, false, "saved");
    if (ignored.length) { state.ignored = []; ignored.forEach((text) => noteIgnoredText(text)); }
    document.body.dataset.saved = String(Number(document.body.dataset.saved || 0) + 1);
    const index = state.rows.findIndex((r) => r.id === caseId);
    try {
      await loadList();
    } catch (error) {
      status(`saved: ${what}; cannot read the worklist: ${error.message}`, true);
      return;
    }
    if (state.info && state.info.id === caseId) renderCase(state.info);
    // go on only if the reviewer did not move meanwhile (arrow keys, N, a click)
    if ($("advance").checked && label === "all" && state.caseId === caseId) {
      const rows = state.rows;
      const stillThere = rows.findIndex((r) => r.id === caseId);
      const after = stillThere >= 0 ? rows[stillThere + 1] : rows[Math.min(index, rows.length - 1)];
      if (after && after.id !== caseId) next = after.id;
    }
  } finally {
    state.saving = null;
    document.body.dataset.busy = "0";
  }
  if (next) await openCase(next);   // keys pressed from here on are ignored as "while loading"
}

// ------------------------------------------------------------------ overlays and keys
function toggleOverlay() {
  const seg = state.layers.segmentation;
  if (!seg) return;
  seg.visible = !seg.visible;
  if (seg.visible && seg.opacity === 0) seg.opacity = 0.5;
  applyLayers();
}

function changeOpacity(delta) {
  const seg = state.layers.segmentation;
  if (!seg) return;
  seg.opacity = Math.min(1, Math.max(0, Math.round((seg.opacity + delta) * 20) / 20));
  seg.visible = seg.opacity > 0;
  applyLayers();
}

function showOverlay(id, show) {
  $(id).hidden = !show;
}

async function showSummary() {
  let data;
  try { data = await api("/api/summary"); } catch (error) { status(`cannot show the summary: ${error.message}`, true); return; }
  const names = state.session.decisions;
  let html = `<h2>Decisions (whole cases, ${esc(data.total)} in the worklist)</h2><table><tr><th>rater</th>` +
    names.map((d) => `<th>${esc(d)}</th>`).join("") + "</tr>";
  for (const [rater, counts] of Object.entries(data.counts)) {
    html += `<tr><td>${esc(rater)}</td>` + names.map((d) => `<td>${esc(counts[d])}</td>`).join("") + "</tr>";
  }
  html += "</table><h3>Agreement</h3>";
  html += data.kappa.length ? "<table><tr><th>raters</th><th>cases</th><th>Cohen's κ</th></tr>" + data.kappa.map((k) =>
    `<tr><td>${esc(k.raters.join(" – "))}</td><td>${esc(k.n)}</td><td>${k.kappa === null ? "–" : esc(Number(k.kappa).toFixed(3))}</td></tr>`).join("") + "</table>"
    : "<p>Cohen's κ needs two raters.</p>";
  html += '<p class="muted">Esc closes.</p>';
  $("summary-card").innerHTML = html;
  showOverlay("summary", true);
}

function onKey(event) {
  // checkboxes and sliders take no letters: the page's keys work while they have the focus (a
  // slider reached with Tab keeps ← → for itself)
  const control = event.target.type === "checkbox" || event.target.type === "range";
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName) && !control;
  if (event.target.type === "range" && event.key.startsWith("Arrow")) return;
  if (event.key === "Escape") {
    showOverlay("help", false); showOverlay("summary", false);
    if (typing || control) event.target.blur();
    return;
  }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  let handled = true;
  if (KEYS[key]) decide(KEYS[key]);
  else if (key === "ArrowRight") step(1);
  else if (key === "ArrowLeft") step(-1);
  else if (key === "n") nextFlagged();
  else if (key === "t") toggleOverlay();
  else if (key === "[") changeOpacity(-0.1);
  else if (key === "]") changeOpacity(0.1);
  else if (key === "v") setView(state.view + 1);
  else if (key === "c") $("comment").focus();
  else if (key === "?") showOverlay("help", $("help").hidden);
  else handled = false;
  if (handled) event.preventDefault();
}

// ------------------------------------------------------------------ start
async function start() {
  document.body.dataset.busy = "0";
  state.session = await api("/api/session");
  $("rater").textContent = state.session.rater;
  $("folder").textContent = state.session.folder;
  for (const select of [$("filter-label"), $("decision-label")]) {
    for (const label of state.session.labels) {
      const option = document.createElement("option");
      option.value = String(label.value);
      option.textContent = label.name;
      select.appendChild(option);
    }
  }
  for (const rater of state.session.raters) {
    const option = document.createElement("option");
    option.value = rater; option.textContent = rater;
    if (rater === state.session.rater) option.selected = true;
    $("filter-rater").appendChild(option);
  }
  $("legend").innerHTML = state.session.labels.map((l) =>
    `<span><span class="swatch" style="background:${esc(COLOUR.test(l.colour) ? l.colour : "#808080")}"></span>${esc(l.name)}</span>`).join("");
  await nv.attachTo("gl");
  nv.setInterpolation(true);   // nearest neighbour: label borders stay voxel-sharp
  document.addEventListener("keydown", onKey);
  for (const id of ["filter-flagged", "filter-unreviewed", "filter-label", "filter-rater"]) {
    $(id).addEventListener("change", async () => {
      try { await loadList(); } catch (error) { status(`cannot read the worklist: ${error.message}`, true); }
      $(id).blur();
    });
  }
  $("decision-label").addEventListener("change", () => { markChosen(); $("decision-label").blur(); });
  document.querySelectorAll("#decide button").forEach((b) => b.addEventListener("click", () => decide(b.dataset.decision)));
  document.querySelectorAll("#views button").forEach((b) => b.addEventListener("click", () => setView(Number(b.dataset.view))));
  $("help-button").addEventListener("click", () => showOverlay("help", true));
  $("summary-button").addEventListener("click", showSummary);
  for (const id of ["help", "summary"]) $(id).addEventListener("click", (e) => { if (e.target.id === id) showOverlay(id, false); });
  const data = await loadList();
  const first = data.resume || (state.rows[0] && state.rows[0].id);
  document.body.dataset.ready = "1";
  if (first) await openCase(first); else status("the worklist is empty");
}

start().catch((error) => { status(`cannot start: ${error.message}`, true); document.body.dataset.ready = "error"; });
