// The wardgate console: a small single-page app over /api (no framework, no build step, nothing remote).
// Recorded content is untrusted: it only ever reaches the page as text nodes (el() and textContent),
// never as HTML. The token lives in sessionStorage and is sent as a Bearer credential.
"use strict";

const TOKEN_KEY = "wardgate.token";
const MASK = /\[MASKED:[^\]\n]{1,64}\]/g;
const view = () => document.getElementById("view");

// --- DOM helpers: the only way anything is put on the page --------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Recorded text with each [MASKED:rule] marker set off; every piece is a text node.
function maskedText(text) {
  const out = document.createDocumentFragment();
  let last = 0;
  for (const match of String(text).matchAll(MASK)) {
    out.append(document.createTextNode(text.slice(last, match.index)));
    out.append(el("span", { class: "masked", title: "masked by the gateway" }, match[0]));
    last = match.index + match[0].length;
  }
  out.append(document.createTextNode(String(text).slice(last)));
  return out;
}

function show(...nodes) {
  view().replaceChildren(...nodes);
}

function fmtTime(ns) {
  return ns ? new Date(ns / 1e6).toISOString().replace("T", " ").replace("Z", "") : "-";
}

function fmtMs(ns) {
  if (ns === null || ns === undefined) return "-";
  const ms = ns / 1e6;
  return ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : ms.toFixed(1) + " ms";
}

// --- the API --------------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function call(path, options) {
  const response = await fetch(path, {
    ...(options || {}),
    headers: { ...((options && options.headers) || {}), Authorization: "Bearer " + token() },
    cache: "no-store",
  });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    location.hash = "#/login";
    throw new Error("not logged in");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail;
    } catch (_) {
      /* not a JSON problem */
    }
    throw new Error(response.status + ": " + detail);
  }
  return response;
}

async function api(path) {
  return (await call(path)).json();
}

function failed(error) {
  show(el("p", { class: "error", id: "error" }, String(error.message || error)));
}

// --- login ----------------------------------------------------------------------------------------

function loginPage(message) {
  const box = el("textarea", { id: "token", placeholder: "OIDC access token or wg_… service key", spellcheck: "false" });
  const note = el("p", { class: "error", id: "login-error" }, message || "");
  const form = el(
    "form",
    { class: "login card", id: "login-form" },
    el("h1", {}, "Log in"),
    el("p", { class: "muted" }, "Paste a token of a member of the auditor or approver group. It is kept in this tab only."),
    box,
    el("div", { class: "actions" }, el("button", { class: "primary", type: "submit", id: "login" }, "Log in")),
    note,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, box.value.trim());
    try {
      const me = await whoami();
      location.hash = me.roles.includes("auditor") ? "#/sessions" : "#/approvals";
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      loginPage(String(error.message || error));
    }
  });
  show(form);
}

async function whoami() {
  const me = await api("/api/me");
  const who = me.identity.email || me.identity.subject || "anonymous";
  document.getElementById("whoami").textContent = who + " · " + (me.roles.join(", ") || "no role");
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  return me;
}

// --- sessions ------------------------------------------------------------------------------------

const FILTERS = [
  ["text", "search prompts and responses"],
  ["user", "user"],
  ["group", "group"],
  ["model", "model"],
  ["status", "status"],
  ["since", "since (2h, ISO)"],
  ["until", "until"],
];

