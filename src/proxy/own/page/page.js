// openai-proxy's page: reads `/` (as JSON), `/models` and `/usage` every 2 s while the tab is
// shown, and renders them with textContent only: nothing the proxy sends is parsed as HTML.
// With a client token (typed once, kept in this tab's sessionStorage) every fetch carries it.
"use strict";
(() => {
  const KEY = "openai-proxy-token";
  const EVERY = 2000;
  const KEEP = 200;
  const STATES = ["loaded", "loading", "unloaded"];
  const HEALTH = ["up", "out", "down"];
  const SVG = "http://www.w3.org/2000/svg";
  let timer = null;
  let busy = false;
  let waiting = false; // for a token
  let refused = false; // a token was refused
  let memoryToken = ""; // when sessionStorage cannot be used
  let since = null;
  let lastSeq = null;
  let recent = [];

  const $ = (id) => document.getElementById(id);

  /** A 401: the page asks for a token instead of showing anything. */
  class Refused extends Error {}

  function token() {
    try {
      return sessionStorage.getItem(KEY) || memoryToken;
    } catch (e) {
      return memoryToken;
    }
  }

  function keepToken(value) {
    memoryToken = value;
    try {
      if (value) sessionStorage.setItem(KEY, value);
      else sessionStorage.removeItem(KEY);
    } catch (e) {
      // memoryToken it is.
    }
  }

  /** A same-origin request to the proxy: its status and JSON (null when it is not JSON). */
  async function api(path, body) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    const init = { headers, cache: "no-store", credentials: "same-origin", redirect: "error" };
    if (body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    if (res.status === 401) {
      // Only for the token in use: an answer to a request sent with a token typed before (the
      // other requests of a poll) must not throw away the one typed since.
      if (t === token()) askToken(t !== "");
      throw new Refused("a client token is needed");
    }
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    return { status: res.status, ok: res.ok, data };
  }

  /** The message of an OpenAI-shaped error, or the status. */
  function errorText(r) {
    const m = r && r.data && r.data.error && r.data.error.message;
    return typeof m === "string" ? m : r ? "HTTP " + r.status : "no answer";
  }

  function askToken(hadOne) {
    if (hadOne) refused = true;
    keepToken("");
    waiting = true;
    $("login-note").textContent = refused
      ? "The proxy refused that token. Type a valid client token."
      : "This proxy needs a client token. It is kept in this tab only (sessionStorage) and sent with each request.";
    $("login").hidden = false;
    $("content").hidden = true;
    $("updated").textContent = "waiting for a client token";
  }

  function cell(value, cls) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined || value === "" ? "-" : String(value);
    if (cls) td.className = cls;
    return td;
  }

  const num = (n) => cell(typeof n === "number" ? String(n) : null, "num");
  const known = (v, list) => (list.includes(v) ? v : "");

  function row(cells) {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }

  /** Replaces a table's rows, unless what they show (`key`) is what they show already. */
  function fill(id, key, rows) {
    const table = $(id);
    if (table.dataset.key === key) return;
    table.dataset.key = key;
    table.tBodies[0].replaceChildren(...rows());
  }

  function note(id, text) {
    const p = $(id);
    p.textContent = text || "";
    p.hidden = !text;
  }

  function unavailable(id, what, r, err, path) {
    if (r && r.status === 404) note(id, what + " not available (this proxy has no " + path + ")");
    else note(id, what + " not available: " + (err ? err.message : errorText(r)));
  }

  function showStatus(r, err) {
    const s = r && r.ok && r.data && Array.isArray(r.data.routes) ? r.data : null;
    if (!s) return unavailable("status-note", "routes and backends", r, err, "/");
    note("status-note", "");
    $("version").textContent = typeof s.version === "string" ? s.version : "";
    fill("routes", JSON.stringify(s.routes), () =>
      s.routes.map((x) => row([cell(x.path), cell(x.backend), cell(x.fallback)])));
    const servers = [];
    for (const b of Array.isArray(s.backends) ? s.backends : []) {
      for (const v of Array.isArray(b.servers) ? b.servers : []) servers.push([b.name, v]);
    }
    fill("backends", JSON.stringify(servers), () =>
      servers.map(([name, v]) => row([cell(name), cell(v.url), cell(v.state, known(v.state, HEALTH)),
        cell(v.detail), num(v.in_flight)])));
  }

  /** A model's state: llama.cpp's router gives `status` as `{"value": ...}`, or a string. */
  function modelState(m) {
    const s = m.status;
    const v = s && typeof s === "object" ? s.value : s;
    return typeof v === "string" ? v : null;
  }

  function button(text, label, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.setAttribute("aria-label", label);
    b.addEventListener("click", onClick);
    return b;
  }

  function actions(name, state) {
    const td = document.createElement("td");
    const load = button("Load", "Load " + name, () => act("load", name));
    const unload = button("Unload", "Unload " + name, () => act("unload", name));
    load.disabled = state === "loaded" || state === "loading";
    unload.disabled = state === "unloaded";
    td.append(load, unload);
    return td;
  }

  function showModels(r, err) {
    const list = r && r.ok && r.data && Array.isArray(r.data.data) ? r.data.data : null;
    if (!list) {
      unavailable("models-note", "model states", r, err, "/models");
      return fill("models", "", () => []);
    }
    note("models-note", list.length ? "" : "no models listed");
    fill("models", JSON.stringify(list), () => list.map((m) => {
      const state = modelState(m);
      return row([cell(m.id), cell(m.backend), cell(state, known(state, STATES)),
        actions(String(m.id), state)]);
    }));
  }

  async function act(what, name) {
    const force = what === "unload" && $("force").checked;
    if (force && !window.confirm("Unload " + name + " now, ending its streams in flight?")) return;
    const out = $("action");
    out.className = "";
    out.textContent = what + " " + name + "…";
    const body = { model: name };
    if (force) body.force = true;
    try {
      const r = await api("/models/" + what, body);
      out.className = r.ok ? "ok" : "failed";
      out.textContent = what + " " + name + (r.ok ? ": done" : " failed: " + errorText(r));
    } catch (e) {
      out.className = "failed";
      out.textContent = e instanceof Refused ? "" : what + " " + name + " failed: " + e.message;
    }
    poll();
  }

  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  const duration = (ms) => (typeof ms !== "number" ? null
    : ms < 10 ? ms.toFixed(1) + " ms" : ms < 10000 ? Math.round(ms) + " ms"
      : (ms / 1000).toFixed(1) + " s");
  const rate = (r) => (typeof r === "number" ? r.toFixed(1) : null);
  const totals = (x) => [num(x.requests), num(x.prompt_tokens), num(x.completion_tokens)];

  function showUsage(r, err) {
    const u = r && r.ok && r.data && Array.isArray(r.data.recent) ? r.data : null;
    if (!u) return unavailable("usage-note", "usage", r, err, "/usage");
    note("usage-note", "");
    if (u.since !== since) {
      // Counting began again (a restart): this answer may lack the first requests.
      const partial = lastSeq !== null;
      since = u.since;
      recent = [];
      lastSeq = null;
      if (partial) return;
    }
    $("since").textContent = "Counting since " + new Date(u.since * 1000).toLocaleString();
    for (const e of u.recent) {
      if (lastSeq === null || e.seq > lastSeq) {
        recent.push(e);
        lastSeq = e.seq;
      }
    }
    recent = recent.slice(-KEEP);
    const models = Array.isArray(u.models) ? u.models : [];
    const clients = Array.isArray(u.clients) ? u.clients : [];
    fill("usage-models", JSON.stringify(models), () =>
      models.map((m) => row([cell(m.model), ...totals(m)])));
    fill("usage-clients", JSON.stringify(clients), () =>
      clients.map((c) => row([cell(c.client || "-"), ...totals(c)])));
    const limits = Array.isArray(u.limits) ? u.limits : [];
    $("usage-limits").hidden = limits.length === 0;
    fill("usage-limits", JSON.stringify(limits), () => limits.map((c) => row([cell(c.client),
      num(c.in_flight), num(c.tokens_today), cell(limitWords(c)), num(c.refused)])));
    fill("recent", String(lastSeq) + ":" + recent.length, () => recent.slice().reverse().map((e) =>
      row([cell(clock(e.time)), cell(e.client), cell(e.model), cell(e.backend),
        cell(e.status, e.status < 400 ? "ok" : "failed"), num(e.prompt_tokens),
        num(e.completion_tokens), cell(duration(e.duration_ms), "num"),
        cell(rate(e.tokens_per_second), "num")])));
    chart(Array.isArray(u.minutes) ? u.minutes : []);
  }

  /** A client's limits in words: "2 at once, 60 requests/min, 10000 tokens/day". */
  function limitWords(c) {
    return [[c.max_concurrent, " at once"], [c.requests_per_minute, " requests/min"],
      [c.tokens_per_minute, " tokens/min"], [c.tokens_per_day, " tokens/day"]]
      .filter(([n]) => typeof n === "number").map(([n, what]) => n + what).join(", ");
  }

  function svg(name, attrs, text) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  /** Bars of the last 60 minutes, prompt tokens under completion tokens. */
  function chart(minutes) {
    const W = 640, H = 150, top = 14, bottom = 18, left = 4, bar = W / 60;
    const key = JSON.stringify(minutes) + Math.floor(Date.now() / 60000);
    const box = $("chart");
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    const last = minutes.reduce((m, x) => Math.max(m, x.minute), 0);
    const end = Math.max(Math.floor(Date.now() / 60000) * 60, last);
    const start = end - 59 * 60;
    const shown = minutes.filter((x) => x.minute >= start && x.minute <= end);
    const sum = (x) => (x.prompt_tokens || 0) + (x.completion_tokens || 0);
    const max = shown.reduce((m, x) => Math.max(m, sum(x)), 0);
    const all = shown.reduce((s, x) => s + sum(x), 0);
    const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": `Tokens per minute: ${all} in the last hour, at most ${max} in a minute` });
    g.append(svg("line", { x1: 0, x2: W, y1: H - bottom, y2: H - bottom, class: "base" }));
    const scale = max ? (H - top - bottom) / max : 0;
    for (const x of shown) {
      const at = left + ((x.minute - start) / 60) * bar;
      const p = (x.prompt_tokens || 0) * scale, c = (x.completion_tokens || 0) * scale;
      const group = svg("g", {});
      group.append(svg("title", {}, `${clock(x.minute)}: ${x.prompt_tokens || 0} prompt, ` +
        `${x.completion_tokens || 0} completion tokens`));
      group.append(svg("rect", { x: at, y: H - bottom - p, width: bar - 2, height: p, class: "prompt" }));
      group.append(svg("rect", { x: at, y: H - bottom - p - c, width: bar - 2, height: c, class: "completion" }));
      g.append(group);
    }
    g.append(svg("text", { x: 0, y: 11, class: "axis" }, max ? `${max} tokens/min` : "no tokens in the last hour"));
    g.append(svg("text", { x: 0, y: H - 4, class: "axis" }, "60 min ago"));
    g.append(svg("text", { x: W, y: H - 4, class: "axis", "text-anchor": "end" }, "now"));
    // The key: which colour is which.
    g.append(svg("rect", { x: W - 150, y: 2, width: 10, height: 10, class: "prompt key" }),
      svg("text", { x: W - 136, y: 11, class: "axis" }, "prompt"),
      svg("rect", { x: W - 85, y: 2, width: 10, height: 10, class: "completion key" }),
      svg("text", { x: W - 71, y: 11, class: "axis" }, "completion"));
    box.replaceChildren(g);
  }

  function settle(result, show) {
    if (result.status === "fulfilled") show(result.value, null);
    else if (!(result.reason instanceof Refused)) show(null, result.reason);
  }

  async function poll() {
    if (busy || waiting) return;
    busy = true;
    clearTimeout(timer);
    const asked = token();
    try {
      const usage = lastSeq === null ? "/usage" : "/usage?after=" + encodeURIComponent(lastSeq);
      const [s, m, u] = await Promise.allSettled([api("/"), api("/models"), api(usage)]);
      // Answers to another token than the one now in use are not shown.
      if (!waiting && token() === asked) {
        settle(s, showStatus);
        settle(m, showModels);
        settle(u, showUsage);
        $("updated").textContent = "updated " + new Date().toLocaleTimeString([], { hour12: false });
      }
    } finally {
      busy = false;
      if (token() !== asked && !waiting) {
        poll();
      } else {
        schedule();
      }
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (!document.hidden && !waiting) timer = setTimeout(poll, EVERY);
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (!value) return;
    keepToken(value);
    waiting = false;
    $("login").hidden = true;
    $("content").hidden = false;
    poll();
  });

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) return poll();
    clearTimeout(timer);
    timer = null;
    $("updated").textContent = "paused while the tab is hidden";
  });

  poll();
})();
