// The walrus page: plain JavaScript calling the public API (/readyz, /v1/users,
// /v1/recommend, /v1/items/{id}/similar, /v1/experiments with the admin token). Text goes
// into the page as text nodes only.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { attributes: {}, history: [], answers: 0 };

// Counts the answers shown (or errors), for whoever waits on the page (its browser tests).
function answered() {
  state.answers += 1;
  document.body.dataset.answers = String(state.answers);
}

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

async function call(method, path, body, headers = {}) {
  const started = performance.now();
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body ? { "content-type": "application/json", ...headers } : headers,
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch (err) {
    throw new Error("Cannot reach the service: is it running?");
  }
  $("took").textContent = `${(performance.now() - started).toFixed(0)} ms`;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(explain(response, data));
  return data;
}

function explain(response, data) {
  const detail = data.detail;
  if (response.status === 422 && Array.isArray(detail)) {
    const parts = detail.map((d) => `${(d.loc || []).filter((x) => x !== "body").join(".")}: ${d.msg}`);
    return `The request was refused (422): ${parts.join("; ")}`;
  }
  if (response.status === 503) {
    const wait = response.headers.get("retry-after") || "a few";
    return `The service cannot answer now (503: ${detail || "not ready"}); retry in ${wait} s.`;
  }
  if (response.status === 404) return `Not found (404): ${detail}`;
  if (response.status === 401 || response.status === 403) {
    return `The admin token was refused (${response.status}): ${detail}`;
  }
  if (response.status === 504) return "The service did not answer in time (504); try again.";
  return `The service answered ${response.status}: ${typeof detail === "string" ? detail : "an error"}`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// ------------------------------------------------------------------ controls

function buildControls(attributes) {
  const filters = $("filters");
  const cap = $("cap-field");
  for (const [name, kind] of Object.entries(attributes)) {
    const id = `filter-${name}`;
    if (kind === "numeric") {
      filters.append(element("label", { htmlFor: `${id}-gte`, textContent: `${name} from` }));
      filters.append(element("input", { id: `${id}-gte`, type: "number", step: "any" }));
      filters.append(element("label", { htmlFor: `${id}-lte`, textContent: "to" }));
      filters.append(element("input", { id: `${id}-lte`, type: "number", step: "any" }));
    } else if (kind === "boolean") {
      filters.append(element("label", { htmlFor: id, textContent: name }));
      const select = element("select", { id });
      for (const [value, text] of [["", "any"], ["true", "yes"], ["false", "no"]]) {
        select.append(element("option", { value, textContent: text }));
      }
      filters.append(select);
    } else {
      const hint = kind === "tags" ? "any of, comma-separated" : "one of, comma-separated";
      filters.append(element("label", { htmlFor: id, textContent: name }));
      filters.append(element("input", { id, type: "text", placeholder: hint }));
    }
    if (kind === "categorical" || kind === "boolean") {
      cap.append(element("option", { value: name, textContent: name }));
    }
  }
  if (!Object.keys(attributes).length) {
    filters.append(element("p", { textContent: "This bundle has no filterable fields." }));
  }
}

function listOf(text) {
  return text.split(",").map((v) => v.trim()).filter(Boolean);
}

function filterSpec() {
  const spec = {};
  for (const [name, kind] of Object.entries(state.attributes)) {
    const id = `filter-${name}`;
    let condition = null;
    if (kind === "numeric") {
      const low = $(`${id}-gte`).value;
      const high = $(`${id}-lte`).value;
      condition = {};
      if (low !== "") condition.gte = Number(low);
      if (high !== "") condition.lte = Number(high);
      if (!Object.keys(condition).length) condition = null;
    } else if (kind === "boolean") {
      const value = $(id).value;
      if (value) condition = { eq: value === "true" };
    } else {
      const values = listOf($(id).value);
      if (values.length) condition = kind === "tags" ? { any: values } : { in: values };
    }
    if (condition) spec[name] = condition;
  }
  return Object.keys(spec).length ? spec : null;
}

function requestBody() {
  const body = { k: Number($("k").value || 10), offset: Number($("offset").value || 0) };
  const query = $("query").value.trim();
  if (query) body.query = query;
  if ($("new-user").checked) {
    if (state.history.length) body.history = state.history.map((h) => h.id);
  } else if ($("user").value.trim()) {
    body.user_id = $("user").value.trim();
  }
  const filter = filterSpec();
  if (filter) body.filter = filter;
  const capField = $("cap-field").value;
  const mmr = Number($("mmr").value || 0);
  if (capField) body.diversity = { field: capField, max_per_value: Number($("cap-count").value || 1), mmr };
  else if (mmr > 0) body.diversity = { mmr };
  if ($("explain").checked) body.explain = true;
  return body;
}

// ------------------------------------------------------------------ results

function card(item, withActions) {
  const badges = element("p", { className: "sources" });
  for (const source of item.sources) {
    badges.append(element("span", { className: `badge ${source}`, textContent: source }));
  }
  const node = element(
    "li",
    { className: "card" },
    element("h3", { textContent: item.title }),
    element("span", { className: "id", textContent: item.item_id }),
    element("span", { className: "score", textContent: `score ${item.score.toFixed(4)}` }),
    badges,
  );
  node.dataset.itemId = item.item_id;
  const because = item.explanation && item.explanation.because;
  if (because && because.length) {
    const list = element("ul", { className: "because" });
    for (const c of because) {
      const term = `${c.score >= 0 ? "+" : ""}${c.score.toFixed(3)}`;
      list.append(element("li", { textContent: `${c.title} (${term})` }));
    }
    const wals = item.explanation.wals_score;
    node.append(element("p", { textContent: `WALS score ${wals.toFixed(3)}, most from:` }), list);
  }
  if (withActions) {
    const similar = element("button", { type: "button", className: "show-similar", textContent: "Similar items" });
    similar.addEventListener("click", () => showSimilar(item.item_id, item.title));
    node.append(similar);
    if ($("new-user").checked) {
      const add = element("button", { type: "button", className: "add-history", textContent: "Add to history" });
      add.addEventListener("click", () => addToHistory(item));
      node.append(add);
    }
  }
  return node;
}

function render(list, items, withActions) {
  list.replaceChildren(...items.map((item) => card(item, withActions)));
  if (!items.length) list.append(element("li", { textContent: "No items." }));
}

function showWarnings(warnings) {
  $("warnings").textContent = warnings && warnings.length ? `Note: ${warnings.join("; ")}` : "";
  $("warnings").hidden = !(warnings && warnings.length);
}

async function recommend(event) {
  if (event) event.preventDefault();
  showError("");
  try {
    const data = await call("POST", "/v1/recommend", requestBody());
    render($("results"), data.items, true);
    showWarnings(data.warnings);
    $("bundle").textContent = data.bundle_id;
    $("arm").textContent = data.arm;
  } catch (err) {
    showError(err.message);
  }
  answered();
}

async function showSimilar(itemId, title) {
  showError("");
  try {
    const data = await call("GET", `/v1/items/${encodeURIComponent(itemId)}/similar?k=6`);
    $("similar-title").textContent = `Similar to ${title} (by ${data.source})`;
    render($("similar"), data.items, false);
    $("similar-section").hidden = false;
    $("similar-title").tabIndex = -1;
    $("similar-title").focus();
  } catch (err) {
    showError(err.message);
  }
  answered();
}

function addToHistory(item) {
  if (!state.history.some((h) => h.id === item.item_id)) {
    state.history.push({ id: item.item_id, title: item.title });
  }
  drawHistory();
}

function drawHistory() {
  $("history").replaceChildren(...state.history.map((h) => element("li", { textContent: h.title })));
  $("history-row").hidden = !$("new-user").checked;
}

// ------------------------------------------------------------------ start

let userTimer = null;
function suggestUsers() {
  clearTimeout(userTimer);
  userTimer = setTimeout(async () => {
    try {
      const prefix = encodeURIComponent($("user").value.trim());
      const data = await call("GET", `/v1/users?prefix=${prefix}&limit=20`);
      $("user-ids").replaceChildren(...data.user_ids.map((id) => element("option", { value: id })));
    } catch (err) {
      showError(err.message);
    }
  }, 150);
}

function page(step) {
  const k = Number($("k").value || 10);
  $("offset").value = Math.max(0, Number($("offset").value || 0) + step * k);
  recommend();
}

function percent(interval) {
  if (interval.value === null) return "no impressions yet";
  const p = (x) => `${(100 * x).toFixed(2)}%`;
  return `${p(interval.value)} (${p(interval.low)} to ${p(interval.high)})`;
}

// The running experiment's arms: GET /v1/experiments with the token typed in (kept in
// the page only, never stored).
async function showExperiment(event) {
  event.preventDefault();
  try {
    const token = $("admin-token").value;
    const report = await call("GET", "/v1/experiments", undefined, { authorization: `Bearer ${token}` });
    const body = $("experiment-arms").tBodies[0];
    body.replaceChildren();
    for (const [arm, r] of Object.entries(report.arms)) {
      const cells = [arm, r.bundle_id ?? "none", r.answers, r.events.impression ?? 0,
        r.events.click ?? 0, percent(r.ctr)];
      body.append(element("tr", {}, ...cells.map((c) => element("td", { textContent: String(c) }))));
    }
    $("experiment-arms").hidden = false;
    const share = `${(100 * report.share).toFixed(0)}% of users on ${report.candidate}`;
    $("experiment-status").textContent = report.running
      ? `Running: ${share}; candidate - control CTR ${percent(report.ctr_difference)}.`
      : report.stopped ? `Stopped: ${report.stopped}` : "No experiment runs: every user gets control.";
    showError("");
  } catch (err) {
    showError(err.message);
  }
  answered();
}

async function start() {
  $("ask").addEventListener("submit", recommend);
  $("experiment-form").addEventListener("submit", showExperiment);
  $("prev").addEventListener("click", () => page(-1));
  $("next").addEventListener("click", () => page(1));
  $("user").addEventListener("input", suggestUsers);
  $("new-user").addEventListener("change", () => {
    $("user").disabled = $("new-user").checked;
    drawHistory();
  });
  $("clear-history").addEventListener("click", () => {
    state.history = [];
    drawHistory();
  });
  try {
    const ready = await call("GET", "/readyz");
    state.attributes = ready.attributes || {};
    $("bundle").textContent = ready.bundle_id;
    const counts = ready.counts || {};
    $("size").textContent = `${counts.items ?? "?"} items, ${counts.users ?? "?"} users`;
    buildControls(state.attributes);
    document.body.dataset.ready = "true";
  } catch (err) {
    showError(err.message);
  }
}

document.addEventListener("DOMContentLoaded", start);