async function sessionsPage(params) {
  const inputs = FILTERS.map(([name, hint]) =>
    el("input", { name, id: "q-" + name, placeholder: hint, value: params.get(name) || "" }),
  );
  const form = el("form", { class: "filters", id: "filters" }, ...inputs, el("button", { class: "primary", type: "submit", id: "search" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const input of inputs) if (input.value.trim()) query.set(input.name, input.value.trim());
    location.hash = "#/sessions?" + query.toString();
  });
  const body = el("tbody", { id: "sessions" });
  const table = el(
    "table",
    {},
    el("thead", {}, el("tr", {}, ...["Session", "User", "Client", "Started (UTC)", "Span", "Exchanges", "Errors", "Models"].map((h) => el("th", {}, h)))),
    body,
  );
  const more = el("button", { id: "more", type: "button", hidden: "" }, "More");
  const status = el("p", { class: "muted", id: "count" });
  show(el("h1", {}, "Sessions"), form, status, table, el("div", { class: "actions" }, more));
  let cursor = null;
  let shown = 0;
  async function load() {
    const query = new URLSearchParams();
    for (const [name] of FILTERS) if (params.get(name)) query.set(name, params.get(name));
    if (cursor) query.set("cursor", cursor);
    const page = await api("/api/sessions?" + query.toString());
    for (const row of page.items) {
      const link = el("a", { href: "#/session/" + encodeURIComponent(row.id), class: "mono session-link" }, row.id);
      body.append(
        el(
          "tr",
          {},
          el("td", {}, link),
          el("td", {}, row.email || row.subject),
          el("td", { class: "mono" }, row.client_addr),
          el("td", {}, fmtTime(row.first_ns)),
          el("td", { class: "num" }, fmtMs(row.last_ns - row.first_ns)),
          el("td", { class: "num" }, row.exchanges),
          el("td", { class: "num" }, row.errors),
          el("td", {}, row.models.join(", ")),
        ),
      );
    }
    shown += page.items.length;
    status.textContent = shown ? shown + " sessions" : "No session matches.";
    cursor = page.next_cursor;
    more.hidden = !cursor;
  }
  more.addEventListener("click", () => load().catch(failed));
  await load();
}

// --- one session ---------------------------------------------------------------------------------

function identityLine(record) {
  const id = record.identity || {};
  const parts = [
    el("b", {}, id.email || id.subject || record.subject || "anonymous"),
    " via " + (id.method || "none"),
  ];
  if (id.groups && id.groups.length) parts.push(" · groups " + id.groups.join(", "));
  return el("span", { class: "identity" }, ...parts);
}

function messageBlock(role, text) {
  return el("div", { class: "msg " + role }, el("div", { class: "role" }, role), el("pre", {}, maskedText(text)));
}

function exchangeCard(record) {
  const ok = record.outcome === "complete" && record.status < 400 && !record.error;
  const card = el(
    "section",
    { class: "card exchange", id: "x-" + record.exchange_id },
    el(
      "div",
      { class: "meta" },
      el("span", {}, fmtTime(record.started_ns)),
      identityLine(record),
      el("span", { class: "mono" }, record.method + " " + record.path),
      el("span", { class: "badge " + (ok ? "good" : "bad") }, (record.status || "-") + " " + record.outcome),
      el("span", {}, "first byte " + fmtMs(record.ttfb_ns) + " · total " + fmtMs(record.duration_ns)),
      record.model ? el("span", {}, "model ", el("b", {}, record.model)) : null,
      record.stream ? el("span", { class: "badge" }, "streamed · " + record.chunks + " chunks") : null,
    ),
  );
  for (const message of record.messages || []) card.append(messageBlock(message.role, message.content));
  if (record.reasoning_text) card.append(messageBlock("reasoning", record.reasoning_text));
  if (record.response_text) card.append(messageBlock("assistant", record.response_text));
  for (const callItem of record.tool_calls || []) {
    card.append(messageBlock("tool", callItem.name + "(" + callItem.arguments + ")"));
  }
  if (record.error) card.append(el("p", { class: "error" }, record.error));
  const details = el("details", {}, el("summary", {}, "Recorded events, headers and chunks"));
  details.addEventListener("toggle", () => {
    if (details.open && details.childElementCount === 1) loadDetails(record.exchange_id, details).catch((e) => details.append(el("p", { class: "error" }, e.message)));
  });
  card.append(
    details,
    el(
      "div",
      { class: "actions" },
      el("a", { href: "#/replay/" + encodeURIComponent(record.exchange_id), class: "replay-link" }, el("button", { type: "button" }, "▶ Replay")),
    ),
  );
  return card;
}

