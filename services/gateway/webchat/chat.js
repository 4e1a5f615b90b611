// Hearth WebChat: a conversation with the mesh through the gateway's own
// OpenAI-compatible API (streamed), with A2A's CancelTask for the stop
// button. Conversations are kept in this browser (localStorage); the token,
// when the gateway has one, only until the tab is closed (sessionStorage).
"use strict";

const $ = (id) => document.getElementById(id);
const KEEP = "hearth.conversations";
const CURRENT = "hearth.current";
const HISTORY = 8; // earlier messages sent with each question

const state = {
  token: sessionStorage.getItem("hearth.token") || "",
  needsToken: false,
  convs: [],
  current: null,
  running: null, // {controller, taskId, msg}
};

function load() {
  try {
    const v = JSON.parse(localStorage.getItem(KEEP) || "[]");
    state.convs = Array.isArray(v) ? v : [];
  } catch (_) {
    state.convs = [];
  }
  const id = localStorage.getItem(CURRENT);
  state.current = state.convs.find((c) => c.id === id) || state.convs[0] || null;
}

function save() {
  localStorage.setItem(KEEP, JSON.stringify(state.convs));
  if (state.current) localStorage.setItem(CURRENT, state.current.id);
}

function newId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Date.now().toString(36) + Math.random().toString(36).slice(2);
}

function newConversation() {
  const c = { id: newId(), title: "New conversation", messages: [] };
  state.convs.unshift(c);
  state.current = c;
  save();
  render();
  $("input").focus();
}

function headers(extra) {
  const h = Object.assign({ "Content-Type": "application/json" }, extra || {});
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function costLine(u) {
  if (!u) return "";
  const h = u.hearth || {};
  const parts = [];
  if (h.latency_ms != null) parts.push((h.latency_ms / 1000).toFixed(2) + " s");
  parts.push((u.prompt_tokens || 0) + " tokens in / " + (u.completion_tokens || 0) + " out");
  if (h.model) parts.push(h.model + (h.route ? " (" + h.route + ")" : ""));
  parts.push(h.energy_joules != null ? h.energy_joules.toFixed(2) + " J" : "energy unmeasured");
  parts.push(h.cost_usd != null ? "$" + h.cost_usd.toFixed(6) : "cost unknown");
  return parts.join(" · ");
}

function renderMessage(m) {
  const box = el("div", "msg " + m.role + (m.error ? " error" : ""));
  if (m.steps && m.steps.length) {
    const d = el("details", "steps");
    d.appendChild(el("summary", "", m.steps.length + " step" + (m.steps.length > 1 ? "s" : "") + " (tool calls)"));
    const ul = el("ul");
    for (const s of m.steps) ul.appendChild(el("li", "", s));
    d.appendChild(ul);
    box.appendChild(d);
  }
  const text =
    m.content || (m.pending ? "…" : m.error || (m.note === "stopped" ? "Stopped before an answer." : ""));
  box.appendChild(el("div", "text", text));
  if (m.usage) box.appendChild(el("div", "cost", costLine(m.usage)));
  else if (m.note) box.appendChild(el("div", "cost", m.note));
  return box;
}

function render() {
  const list = $("convs");
  list.replaceChildren();
  for (const c of state.convs) {
    const li = el("li");
    const b = el("button", "", c.title);
    b.type = "button";
    b.setAttribute("aria-current", String(c === state.current));
    b.addEventListener("click", () => {
      if (state.running) return;
      state.current = c;
      save();
      render();
      $("side").classList.remove("open");
    });
    li.appendChild(b);
    list.appendChild(li);
  }
  const log = $("log");
  log.replaceChildren();
  if (state.current) for (const m of state.current.messages) log.appendChild(renderMessage(m));
  log.scrollTop = log.scrollHeight;
  const busy = !!state.running;
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("status").textContent = busy ? "working…" : "";
}

function askToken() {
  return new Promise((resolve) => {
    const dlg = $("tokendlg");
    $("token").value = "";
    dlg.addEventListener(
      "close",
      () => {
        state.token = $("token").value.trim();
        sessionStorage.setItem("hearth.token", state.token);
        resolve();
      },
      { once: true }
    );
    dlg.showModal();
  });
}

// Reads one streamed completion: the answer's text as it comes, each
// progress update of the task as a step, the usage at the end.
async function readStream(resp, msg) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, at);
      buf = buf.slice(at + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        let c;
        try {
          c = JSON.parse(data);
        } catch (_) {
          continue;
        }
        if (c.error) {
          msg.error = c.error.message || "the task failed";
          continue;
        }
        if (c.id && c.id.startsWith("chatcmpl-") && state.running) {
          state.running.taskId = c.id.slice("chatcmpl-".length);
        }
        const h = c.hearth;
        // Work under way (tool calls and their results); the final status
        // repeats the answer.
        if (h && h.type === "hearth.status" && h.text && String(h.state).includes("WORKING")) {
          msg.steps.push(h.text);
        }
        for (const ch of c.choices || []) {
          if (ch.delta && ch.delta.content) msg.content += ch.delta.content;
        }
        if (c.usage) msg.usage = c.usage;
        render();
      }
    }
  }
}

