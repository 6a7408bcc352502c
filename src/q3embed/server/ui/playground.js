// The q3embed playground: a page over the public HTTP API only (no private route), so what it
// shows is what any client gets. Every request carries the API key typed in the header field.
"use strict";

const $ = (id) => document.getElementById(id);
const lines = (text) => text.split("\n").map((s) => s.trim()).filter((s) => s.length > 0);
const KEY_STORAGE = "q3embed-api-key";

// ------------------------------------------------------------------ the API, and its errors

function errorMessage(status, body) {
  // The error shapes of the API families: OpenAI {"error": {"message"}}, TEI/Ollama {"error": "..."}.
  if (body && typeof body.error === "object" && body.error !== null && body.error.message) return body.error.message;
  if (body && typeof body.error === "string") return body.error;
  if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  return `HTTP ${status}`;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers["Authorization"] = `Bearer ${key}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch (_) { parsed = null; }
  if (!response.ok) throw new Error(`${response.status}: ${errorMessage(response.status, parsed) || text}`);
  return parsed;
}

function showError(error) {
  const box = $("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

function guarded(action) {
  return async (...args) => {
    showError(null);
    try { await action(...args); } catch (error) { showError(error); }
  };
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value; else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ------------------------------------------------------------------ models, tabs

let models = [];

async function loadModels() {
  models = (await api("GET", "/v1/models")).data;
  $("model-line").textContent = models.map((m) => `${m.kinds.join(" + ")}: ${m.id} (${m.dimensions} dims)`).join(" · ");
}

function showView(name) {
  for (const button of document.querySelectorAll("nav button")) button.classList.toggle("active", button.dataset.view === name);
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  if (name === "search") guarded(loadCollections)();
}

// ------------------------------------------------------------------ similarity

function heatColour(value) {
  const t = Math.max(0, Math.min(1, value));  // cosine in [-1, 1]; negatives drawn as 0
  const light = Math.round(97 - 52 * t);
  return `hsl(214, 85%, ${light}%)`;
}

async function embed(texts, asQuery, instruction, dimensions) {
  const body = { input: texts, input_type: asQuery ? "query" : "document", encoding_format: "float" };
  if (asQuery && instruction) body.instruction = instruction;
  if (dimensions) body.dimensions = dimensions;
  return api("POST", "/v1/embeddings", body);
}

async function runSimilarity() {
  const queries = lines($("sim-queries").value);
  const documents = lines($("sim-documents").value);
  if (!queries.length || !documents.length) throw new Error("give at least one query and one document");
  const instruction = $("sim-instruction").value.trim();
  const dimensions = $("sim-dimensions").value ? Number($("sim-dimensions").value) : null;
  const [q, d] = await Promise.all([embed(queries, true, instruction, dimensions), embed(documents, false, null, dimensions)]);
  const qv = q.data.map((row) => row.embedding);
  const dv = d.data.map((row) => row.embedding);
  const table = element("table", { class: "heatmap", id: "sim-table" });
  table.append(element("tr", {}, element("th"), ...documents.map((text) => element("th", { text }))));
  qv.forEach((vector, i) => {
    const row = element("tr", {}, element("th", { text: queries[i] }));
    dv.forEach((other, j) => {
      const value = vector.reduce((sum, x, k) => sum + x * other[k], 0);  // the API normalises: dot = cosine
      const cell = element("td", { "data-value": value.toFixed(6), "data-query": String(i), "data-document": String(j),
                                   title: `${queries[i]}\n${documents[j]}\ncosine ${value.toFixed(6)}`,
                                   text: value.toFixed(3) });
      cell.style.background = heatColour(value);
      cell.style.color = value > 0.6 ? "#fff" : "#1d2329";
      row.append(cell);
    });
    table.append(row);
  });
  $("sim-heatmap").replaceChildren(table);
  $("sim-info").textContent = `model ${q.model}, ${qv[0].length} dimensions, ` +
    `${q.usage.total_tokens + d.usage.total_tokens} tokens` + (instruction ? `, instruction "${instruction}"` : "");
}

// ------------------------------------------------------------------ rerank

async function runRerank() {
  const documents = lines($("rr-documents").value);
  const body = { query: $("rr-query").value, documents, return_documents: true };
  const instruction = $("rr-instruction").value.trim();
  if (instruction) body.instruction = instruction;
  const answer = await api("POST", "/v1/rerank", body);
  $("rr-results").replaceChildren(...answer.results.map((result) => {
    const bar = element("div", { class: "bar" });
    bar.style.width = `${Math.max(0, Math.min(1, result.relevance_score)) * 100}%`;
    return element("li", { "data-index": String(result.index), "data-score": result.relevance_score.toFixed(6) },
      element("span", { class: "score", text: result.relevance_score.toFixed(4) }), " ",
      element("span", { text: documents[result.index] }), bar);
  }));
  $("rr-info").textContent = `model ${answer.model}, ${answer.usage ? answer.usage.total_tokens + " tokens" : ""}`;
}

// ------------------------------------------------------------------ search and ingest

async function loadCollections() {
  const listed = (await api("GET", "/v1/collections")).collections;
  const select = $("search-collection");
  const current = select.value;
  select.replaceChildren(...listed.map((c) => element("option", { value: c.name, text: `${c.name} (${c.documents} documents)` })));
  if (listed.some((c) => c.name === current)) select.value = current;
}

async function createCollection() {
  const name = $("search-new").value.trim();
  if (!name) throw new Error("name the new collection");
  await api("POST", "/v1/collections", { name, exist_ok: true });
  await loadCollections();
  $("search-collection").value = name;
}

function renderHits(list, hits, reranked) {
  list.replaceChildren(...hits.map((hit) => element("li", { "data-document": hit.document_id, "data-score": hit.score.toFixed(6) },
    element("span", { class: "score", text: hit.score.toFixed(4) }),
    reranked ? element("span", { class: "meta", text: ` (vector ${hit.vector_score.toFixed(4)})` }) : "",
    " ", element("strong", { text: hit.document_id }),
    element("div", { text: hit.text }),
    Object.keys(hit.metadata).length ? element("div", { class: "meta", text: JSON.stringify(hit.metadata) }) : "")));
}

async function runSearch() {
  const name = $("search-collection").value;
  if (!name) throw new Error("create or pick a collection first");
  const body = { query: $("search-query").value, top_k: Number($("search-top-k").value) || 5 };
  const path = `/v1/collections/${encodeURIComponent(name)}/search`;
  const rerank = $("search-rerank").checked;
  const [first, second] = await Promise.all([api("POST", path, { ...body, rerank: false }),
                                             rerank ? api("POST", path, { ...body, rerank: true }) : null]);
  renderHits($("search-first"), first.hits, false);
  $("search-reranked-column").hidden = !rerank;
  if (second) renderHits($("search-reranked"), second.hits, true);
}

async function pendingDocuments() {
  const stamp = Date.now();
  const pasted = lines($("ingest-texts").value).map((text, i) => ({ id: `pasted-${stamp}-${i + 1}`, text }));
  const files = await Promise.all([...$("ingest-files").files].map(async (file) => ({ id: file.name, text: await file.text(),
                                                                                          metadata: { source: "upload" } })));
  return [...pasted, ...files];
}

async function runIngest() {
  const name = $("search-collection").value;
  if (!name) throw new Error("create or pick a collection first");
  const documents = await pendingDocuments();
  if (!documents.length) throw new Error("paste texts or choose files to add");
  const progress = $("ingest-progress");
  progress.hidden = false;
  progress.max = documents.length;
  progress.value = 0;
  let chunks = 0;
  for (let start = 0; start < documents.length; start += 8) {  // small requests: progress moves, others are served between
    const batch = documents.slice(start, start + 8);
    const report = await api("POST", `/v1/collections/${encodeURIComponent(name)}/documents`, { documents: batch });
    chunks += report.chunks;
    progress.value = start + batch.length;
    $("ingest-info").textContent = `${progress.value} of ${documents.length} documents, ${chunks} chunks written`;
  }
  $("ingest-texts").value = "";
  $("ingest-files").value = "";
  await loadCollections();
}

// ------------------------------------------------------------------ evaluation

const MEASURES = ["NDCG@10", "Recall@100", "MRR@10"];

function evaluationRuns(fileName, report) {
  if (!report || typeof report.metrics !== "object") throw new Error(`${fileName} is not a q3embed eval JSON report`);
  const model = report.model && report.model.name ? report.model.name : "?";
  const base = `${fileName}: ${report.dataset || "?"}, ${model}, ${report.dimensions} dims`;
  return Object.entries(report.metrics).map(([stage, metrics]) => ({ label: stage === "dense" ? base : `${base}, reranked`, metrics }));
}

function drawChart(runs) {
  const svgNS = "http://www.w3.org/2000/svg";
  const width = 760, rowHeight = 18, groupGap = 16;
  const height = runs.length * (MEASURES.length * rowHeight + groupGap) + 10;
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", height); svg.setAttribute("id", "eval-svg");
  const colours = ["#1f6feb", "#2da44e", "#bf8700"];
  let y = 5;
  for (const run of runs) {
    MEASURES.forEach((measure, m) => {
      const value = run.metrics[measure];
      const bar = document.createElementNS(svgNS, "rect");
      bar.setAttribute("x", 110); bar.setAttribute("y", y); bar.setAttribute("height", rowHeight - 4);
      bar.setAttribute("width", Number.isFinite(value) ? value * (width - 200) : 0);
      bar.setAttribute("fill", colours[m]); bar.setAttribute("data-measure", measure);
      bar.setAttribute("data-value", Number.isFinite(value) ? value.toFixed(6) : "");
      const label = document.createElementNS(svgNS, "text");
      label.setAttribute("x", 0); label.setAttribute("y", y + rowHeight - 6); label.setAttribute("font-size", "12");
      label.textContent = `${measure} ${Number.isFinite(value) ? value.toFixed(4) : "-"}`;
      svg.append(bar, label);
      y += rowHeight;
    });
    y += groupGap;
  }
  return svg;
}

async function loadEvaluations() {
  const runs = [];
  for (const file of $("eval-files").files) {
    let report;
    try { report = JSON.parse(await file.text()); } catch (_) { throw new Error(`${file.name} is not JSON`); }
    runs.push(...evaluationRuns(file.name, report));
  }
  $("eval-chart").replaceChildren(drawChart(runs));
  const table = $("eval-table");
  table.replaceChildren(element("tr", {}, element("th", { text: "run" }), ...MEASURES.map((m) => element("th", { text: m }))),
    ...runs.map((run) => element("tr", {}, element("td", { text: run.label }),
      ...MEASURES.map((m) => element("td", { text: Number.isFinite(run.metrics[m]) ? run.metrics[m].toFixed(4) : "-" })))));
}

// ------------------------------------------------------------------ wiring

function start() {
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("api-key").addEventListener("change", () => { sessionStorage.setItem(KEY_STORAGE, $("api-key").value); guarded(loadModels)(); });
  for (const button of document.querySelectorAll("nav button")) button.addEventListener("click", () => showView(button.dataset.view));
  $("sim-run").addEventListener("click", guarded(runSimilarity));
  $("rr-run").addEventListener("click", guarded(runRerank));
  $("search-refresh").addEventListener("click", guarded(loadCollections));
  $("search-create").addEventListener("click", guarded(createCollection));
  $("search-run").addEventListener("click", guarded(runSearch));
  $("ingest-run").addEventListener("click", guarded(runIngest));
  $("eval-files").addEventListener("change", guarded(loadEvaluations));
  document.body.dataset.ready = "true";
  guarded(loadModels)();
}

start();