async function loadDetails(exchangeId, into) {
  const detail = await api("/api/exchanges/" + encodeURIComponent(exchangeId));
  const events = el("tbody", {});
  for (const event of detail.events) {
    events.append(el("tr", {}, el("td", { class: "num" }, fmtMs(event.t_ns)), el("td", {}, event.direction), el("td", {}, event.type), el("td", { class: "mono" }, JSON.stringify(event.fields))));
  }
  into.append(el("h2", {}, "Events"), el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "t"), el("th", {}, "direction"), el("th", {}, "type"), el("th", {}, "fields"))), events));
  for (const [title, message] of [["Request", detail.request], ["Response", detail.response]]) {
    if (!message) continue;
    const head = message.method ? message.method + " " + message.target : "HTTP " + message.status;
    const lines = [head, ...message.headers.map(([name, value]) => name + ": " + value)];
    into.append(el("h2", {}, title), el("pre", { class: "card" }, lines.join("\n")));
  }
  const chunks = el("tbody", {});
  for (const chunk of detail.chunks) chunks.append(el("tr", {}, el("td", { class: "num" }, fmtMs(chunk.t_ns)), el("td", { class: "num" }, chunk.bytes), el("td", {}, el("pre", {}, chunk.text))));
  into.append(el("h2", {}, "Chunks (" + detail.chunks.length + ")"), el("table", {}, chunks));
}

async function sessionPage(sessionId) {
  const detail = await api("/api/sessions/" + encodeURIComponent(sessionId));
  const row = detail.session;
  const exportButton = el("button", { type: "button", id: "export" }, "Export JSON Lines");
  exportButton.addEventListener("click", async () => {
    const blob = await (await call("/api/sessions/" + encodeURIComponent(sessionId) + "/export")).blob();
    const link = el("a", { href: URL.createObjectURL(blob), download: "wardgate-session-" + sessionId + ".jsonl" });
    link.click();
    URL.revokeObjectURL(link.href);
  });
  show(
    el("h1", {}, "Session ", el("span", { class: "mono", id: "session-id" }, row.id)),
    el(
      "div",
      { class: "card meta" },
      el("span", {}, "user ", el("b", {}, row.email || row.subject)),
      el("span", {}, " · client " + row.client_addr),
      el("span", {}, " · " + fmtTime(row.first_ns) + " → " + fmtTime(row.last_ns)),
      el("span", {}, " · " + row.exchanges + " exchanges, " + row.errors + " with errors"),
      el("div", { class: "actions" }, exportButton),
    ),
    ...detail.exchanges.map(exchangeCard),
  );
}

// --- replay player -------------------------------------------------------------------------------

