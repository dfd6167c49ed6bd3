// The search page: fills the query list from /api/info, posts the form to /search, shows the hits.
"use strict";
const $ = (id) => document.getElementById(id);
let queries = [];

function showError(message) { $("error").textContent = message; }

function errorText(body, status) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) return detail.map((d) => `${d.loc.slice(-1)[0]}: ${d.msg}`).join("; ");
  return detail || `the server answered ${status}`;
}

function showQuery() {
  const view = $("query-view");
  view.replaceChildren();
  const file = $("image").files[0];
  const q = queries.find((e) => e.id === $("query-id").value);
  if (!file && !q) return;
  const img = document.createElement("img");
  img.src = file ? URL.createObjectURL(file) : `/queries/${q.row}`;
  img.alt = "query";
  const text = document.createElement("div");
  text.id = "query-captions";
  text.textContent = file ? `upload: ${file.name}`
    : `query ${q.id}, pid ${q.pid ?? "?"}, cam ${q.cam ?? "?"}; own caption: ${q.caption ?? "(none)"}`;
  view.append(img, text);
}

async function loadInfo() {
  const info = await (await fetch("/api/info")).json();
  $("gallery-info").textContent = `gallery: ${info.gallery.count} RGB images (${info.gallery.directory}); model ${info.model}`;
  $("k").max = info.max_top_k;
  queries = info.queries;
  for (const q of queries) {
    const option = document.createElement("option");
    option.value = q.id;
    option.textContent = `${q.id} (pid ${q.pid ?? "?"})`;
    $("query-id").append(option);
  }
}

$("query-id").addEventListener("change", () => {
  $("image").value = "";
  const q = queries.find((e) => e.id === $("query-id").value);
  $("ir-caption").value = q && q.caption ? q.caption : "";
  showQuery();
});
$("image").addEventListener("change", () => { $("query-id").value = ""; $("ir-caption").value = ""; showQuery(); });

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  $("results").replaceChildren();
  $("notes").textContent = "";
  const modality = $("modality").value;
  const form = new FormData();
  const file = $("image").files[0];
  if (file) form.append("image", file);
  else if ($("query-id").value) form.append("query_id", $("query-id").value);
  // The description is sent whenever the modality uses one, so an empty one is reported.
  if (modality !== "ir") form.append("text", $("text").value);
  if ($("ir-caption").value.trim()) form.append("ir_caption", $("ir-caption").value);
  form.append("modality", modality);
  form.append("k", $("k").value);
  $("search").disabled = true;
  try {
    const response = await fetch("/search", { method: "POST", body: form });
    const body = await response.json().catch(() => null);
    if (!response.ok) { showError(`error: ${errorText(body, response.status)}`); return; }
    $("notes").textContent = body.notes.join(" ");
    for (const hit of body.results) {
      const figure = document.createElement("figure");
      figure.className = "hit " + (hit.match === null ? "unknown" : hit.match ? "match" : "miss");
      const img = document.createElement("img");
      img.src = hit.thumbnail;
      img.alt = hit.path;
      const caption = document.createElement("figcaption");
      caption.textContent = `#${hit.rank} ${hit.score.toFixed(3)} pid ${hit.pid ?? "?"}`;
      figure.append(img, caption);
      $("results").append(figure);
    }
  } catch (err) {
    showError(`error: ${err}`);
  } finally {
    $("search").disabled = false;
  }
});

loadInfo().catch((err) => showError(`error: cannot load /api/info: ${err}`));
