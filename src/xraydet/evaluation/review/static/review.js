// xraydet review page: one scan at a time, keyboard verdicts, each POSTed and saved at once.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const LABELS = { correct: "correct", wrong: "wrong", missed_threat: "missed threat" };
const state = { items: [], verdicts: {}, counts: {}, index: 0, showGt: false, busy: false };

function $(id) { return document.getElementById(id); }

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function firstUnreviewed() {
  const i = state.items.findIndex((item) => !(item.id in state.verdicts));
  return i < 0 ? 0 : i;
}

function svgEl(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function drawBoxes(item) {
  const svg = $("overlay");
  svg.setAttribute("viewBox", `0 0 ${item.width} ${item.height}`);
  svg.replaceChildren();
  const boxes = item.pred.map((b) => ({ ...b, kind: "pred" }));
  if (state.showGt) boxes.push(...item.gt.map((b) => ({ ...b, kind: "gt" })));
  for (const b of boxes) {
    const [x1, y1, x2, y2] = b.xyxy;
    svg.appendChild(svgEl("rect", { class: b.kind, x: x1, y: y1, width: x2 - x1, height: y2 - y1 }));
    if (b.kind === "pred") {
      const label = svgEl("text", { x: x1 + 2, y: Math.max(10, y1 - 3) });
      label.textContent = `${b.name} ${b.confidence.toFixed(2)}`;
      svg.appendChild(label);
    }
  }
  const list = $("boxes");
  list.replaceChildren();
  for (const b of item.pred) {
    const li = document.createElement("li");
    li.textContent = `${b.name} ${(b.confidence * 100).toFixed(0)}%`;
    list.appendChild(li);
  }
  if (!item.pred.length) {
    const li = document.createElement("li");
    li.textContent = "no box: the model calls this bag clear";
    list.appendChild(li);
  }
}

function render() {
  const total = state.items.length;
  const reviewed = state.items.filter((item) => item.id in state.verdicts).length;
  $("progress").textContent = `${reviewed} / ${total} reviewed`;
  const c = state.counts;
  $("counts").textContent = `correct ${c.correct || 0} · wrong ${c.wrong || 0} · missed threat ${c.missed_threat || 0}`;
  if (!total) { setStatus("no items to review", true); return; }
  const item = state.items[state.index];
  $("scan").src = item.image_url;
  $("item-info").textContent = `item ${state.index + 1} of ${total} · ${item.name} (${item.source})`;
  $("item-info").dataset.itemId = item.id;
  const verdict = state.verdicts[item.id] || "";
  $("current-verdict").dataset.verdict = verdict;
  $("current-verdict").textContent = verdict ? LABELS[verdict] : "not reviewed";
  drawBoxes(item);
}

function go(delta) {
  const total = state.items.length;
  if (!total) return;
  state.index = Math.min(total - 1, Math.max(0, state.index + delta));
  render();
}

async function mark(verdict) {
  const item = state.items[state.index];
  if (!item || state.busy) return;
  state.busy = true;
  try {
    const resp = await fetch(`/api/items/${encodeURIComponent(item.id)}/verdict`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ verdict }),
    });
    if (!resp.ok) throw new Error(`${resp.status} ${await resp.text()}`);
    const body = await resp.json();
    state.verdicts[item.id] = verdict;
    state.counts = body.counts;
    setStatus(`saved: ${item.name} = ${LABELS[verdict]}`, false);
    if (state.index < state.items.length - 1) state.index += 1;
    render();
  } catch (err) {
    setStatus(`not saved (${err.message}); try again`, true);
  } finally {
    state.busy = false;
  }
}

document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const keys = { c: "correct", w: "wrong", m: "missed_threat" };
  if (keys[ev.key]) { ev.preventDefault(); mark(keys[ev.key]); }
  else if (ev.key === "ArrowRight") { ev.preventDefault(); go(1); }
  else if (ev.key === "ArrowLeft") { ev.preventDefault(); go(-1); }
  else if (ev.key === "g") { state.showGt = !state.showGt; render(); }
});

for (const button of document.querySelectorAll("#buttons button")) {
  button.addEventListener("click", () => mark(button.dataset.verdict));
}
$("prev").addEventListener("click", () => go(-1));
$("next").addEventListener("click", () => go(1));

async function load() {
  try {
    const resp = await fetch("/api/items");
    if (!resp.ok) throw new Error(`${resp.status}`);
    const data = await resp.json();
    state.items = data.items;
    state.verdicts = data.verdicts;
    state.counts = data.counts;
    $("model").textContent = `${data.model} @ conf ${data.conf}`;
    state.index = firstUnreviewed();
    document.body.dataset.ready = "1";
    render();
  } catch (err) {
    setStatus(`could not load the items (${err.message})`, true);
  }
}

load();