async function replayPage(exchangeId) {
  const replay = await api("/api/exchanges/" + encodeURIComponent(exchangeId) + "/replay");
  const steps = replay.steps;
  const total = Math.max(replay.duration_ns, steps.length ? steps[steps.length - 1].t_ns : 0, 1);
  const screen = el("pre", { class: "screen", id: "replay-text" });
  const progress = el("div", { class: "progress" });
  const timeline = el("div", { class: "timeline", id: "timeline", title: "click to seek" }, progress);
  for (const step of steps) {
    const tick = el("span", { class: "tick" });
    tick.style.left = ((100 * step.t_ns) / total).toFixed(3) + "%"; // CSSOM: the CSP forbids style attributes
    timeline.append(tick);
  }
  const play = el("button", { class: "primary", type: "button", id: "play" }, "▶ Play");
  const speed = el("select", { id: "speed" }, ...["0.25", "0.5", "1", "2", "4", "8"].map((s) => el("option", s === "1" ? { value: s, selected: "" } : { value: s }, s + "×")));
  const clock = el("span", { class: "mono", id: "clock" });
  const tools = el("pre", { id: "replay-tools" });
  let position = 0; // ns into the exchange
  let next = 0; // index of the next step to show
  let playing = false;
  let lastFrame = 0;

  function render() {
    progress.style.width = ((100 * Math.min(position, total)) / total).toFixed(3) + "%";
    clock.textContent = fmtMs(Math.min(position, total)) + " / " + fmtMs(total) + " · chunk " + next + "/" + steps.length;
  }
  function seek(to) {
    position = Math.max(0, Math.min(to, total));
    screen.replaceChildren();
    next = 0;
    advance();
  }
  function advance() {
    while (next < steps.length && steps[next].t_ns <= position) {
      screen.append(maskedText(steps[next].text));
      next += 1;
    }
    if (next >= steps.length && position >= total) {
      tools.textContent = replay.tool_calls_text;
      stop();
    }
    render();
  }
  function tick(now) {
    if (!playing) return;
    position += (now - lastFrame) * 1e6 * Number(speed.value);
    lastFrame = now;
    advance();
    if (playing) requestAnimationFrame(tick);
  }
  function start() {
    if (position >= total) seek(0);
    playing = true;
    play.textContent = "❚❚ Pause";
    lastFrame = performance.now();
    requestAnimationFrame(tick);
  }
  function stop() {
    playing = false;
    play.textContent = "▶ Play";
  }
  play.addEventListener("click", () => (playing ? stop() : start()));
  timeline.addEventListener("click", (event) => {
    const box = timeline.getBoundingClientRect();
    seek(((event.clientX - box.left) / box.width) * total);
  });
  show(
    el("h1", {}, "Replay ", el("span", { class: "mono" }, exchangeId)),
    el(
      "div",
      { class: "player" },
      el("div", { class: "controls" }, play, el("label", {}, "speed ", speed), clock),
      timeline,
      screen,
      tools,
    ),
  );
  render();
}

// --- live tail -----------------------------------------------------------------------------------

let tailAbort = null;

async function tailPage() {
  const body = el("tbody", { id: "tail" });
  const state = el("p", { class: "muted", id: "tail-state" }, "connecting…");
  show(
    el("h1", {}, "Live tail"),
    state,
    el("table", {}, el("thead", {}, el("tr", {}, ...["Time (UTC)", "User", "Request", "Status", "Duration", "Model", "Answer"].map((h) => el("th", {}, h)))), body),
  );
  tailAbort = new AbortController();
  const response = await call("/api/tail", { signal: tailAbort.signal });
  state.textContent = "following the session log";
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
      if (!data) continue;
      const record = JSON.parse(data);
      const row = el(
        "tr",
        { class: "tail-row new" },
        el("td", {}, fmtTime(record.started_ns)),
        el("td", {}, (record.identity && record.identity.email) || record.subject),
        el("td", { class: "mono" }, el("a", { href: "#/session/" + encodeURIComponent(record.session_id) }, record.method + " " + record.path)),
        el("td", {}, record.status),
        el("td", { class: "num" }, fmtMs(record.duration_ns)),
        el("td", {}, record.model),
        el("td", {}, maskedText(record.response_text.slice(0, 160))),
      );
      body.prepend(row);
    }
  }
}

// --- log integrity -------------------------------------------------------------------------------

