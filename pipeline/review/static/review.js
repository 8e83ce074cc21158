// inpaint review: the page. Plain JS, no library, nothing from the network but this server.
// File names are only ever set as textContent, never as markup.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
// Overlay colours: the mask as found in red, what a person added in yellow, what a person
// took out (a rejected region, an erased mark) in blue.
const RED = [255, 40, 40, 150];
const YELLOW = [255, 210, 0, 190];
const BLUE = [40, 140, 255, 130];

// Edits of every photo opened in this page, by item id: switching photos keeps them.
const sessions = new Map();
const view = { zoom: 1, x: 0, y: 0 };
let tool = "regions";
let current = null;   // the open photo: meta, labels, region index, base and current mask
let showAfter = true;
let spaceHeld = false;

function api(path, options = {}) {
  const headers = { "X-Review-Token": token, ...(options.headers || {}) };
  return fetch(path, { ...options, headers }).then(async (response) => {
    if (!response.ok) {
      let message = response.statusText;
      try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return response;
  });
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function percent(share) {
  return share === null || share === undefined ? "?" : `${(share * 100).toFixed(2)}%`;
}

function describe(item) {
  const parts = [`${percent(item.damage_fraction ?? item.hole_fraction)} flagged`];
  if (item.defects !== null) parts.push(`${item.defects} defects`);
  if (item.reviewed) parts.push("reviewed");
  if (item.saved) parts.push("mask saved");
  return parts.join(" · ");
}

async function loadList() {
  const listing = await (await api("/api/items")).json();
  $("hand-masks").textContent = listing.hand_masks;
  const list = $("items");
  list.replaceChildren();
  for (const item of listing.items) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.id = item.id;
    const name = document.createElement("span");
    name.className = "path";
    name.textContent = item.path;
    const facts = document.createElement("span");
    facts.className = "facts";
    facts.textContent = describe(item);
    button.append(name, facts);
    button.addEventListener("click", () => openPhoto(item.id).catch((e) => say(e.message, true)));
    const entry = document.createElement("li");
    entry.append(button);
    list.append(entry);
  }
  markCurrent();
  return listing.items;
}

function markCurrent() {
  for (const button of document.querySelectorAll("#items button")) {
    button.setAttribute("aria-current", String(current !== null && button.dataset.id === current.id));
  }
}

async function imageUrl(path) {
  return URL.createObjectURL(await (await api(path)).blob());
}

async function openPhoto(id) {
  document.body.dataset.ready = "";
  say("loading…");
  const meta = await (await api(`/api/items/${id}`)).json();
  const [photo, output, buffer] = await Promise.all([
    imageUrl(`/api/items/${id}/photo`), imageUrl(`/api/items/${id}/output`),
    api(`/api/items/${id}/labels`).then((r) => r.arrayBuffer())]);
  if (current) { URL.revokeObjectURL(current.photo); URL.revokeObjectURL(current.output); }
  const labels = new Int32Array(buffer);
  const size = meta.view_width * meta.view_height;
  if (labels.length !== size) throw new Error("the region labels do not match the view");
  if (!sessions.has(id)) sessions.set(id, []);
  current = { id, meta, photo, output, labels, index: regionIndex(labels, meta.regions),
              base: Uint8Array.from(labels, (l) => (l > 0 ? 1 : 0)), mask: null,
              states: new Map(), edits: sessions.get(id) };
  $("photo-name").textContent = meta.path;
  $("photo").src = photo;
  showResult();
  const overlay = $("overlay");
  overlay.width = meta.view_width;
  overlay.height = meta.view_height;
  for (const stage of document.querySelectorAll(".stage")) {
    stage.style.width = `${meta.view_width}px`;
    stage.style.height = `${meta.view_height}px`;
  }
  $("brush").max = String(Math.max(64, Math.ceil(Math.max(meta.width, meta.height) / 8)));
  replay();
  fit();
  markCurrent();
  say(meta.source === "saved" ? "starting from the mask saved before" : `${meta.regions} regions`);
  document.body.dataset.ready = id;
}

// Pixel indices of each region, grouped by label (a counting sort), for quick reject/accept.
function regionIndex(labels, regions) {
  const starts = new Int32Array(regions + 2);
  for (const label of labels) if (label > 0) starts[label + 1]++;
  for (let r = 1; r < starts.length; r++) starts[r] += starts[r - 1];
  const fill = starts.slice();
  const pixels = new Int32Array(starts[starts.length - 1]);
  labels.forEach((label, i) => { if (label > 0) pixels[fill[label]++] = i; });
  return { starts, pixels };
}

function replay() {
  current.mask = current.base.slice();
  current.states = new Map();
  for (const edit of current.edits) applyEdit(edit);
  render();
}

function applyEdit(edit) {
  if (edit.op === "reject" || edit.op === "accept") {
    const { starts, pixels } = current.index;
    const value = edit.op === "accept" ? 1 : 0;
    for (let k = starts[edit.region]; k < starts[edit.region + 1]; k++) current.mask[pixels[k]] = value;
    current.states.set(edit.region, edit.op);
  } else {
    rasterise(edit);
  }
}

// A brush stroke on the view: drawn on a scratch canvas, then thresholded into the mask.
function rasterise(edit) {
  const { view_width: w, view_height: h, scale } = current.meta;
  const points = edit.points.map(([x, y]) => [x * scale, y * scale]);
  const width = Math.max(1, edit.size * scale);
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const left = Math.max(0, Math.floor(Math.min(...xs) - width)), top = Math.max(0, Math.floor(Math.min(...ys) - width));
  const right = Math.min(w, Math.ceil(Math.max(...xs) + width)), bottom = Math.min(h, Math.ceil(Math.max(...ys) + width));
  if (right <= left || bottom <= top) return;
  const canvas = new OffscreenCanvas(right - left, bottom - top);
  const context = canvas.getContext("2d");
  context.translate(-left, -top);
  strokePath(context, points, width, "#fff");
  const alpha = context.getImageData(0, 0, right - left, bottom - top).data;
  const value = edit.op === "paint" ? 1 : 0;
  for (let y = top; y < bottom; y++) {
    for (let x = left; x < right; x++) {
      if (alpha[((y - top) * (right - left) + (x - left)) * 4 + 3] >= 128) current.mask[y * w + x] = value;
    }
  }
}

function strokePath(context, points, width, colour) {
  context.lineWidth = width;
  context.lineCap = "round";
  context.lineJoin = "round";
  context.strokeStyle = colour;
  context.fillStyle = colour;
  context.beginPath();
  if (points.length === 1) {
    context.arc(points[0][0], points[0][1], width / 2, 0, 2 * Math.PI);
    context.fill();
    return;
  }
  context.moveTo(...points[0]);
  for (const point of points.slice(1)) context.lineTo(...point);
  context.stroke();
}

function render() {
  const { view_width: w, view_height: h } = current.meta;
  const context = $("overlay").getContext("2d");
  const image = context.createImageData(w, h);
  const data = image.data;
  const { mask, base } = current;
  for (let i = 0; i < mask.length; i++) {
    if (mask[i]) data.set(base[i] ? RED : YELLOW, i * 4);
    else if (base[i]) data.set(BLUE, i * 4);
  }
  context.putImageData(image, 0, 0);
  $("overlay").hidden = !$("show-mask").checked;
}

function showResult() {
  if (!current) return;
  $("result").src = showAfter ? current.output : current.photo;
  $("result-caption").textContent = showAfter ? "restored (after)" : "photo (before)";
  $("toggle").textContent = showAfter ? "Before" : "After";
}

// Zoom and pan: both panes share one transform, so the same spot shows in both.
function applyView() {
  for (const stage of document.querySelectorAll(".stage")) {
    stage.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
  }
  document.body.classList.toggle("zoomed", view.zoom > 1.5);
}

function fit() {
  if (!current) return;
  const pane = $("edit-pane").getBoundingClientRect();
  const { view_width: w, view_height: h } = current.meta;
  view.zoom = Math.min(pane.width / w, pane.height / h);
  view.x = (pane.width - w * view.zoom) / 2;
  view.y = (pane.height - h * view.zoom) / 2;
  applyView();
}

function zoomAt(clientX, clientY, factor, pane) {
  const box = pane.getBoundingClientRect();
  const px = clientX - box.left, py = clientY - box.top;
  const zoom = Math.min(64, Math.max(0.05, view.zoom * factor));
  view.x = px - (px - view.x) * (zoom / view.zoom);
  view.y = py - (py - view.y) * (zoom / view.zoom);
  view.zoom = zoom;
  applyView();
}

// Where a pointer event falls, in photo (full-size) pixels.
function photoPoint(event) {
  const box = $("overlay").getBoundingClientRect();
  const { width, height } = current.meta;
  return [(event.clientX - box.left) / box.width * width, (event.clientY - box.top) / box.height * height];
}

// The region under a click, or the nearest within 5 screen pixels (a 1-px scratch).
function regionAt(event) {
  const { view_width: w, view_height: h, scale } = current.meta;
  const [x, y] = photoPoint(event).map((v) => v * scale);
  const reach = Math.max(1, Math.ceil(5 / view.zoom));
  let best = 0, bestDistance = Infinity;
  for (let dy = -reach; dy <= reach; dy++) {
    for (let dx = -reach; dx <= reach; dx++) {
      const px = Math.floor(x) + dx, py = Math.floor(y) + dy;
      if (px < 0 || py < 0 || px >= w || py >= h) continue;
      const label = current.labels[py * w + px];
      const distance = dx * dx + dy * dy;
      if (label > 0 && distance < bestDistance) { best = label; bestDistance = distance; }
    }
  }
  return best;
}

function addEdit(edit) {
  current.edits.push(edit);
  applyEdit(edit);
  render();
  say(`${current.edits.length} edits, not saved`);
}

function setTool(name) {
  tool = name;
  for (const button of document.querySelectorAll("[data-tool]")) {
    button.setAttribute("aria-pressed", String(button.dataset.tool === name));
  }
  $("cursor").hidden = tool === "regions";
}

function brushSize() { return Number($("brush").value); }

function moveCursor(event) {
  const cursor = $("cursor");
  if (!current || tool === "regions") { cursor.hidden = true; return; }
  const box = $("edit-pane").getBoundingClientRect();
  const diameter = Math.max(3, brushSize() * current.meta.scale * view.zoom);
  cursor.hidden = false;
  cursor.style.width = cursor.style.height = `${diameter}px`;
  cursor.style.left = `${event.clientX - box.left - diameter / 2}px`;
  cursor.style.top = `${event.clientY - box.top - diameter / 2}px`;
}

function wirePointer(pane) {
  let gesture = null;
  pane.addEventListener("contextmenu", (event) => event.preventDefault());
  pane.addEventListener("pointerdown", (event) => {
    if (!current) return;
    pane.setPointerCapture(event.pointerId);
    const pan = event.button !== 0 || spaceHeld || pane.id !== "edit-pane" || tool === "regions";
    gesture = { pan, startX: event.clientX, startY: event.clientY, x: view.x, y: view.y,
                moved: false, points: pan ? null : [photoPoint(event)] };
    if (!pan) drawLive(gesture.points);
  });
  pane.addEventListener("pointermove", (event) => {
    if (pane.id === "edit-pane") moveCursor(event);
    if (!gesture) return;
    const dx = event.clientX - gesture.startX, dy = event.clientY - gesture.startY;
    if (Math.hypot(dx, dy) > 4) gesture.moved = true;
    if (gesture.pan) {
      if (!gesture.moved) return;
      pane.classList.add("panning");
      view.x = gesture.x + dx;
      view.y = gesture.y + dy;
      applyView();
    } else {
      gesture.points.push(photoPoint(event));
      drawLive(gesture.points.slice(-2));
    }
  });
  const end = (event) => {
    if (!gesture) return;
    pane.classList.remove("panning");
    if (gesture.points) {
      const points = gesture.points.map(([x, y]) => [Math.round(x * 100) / 100, Math.round(y * 100) / 100]);
      addEdit({ op: tool, size: brushSize(), points });
    } else if (!gesture.moved && pane.id === "edit-pane" && tool === "regions" && event.type === "pointerup") {
      const region = regionAt(event);
      if (region) addEdit({ op: current.states.get(region) === "reject" ? "accept" : "reject", region });
    }
    gesture = null;
  };
  pane.addEventListener("pointerup", end);
  pane.addEventListener("pointercancel", end);
  pane.addEventListener("wheel", (event) => {
    if (!current) return;
    event.preventDefault();
    zoomAt(event.clientX, event.clientY, Math.exp(-event.deltaY * 0.0015), pane);
  }, { passive: false });
  pane.addEventListener("pointerleave", () => { if (pane.id === "edit-pane") $("cursor").hidden = true; });
}

// The stroke being drawn, straight onto the overlay; it joins the mask on release.
function drawLive(points) {
  const context = $("overlay").getContext("2d");
  const scale = current.meta.scale;
  context.save();
  context.globalCompositeOperation = tool === "erase" ? "destination-out" : "source-over";
  strokePath(context, points.map(([x, y]) => [x * scale, y * scale]),
             Math.max(1, brushSize() * scale), `rgba(${RED.slice(0, 3).join(",")},1)`);
  context.restore();
}

function undo() {
  if (!current || current.edits.length === 0) return;
  current.edits.pop();
  replay();
  say(current.edits.length ? `${current.edits.length} edits, not saved` : "no edits");
}

async function save() {
  if (!current) return;
  const { id } = current;
  say("saving…");
  const response = await api(`/api/items/${id}/mask`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ edits: current.edits }) });
  const result = await response.json();
  sessions.delete(id);  // the saved mask is the new starting point
  await loadList();
  await openPhoto(id);
  say(`saved ${result.saved} (${percent(result.hole_fraction)} to fill); rerun to restore it`);
  document.body.dataset.saved = id;
}