async function send(text) {
  if (!state.current) newConversation();
  const conv = state.current;
  const history = conv.messages
    .filter((m) => !m.pending && !m.error && m.content)
    .slice(-HISTORY)
    .map((m) => ({ role: m.role, content: m.content }));
  conv.messages.push({ role: "user", content: text });
  if (conv.title === "New conversation") conv.title = text.slice(0, 60);
  const msg = { role: "assistant", content: "", steps: [], pending: true };
  conv.messages.push(msg);
  const controller = new AbortController();
  state.running = { controller, taskId: null, msg };
  save();
  render();
  const body = JSON.stringify({
    model: "hearth",
    stream: true,
    user: conv.id,
    messages: history.concat([{ role: "user", content: text }]),
  });
  try {
    let resp;
    for (let attempt = 0; attempt < 3; attempt++) {
      if (state.needsToken && !state.token) await askToken();
      resp = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers(),
        body,
        signal: controller.signal,
      });
      if (resp.status !== 401) break;
      state.needsToken = true;
      state.token = "";
    }
    if (!resp.ok) {
      let why = resp.status + " " + resp.statusText;
      try {
        why = (await resp.json()).error.message || why;
      } catch (_) {
        /* not JSON */
      }
      msg.error = why;
    } else {
      await readStream(resp, msg);
    }
  } catch (e) {
    if (e.name === "AbortError") msg.note = "stopped";
    else msg.error = "the gateway could not be reached: " + e.message;
  }
  msg.pending = false;
  // A stopped task ends canceled: that is not an error.
  if (msg.note === "stopped") delete msg.error;
  if (!msg.content && !msg.error && !msg.note) msg.error = "no answer";
  state.running = null;
  save();
  render();
}

// Stop: cancel the task through A2A, then stop reading.
async function stop() {
  const r = state.running;
  if (!r) return;
  r.msg.note = "stopped";
  if (r.taskId) {
    try {
      await fetch("/", {
        method: "POST",
        headers: headers({ "A2A-Version": "1.0" }),
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "CancelTask", params: { id: r.taskId } }),
      });
    } catch (_) {
      /* the stream is dropped below anyway */
    }
  }
  r.controller.abort();
}

async function start() {
  load();
  if (!state.current) newConversation();
  // The public card says whether the gateway wants a token.
  try {
    const card = await (await fetch("/.well-known/agent-card.json")).json();
    const schemes = card.securitySchemes || {};
    state.needsToken = Object.keys(schemes).length > 0;
  } catch (_) {
    state.needsToken = false;
  }
  render();
  $("ask").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("input").value.trim();
    if (!t || state.running) return;
    $("input").value = "";
    send(t);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("ask").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new").addEventListener("click", () => {
    if (!state.running) newConversation();
  });
  $("menu").addEventListener("click", () => $("side").classList.toggle("open"));
  if (state.needsToken && !state.token) await askToken();
  $("input").focus();
}

start();