async function verifyPage() {
  show(el("h1", {}, "Log integrity"), el("p", { class: "muted" }, "Verifying every record…"));
  const result = await api("/api/verify");
  const report = result.report;
  const lines = [
    ["Result", result.ok ? "OK: every CRC and chain link verified" : "CORRUPT"],
    ["Series", result.series.length + " (below: series " + report.series + (result.ok ? "" : ", the first that failed") + ")"],
    ["Segments", report.segments],
    ["Frames", report.frames],
    ["Bytes", report.bytes],
    ["Signed checkpoints", report.checkpoints + (report.key_fingerprint ? " (key " + report.key_fingerprint + ")" : " (signatures not checked)")],
    ["Anchored up to", report.anchored ? "segment " + report.anchored.segment + " offset " + report.anchored.offset + " (" + report.anchored.frames + " frames)" : "-"],
    ["Not yet anchored", report.unanchored ? report.unanchored.frames + " frames" : "none"],
    ["First error", report.first_error ? report.first_error.reason : "none"],
    ["Checked at", fmtTime(result.checked_ns)],
  ];
  show(
    el("h1", {}, "Log integrity"),
    el("table", { id: "verify" }, el("tbody", {}, ...lines.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", { class: k === "Result" ? (result.ok ? "ok" : "error") : "" }, v))))),
  );
}

// --- the audit of the auditors ------------------------------------------------------------------

async function auditPage(params) {
  const query = new URLSearchParams({ limit: "200" });
  for (const name of ["actor", "target"]) if (params.get(name)) query.set(name, params.get(name));
  const page = await api("/api/audit?" + query.toString());
  const body = el("tbody", { id: "audit" });
  for (const entry of page.items) {
    const target = entry.target
      ? el("a", { href: "#/audit?target=" + encodeURIComponent(entry.target), class: "mono" }, entry.target)
      : "";
    body.append(
      el(
        "tr",
        {},
        el("td", {}, fmtTime(entry.ts_ns)),
        el("td", {}, entry.identity.email || entry.identity.subject || "anonymous"),
        el("td", {}, entry.action),
        el("td", {}, target),
        el("td", { class: "mono" }, entry.query),
        el("td", { class: "mono" }, entry.client_addr),
      ),
    );
  }
  show(
    el("h1", {}, "Audit trail"),
    el("p", { class: "muted" }, "Every look at recorded traffic through this console is itself recorded. " + (page.complete ? "Whole log read." : "Most recent segments read.")),
    el("table", {}, el("thead", {}, el("tr", {}, ...["Time (UTC)", "Who", "Action", "Target", "Filters", "From"].map((h) => el("th", {}, h)))), body),
  );
}

// --- approvals: tool calls held for a decision -----------------------------------------------------

const APPROVALS_REFRESH_MS = 3000;
let approvalsTimer = null;

function fmtLeft(ns) {
  const s = Math.max(0, Math.floor((ns - Date.now() * 1e6) / 1e9));
  return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
}

function contentText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((part) => (part && part.text) || "").join("");
  return content === null || content === undefined ? "" : JSON.stringify(content);
}

function holdCard(hold, onDecided) {
  const who = hold.requested_by;
  const comment = el("textarea", { class: "comment", placeholder: "comment (recorded with the decision)", maxlength: "2000" });
  const status = el("p", { class: "decision-status" });
  const expiry = el("span", { class: "expiry" });
  const tick = () => (expiry.textContent = "expires in " + fmtLeft(hold.expires_at_ns));
  tick();
  const buttons = [];
  async function decide(verb) {
    for (const button of buttons) button.disabled = true;
    status.className = "decision-status muted";
    status.textContent = verb === "approve" ? "approving…" : "denying…";
    try {
      const body = JSON.stringify({ arguments_sha256: hold.arguments_sha256, comment: comment.value });
      const path = "/api/approvals/" + encodeURIComponent(hold.hold_id) + "/" + verb;
      await call(path, { method: "POST", body, headers: { "Content-Type": "application/json" } });
      status.className = "decision-status ok";
      status.textContent = verb === "approve" ? "Approved: the agent receives this call." : "Denied: the agent is told so.";
      card.classList.add("decided");
      onDecided(hold.hold_id);
    } catch (error) {
      status.className = "decision-status error";
      status.textContent = String(error.message || error);
      for (const button of buttons) button.disabled = false;
    }
  }
  buttons.push(
    el("button", { class: "primary approve", type: "button", onclick: () => decide("approve") }, "Approve"),
    el("button", { class: "deny", type: "button", onclick: () => decide("deny") }, "Deny"),
  );
  const card = el(
    "section",
    { class: "card hold", id: "hold-" + hold.hold_id },
    el(
      "div",
      { class: "meta" },
      el("span", { class: "mono" }, hold.hold_id),
      el("span", {}, "rule ", el("b", {}, hold.rule)),
      identityLine({ identity: who }),
      el("span", {}, "session ", el("a", { href: "#/session/" + encodeURIComponent(hold.session_id), class: "mono" }, hold.session_id)),
      el("span", {}, "held since " + fmtTime(hold.created_at_ns)),
      expiry,
      el("span", {}, "may decide: " + (hold.approver_groups.join(", ") || "-")),
    ),
  );
  for (const message of hold.context) {
    const role = String(message.role || "?");
    const text = contentText(message.content);
    if (text) card.append(messageBlock(role, text));
    for (const toolCall of message.tool_calls || []) {
      const fn = (toolCall && toolCall.function) || {};
      card.append(messageBlock("tool", String(fn.name || "") + "(" + String(fn.arguments || "") + ")"));
    }
  }
  card.append(
    el(
      "div",
      { class: "held-call" },
      el("div", {}, el("span", { class: "role" }, "held tool call"), el("span", { class: "muted mono" }, " · id " + hold.call_id)),
      el("pre", { class: "call" }, maskedText(hold.tool_name + "(" + hold.arguments + ")")),
      el("div", { class: "muted mono" }, "arguments sha256 " + hold.arguments_sha256),
    ),
    comment,
    el("div", { class: "actions" }, ...buttons),
    status,
  );
  card.tick = tick;
  return card;
}

async function approvalsPage() {
  const list = el("div", { id: "holds" });
  const state = el("p", { class: "muted", id: "holds-state" });
  const refresh = el("button", { type: "button", id: "refresh" }, "Refresh");
  show(
    el("h1", {}, "Approvals"),
    el("p", { class: "muted" }, "Tool calls the model asked for that a rule holds until someone decides. A decision is bound to the exact call shown here; no decision before the expiry denies it."),
    el("div", { class: "actions" }, refresh),
    state,
    list,
  );
  const decided = new Set();
  async function load() {
    const page = await api("/api/approvals");
    const pending = new Set(page.items.map((hold) => hold.hold_id));
    for (const card of [...list.children]) {
      const id = card.id.slice("hold-".length);
      if (!pending.has(id) && !decided.has(id)) card.remove(); // decided elsewhere, expired, or gone
      else if (card.tick) card.tick();
    }
    for (const hold of page.items) {
      if (!document.getElementById("hold-" + hold.hold_id)) list.append(holdCard(hold, (id) => decided.add(id)));
    }
    const waiting = page.items.filter((hold) => !decided.has(hold.hold_id)).length;
    state.textContent = waiting ? waiting + " waiting for a decision" : "No tool call is waiting for a decision.";
  }
  refresh.addEventListener("click", () => load().catch(failed));
  await load();
  approvalsTimer = setInterval(() => load().catch((error) => (state.textContent = String(error.message || error))), APPROVALS_REFRESH_MS);
}

// --- routing -------------------------------------------------------------------------------------

async function route() {
  if (tailAbort) {
    tailAbort.abort();
    tailAbort = null;
  }
  if (approvalsTimer) {
    clearInterval(approvalsTimer);
    approvalsTimer = null;
  }
  const hash = location.hash.slice(1) || "/sessions";
  const [path, queryString] = hash.split("?");
  if (!token() || path === "/login") {
    loginPage("");
    return;
  }
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (!document.getElementById("whoami").textContent) await whoami();
    if (parts[0] === "session" && parts[1]) await sessionPage(parts[1]);
    else if (parts[0] === "replay" && parts[1]) await replayPage(parts[1]);
    else if (parts[0] === "tail") await tailPage();
    else if (parts[0] === "verify") await verifyPage();
    else if (parts[0] === "audit") await auditPage(new URLSearchParams(queryString || ""));
    else if (parts[0] === "approvals") await approvalsPage();
    else await sessionsPage(new URLSearchParams(queryString || ""));
  } catch (error) {
    if (error.name !== "AbortError") failed(error);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("whoami").textContent = "";
    document.getElementById("nav").hidden = true;
    document.getElementById("logout").hidden = true;
    location.hash = "#/login";
  });
  window.addEventListener("hashchange", route);
  route();
});
