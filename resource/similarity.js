/* Labelloop similarity labeling page (Finetuner-style): question cards, keyboard, progress.
 * Talks to the webapp's JSON API; data from the API only reaches the page through textContent
 * and attribute values, never as HTML. */
(function () {
  "use strict";

  const boot = JSON.parse(document.getElementById("sl-bootstrap").textContent);
  const API = boot.api_base;
  const USER_KEY = "labelloop.user";
  const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"];
  const $ = (id) => document.getElementById(id);

  const state = {
    cards: [],        // {q, selected:Set, done:false, el}
    active: 0,
    session: 0,       // questions answered on this page
    stats: null,
    fetching: false,
    pollTimer: null,
  };

  // ---------------------------------------------------------------- identity & HTTP
  function user() { return boot.user || localStorage.getItem(USER_KEY) || ""; }

  function headers(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    const name = user();
    if (name && !boot.user) h["X-Labelloop-User"] = /^[\x20-\x7e\xa0-\xff]*$/.test(name) ? name : encodeURIComponent(name);
    return h;
  }

  async function call(method, path, body) {
    const resp = await fetch(API + path, {
      method: method, headers: headers(body !== undefined), cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch (e) { data = { error: text.slice(0, 300) }; } }
    if (!resp.ok) {
      const err = new Error((data && data.error) || resp.status + " " + resp.statusText);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function askName() {
    return new Promise((resolve) => {
      const dialog = $("sl-name-dialog");
      const input = $("sl-name-input");
      input.value = localStorage.getItem(USER_KEY) || boot.session_user || "";
      $("sl-name-form").onsubmit = (ev) => {
        ev.preventDefault();
        const name = input.value.trim();
        if (!name) return;
        localStorage.setItem(USER_KEY, name);
        dialog.close();
        showUser();
        resolve(name);
      };
      dialog.showModal();
      input.focus();
    });
  }

  function showUser() {
    const name = user();
    $("sl-user").hidden = !name;
    $("sl-user-name").textContent = name;
  }

  // ---------------------------------------------------------------- rendering
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function mediaUrl(data) {
    // The webapp's media route, relative to its API base (the URL carries the file's version).
    return typeof data.media === "string" && /^media\?/.test(data.media) ? API + "/" + data.media : "";
  }

  function renderItem(data) {
    const kind = (data && data.type) || "tabular";
    const box = el("div", "sl-item sl-item-" + kind);
    if (kind === "image") {
      const img = el("img");
      img.src = mediaUrl(data);
      img.alt = data.path || "image";
      box.appendChild(img);
    } else if (kind === "sound") {
      const audio = el("audio");
      audio.controls = true;
      audio.preload = "metadata";
      audio.src = mediaUrl(data);
      // The player never keeps the keyboard: the number keys and Space stay the page's.
      audio.tabIndex = -1;
      audio.addEventListener("focus", () => audio.blur());
      box.appendChild(audio);
      box.appendChild(el("div", "sl-muted", data.path || ""));
    } else if (kind === "text") {
      box.appendChild(el("div", "sl-item-text", data.text || ""));
    } else {
      const table = el("table", "sl-item-table");
      for (const [k, v] of data.fields || []) {
        const tr = el("tr");
        tr.appendChild(el("td", null, k));
        tr.appendChild(el("td", null, v === null ? "" : v));
        table.appendChild(tr);
      }
      box.appendChild(table);
    }
    return box;
  }

  function renderCards() {
    const panel = $("sl-questions");
    for (const old of panel.querySelectorAll(".sl-card")) old.remove();
    $("sl-placeholder").hidden = state.cards.length > 0;
    state.cards.forEach((card, ci) => {
      const q = card.q;
      const root = el("article", "sl-card");
      root.dataset.questionId = q.question_id;
      root.dataset.queryId = q.query.id;
      const query = el("div", "sl-query");
      query.appendChild(el("div", "sl-query-label", "Which of these are related to this one?"));
      query.appendChild(renderItem(q.query.data));
      if (!q.query.data || q.query.data.type !== "sound") query.appendChild(el("div", "sl-muted", q.query.id));
      root.appendChild(query);
      const grid = el("div", "sl-cands sl-cands-" + ((q.query.data && q.query.data.type) || "tabular"));
      q.candidates.forEach((c, i) => {
        const cell = el("div", "sl-cand");
        cell.dataset.id = c.id;
        cell.title = c.id;
        cell.appendChild(el("kbd", "sl-num", KEYS[i] || ""));
        cell.appendChild(el("span", "sl-score", Number(c.score).toFixed(2)));
        cell.appendChild(renderItem(c.data));
        cell.addEventListener("click", () => { state.active = ci; toggle(i); });
        grid.appendChild(cell);
      });
      root.appendChild(grid);
      const actions = el("div", "sl-actions");
      const invert = el("button", "sl-btn", "Invert ");
      invert.appendChild(el("kbd", null, "i"));
      invert.addEventListener("click", () => { state.active = ci; invertSel(); });
      const done = el("button", "sl-btn sl-done", "Done ");
      done.appendChild(el("kbd", null, "Space"));
      done.addEventListener("click", () => { state.active = ci; submit(false); });
      const ignore = el("button", "sl-btn", "Ignore ");
      ignore.appendChild(el("kbd", null, "x"));
      ignore.addEventListener("click", () => { state.active = ci; submit(true); });
      actions.append(invert, done, ignore, el("span", "sl-status"));
      root.appendChild(actions);
      root.addEventListener("click", () => { if (!card.done) { state.active = ci; paint(); } });
      card.el = root;
      panel.appendChild(root);
    });
    paint();
  }

  function paint() {
    state.cards.forEach((card, ci) => {
      card.el.classList.toggle("sl-active", ci === state.active && !card.done);
      card.el.classList.toggle("sl-answered", card.done);
      card.el.querySelectorAll(".sl-cand").forEach((cell) => {
        cell.classList.toggle("sl-selected", card.selected.has(cell.dataset.id));
      });
    });
  }

  function activeCard() {
    const card = state.cards[state.active];
    return card && !card.done ? card : null;
  }

  // ---------------------------------------------------------------- actions
  function toggle(i) {
    const card = activeCard();
    if (!card || i >= card.q.candidates.length) return;
    const id = card.q.candidates[i].id;
    if (card.selected.has(id)) card.selected.delete(id); else card.selected.add(id);
    paint();
  }

  function invertSel() {
    const card = activeCard();
    if (!card) return;
    const next = new Set();
    for (const c of card.q.candidates) if (!card.selected.has(c.id)) next.add(c.id);
    card.selected = next;
    paint();
  }

  async function submit(ignored) {
    const card = activeCard();
    if (!card) return;
    card.done = true;
    const body = { question_id: card.q.question_id };
    if (ignored) body.ignored = true;
    else {
      body.positives = card.q.candidates.filter((c) => card.selected.has(c.id)).map((c) => c.id);
      body.negatives = card.q.candidates.filter((c) => !card.selected.has(c.id)).map((c) => c.id);
    }
    card.el.querySelector(".sl-status").textContent = ignored ? "ignored" : "sent";
    moveToNext();
    paint();
    try {
      const out = await call("POST", "/answers", body);
      state.session += 1;
      card.el.querySelector(".sl-status").textContent = ignored ? "ignored" : out.pairs + " pairs saved";
      showStats(out.stats);
      pollSoon(300);
    } catch (err) {
      card.done = false;
      card.el.querySelector(".sl-status").textContent = "";
      banner("Your answer was not saved: " + err.message, true);
      paint();
      return;
    }
    if (state.cards.every((c) => c.done)) loadView();
  }

  function moveToNext() {
    const n = state.cards.length;
    for (let k = 1; k <= n; k++) {
      const j = (state.active + k) % n;
      if (!state.cards[j].done) { state.active = j; return; }
    }
  }

  async function saveModel() {
    const note = $("sl-saved-note");
    note.textContent = "saving…";
    try {
      const out = await call("POST", "/model", {});
      note.textContent = "saved as " + out.model + " v" + out.version +
        (out.tuned_version ? " (the embedding tuned v" + out.tuned_version + ")" : " (the base embedding)");
      refreshStats();
    } catch (err) {
      note.textContent = "";
      banner("The model was not saved: " + err.message, true);
    }
  }

  // ---------------------------------------------------------------- data
  async function loadView() {
    if (state.fetching) return;
    state.fetching = true;
    try {
      const out = await call("GET", "/questions?size=" + (boot.examples_per_view || 1));
      showStats(out.stats);
      if (out.questions.length) {
        banner(null);
        state.cards = out.questions.map((q) => ({ q: q, selected: new Set(), done: false, el: null }));
        state.active = 0;
        renderCards();
      } else {
        state.cards = [];
        renderCards();
        const s = out.stats;
        if (s && !s.indexing_done) {
          $("sl-placeholder").textContent = "Loading the pool… " + s.indexed + " of " + s.total + " items indexed.";
          setTimeout(loadView, 700);
        } else {
          $("sl-placeholder").textContent = "Every item has been asked: nothing left to answer.";
        }
      }
    } catch (err) {
      banner("Could not load questions: " + err.message, true);
      setTimeout(loadView, 3000);
    } finally {
      state.fetching = false;
    }
  }

  function showStats(s) {
    if (!s) return;
    state.stats = s;
    $("sl-session").textContent = state.session;
    $("sl-done").textContent = s.questions;
    $("sl-positive").textContent = s.positives;
    $("sl-negative").textContent = s.negatives;
    $("sl-ignored").textContent = s.ignored;
    $("sl-saved").textContent = s.saved;
    $("sl-model-version").textContent = s.model_version ? "tuned v" + s.model_version : "base (untuned)";
    const total = s.positives + s.negatives + s.ignored || 1;
    $("sl-ratio-pos").style.width = (100 * s.positives / total) + "%";
    $("sl-ratio-neg").style.width = (100 * s.negatives / total) + "%";
    $("sl-ratio-ign").style.width = (100 * s.ignored / total) + "%";
    $("sl-spinner").hidden = !s.training;
    $("sl-training").hidden = !s.training;
    $("sl-loaded").textContent = s.indexed + " of " + s.total + " items indexed" + (s.indexing_done ? "" : " (loading…)");
    $("sl-loaded-bar").style.width = (s.total ? 100 * s.indexed / s.total : 0) + "%";
    if (s.index_error) banner("The pool could not be indexed: " + s.index_error, true);
    $("sl-app").dataset.state = s.training ? "training" : "ready";
    $("sl-app").dataset.modelVersion = s.model_version;
  }

  async function pollHost() {
    // GET /api/v1/webapps: the host reports there a project.json it could not apply.
    try {
      const list = await fetch(API.replace(/\/[^/]*$/, ""), { headers: headers(false), cache: "no-store" }).then((r) => r.json());
      const mine = Array.isArray(list) ? list.find((w) => w.id === boot.webapp) : null;
      const box = $("sl-config-error");
      box.textContent = (mine && mine.config_error) || "";
      box.hidden = !box.textContent;
    } catch (e) { /* the server is restarting: the next poll tells */ }
  }

  async function refreshStats() {
    try { showStats(await call("GET", "/stats")); } catch (err) { /* next poll retries */ }
  }

  function pollSoon(ms) {
    clearTimeout(state.pollTimer);
    state.pollTimer = setTimeout(async () => {
      await refreshStats();
      const busy = state.stats && (state.stats.training || !state.stats.indexing_done);
      pollSoon(busy ? 700 : 5000);
    }, ms);
  }

  function banner(text, error) {
    const b = $("sl-banner");
    b.hidden = !text;
    b.textContent = text || "";
    b.classList.toggle("sl-error", !!error);
  }

  // ---------------------------------------------------------------- keyboard
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if ($("sl-name-dialog").open) return;
    const tag = (ev.target && ev.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA") return;
    const k = ev.key;
    const i = KEYS.indexOf(k);
    if (i >= 0) { toggle(i); ev.preventDefault(); return; }
    if (k === "i" || k === "I") { invertSel(); ev.preventDefault(); }
    else if (k === " " || k === "Spacebar") { submit(false); ev.preventDefault(); }
    else if (k === "x" || k === "X") { submit(true); ev.preventDefault(); }
    else if (k === "m" || k === "M") { saveModel(); ev.preventDefault(); }
    else if (k === "ArrowDown" || k === "ArrowUp") {
      const n = state.cards.length;
      for (let s = 1; s <= n; s++) {
        const j = (state.active + (k === "ArrowDown" ? s : n - s)) % n;
        if (!state.cards[j].done) { state.active = j; break; }
      }
      paint();
      ev.preventDefault();
    }
  });

  // ---------------------------------------------------------------- start
  function showConfig() {
    $("sl-field").textContent = boot.field || "";
    $("sl-content-type").textContent = boot.content_type || "";
    $("sl-per-view").textContent = boot.examples_per_view;
    $("sl-topk").textContent = boot.top_k;
    $("sl-pos-value").textContent = boot.positive_value;
    $("sl-neg-value").textContent = boot.negative_value;
    $("sl-epochs").textContent = boot.epochs;
    $("sl-match-pool").textContent = boot.match_pool;
    $("sl-model-name").textContent = boot.model_name;
    $("sl-pairs-ds").textContent = boot.pairs_ds;
  }

  async function start() {
    showConfig();
    $("sl-save").addEventListener("click", saveModel);
    $("sl-user-change").addEventListener("click", askName);
    if (!user()) {
      if (boot.session_user) localStorage.setItem(USER_KEY, boot.session_user);
      else await askName();
    }
    showUser();
    pollHost();
    setInterval(() => { if (!document.hidden) pollHost(); }, 5000);
    await loadView();
    pollSoon(1000);
  }

  start();
})();