function wireControls() {
  for (const button of document.querySelectorAll("[data-tool]")) {
    button.addEventListener("click", () => setTool(button.dataset.tool));
  }
  $("brush").addEventListener("input", () => { $("brush-size").textContent = $("brush").value; });
  $("undo").addEventListener("click", undo);
  $("toggle").addEventListener("click", () => { showAfter = !showAfter; showResult(); });
  $("show-mask").addEventListener("change", () => { if (current) render(); });
  $("fit").addEventListener("click", fit);
  $("save").addEventListener("click", () => save().catch((e) => say(`not saved: ${e.message}`, true)));
  window.addEventListener("resize", fit);
  window.addEventListener("keydown", (event) => {
    if (event.key === " ") {  // held for panning: it must not press the focused button
      spaceHeld = true;
      if (event.target === document.body || event.target.tagName === "BUTTON") event.preventDefault();
      return;
    }
    if ((event.ctrlKey || event.metaKey) && event.key === "z") { event.preventDefault(); undo(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const keys = { r: () => setTool("regions"), p: () => setTool("paint"), e: () => setTool("erase"),
                   b: () => $("toggle").click(), f: fit, m: () => $("show-mask").click() };
    if (keys[event.key]) keys[event.key]();
  });
  window.addEventListener("keyup", (event) => { if (event.key === " ") spaceHeld = false; });
  for (const pane of document.querySelectorAll(".pane")) wirePointer(pane);
}

wireControls();
loadList()
  .then((items) => (items.length ? openPhoto(items[0].id) : say("nothing to review")))
  .catch((error) => say(error.message, true));
