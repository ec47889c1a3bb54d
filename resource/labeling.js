/* Labelloop labeling page: renders items, handles the keyboard, prefetches batches and talks
 * to the webapp's JSON API. Data from the API is only ever put in the page with textContent
 * or as attribute values, never parsed as HTML. */
(function () {
  "use strict";

  const boot = JSON.parse(document.getElementById("ll-bootstrap").textContent);
  const API = boot.api_base;
  const BATCH = boot.batch_size || 20;
  const PREFETCH_AT = Math.max(3, Math.floor(BATCH / 3));
  // Stats are polled while idle, so others' progress shows up unasked.
  const POLL_MS = 15000;
  // The webapp's config is polled (cheap on the server): a new session (a retrained model's
  // order) is picked up within this, and while the server prepares something, faster.
  const CONFIG_POLL_MS = 2000;
  const PREPARING_POLL_MS = 700;
  // The host's list of webapps says when project.json could not be applied.
  const HOST_POLL_MS = 5000;
  const USER_KEY = "labelloop.user";
  const $ = (id) => document.getElementById(id);
  // The `spans` annotation kind: a span editor (spans.js) in place of category answers.
  const SPANS = boot.kind === "spans" && window.LabelloopSpans
    ? new window.LabelloopSpans(boot.categories, boot.overlapping_spans) : null;
  // The `boxes` annotation kind: a box editor (boxes.js) on the image.
  const BOXES = boot.kind === "boxes" && window.LabelloopBoxes
    ? new window.LabelloopBoxes(boot.object_classes) : null;
  const FIELD = SPANS ? "spans" : BOXES ? "boxes" : "label";  // the answer's field in POST labels

  const state = {
    config: null,
    queue: [],            // items fetched and not shown yet (already reserved for us)
    seen: new Set(),      // item ids handed to this page, so a refetch never repeats one
    current: null,        // the live item on screen
    history: [],          // our answers, newest first: {id, data, label, status, comment, label_id}
    historyIndex: -1,     // -1: the live item; k: history[k] is on screen
    historyDone: false,   // the server has no older answers
    selected: new Set(),  // multi-label toggles for the item on screen
    fetching: null,
    done: false,
    session: undefined,   // the session the variable / stats say
    orderSession: undefined, // the session whose order the server serves (config, batch)
    preparing: null,      // what the server is preparing, as it said in config
    configError: null,    // project.json could not be applied (the host says)
    metricsVersion: undefined,
    unsent: [],           // answers not yet acknowledged: {method, path, body, status, error}
    writeSeq: 0,          // answers sent so far, and the last whose stats are shown
    statsSeq: 0,
    refreshing: 0,
    stats: null,
    writes: Promise.resolve(),
    pending: 0,
    errors: [],
    keyAt: null,
    timings: [],
    cache: new Map(),     // item id -> data, for answers made on this page
    liveComment: { id: null, text: "" },
  };

  // ---------------------------------------------------------------- identity & HTTP

  function user() {
    // A token's user (boot.user) is fixed; otherwise the name given once in this browser.
    return boot.user || localStorage.getItem(USER_KEY) || "";
  }

  function headers(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    const name = user();
    // The server reads the header as percent-encoded UTF-8: plain ASCII without '%' as is,
    // anything else percent-encoded (so "100%" and "100%25" stay two names).
    // With tokens the server knows us from its cookie; the name header is only for the rest.
    if (name && !boot.user) h["X-Labelloop-User"] = /^[\x20-\x24\x26-\x7e]*$/.test(name) ? name : encodeURIComponent(name);
    return h;
  }

  async function call(method, path, body, keepalive) {
    const init = {
      method: method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    };
    let resp;
    if (keepalive) {
      // A keepalive request outlives the page: an answer sent just before the tab closes
      // still arrives. Browsers cap their total size (64 KiB): past it, a plain request.
      try { resp = await fetch(API + path, { ...init, keepalive: true }); } catch (e) {
        if (!(e instanceof TypeError)) throw e;
      }
    }
    if (!resp) resp = await fetch(API + path, init);
    let data = null;
    const text = await resp.text();
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = { error: text.slice(0, 300) }; }
    }
    if (!resp.ok) {
      const err = new Error((data && data.error) || resp.status + " " + resp.statusText);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function askName() {
    return new Promise((resolve) => {
      const dialog = $("ll-name-dialog");
      const input = $("ll-name-input");
      input.value = localStorage.getItem(USER_KEY) || "";
      const done = (ev) => {
        ev.preventDefault();
        const name = input.value.trim();
        if (!name) { input.focus(); return; }
        localStorage.setItem(USER_KEY, name);
        dialog.close();
        $("ll-name-form").removeEventListener("submit", done);
        showUser();
        resolve(name);
      };
      $("ll-name-form").addEventListener("submit", done);
      dialog.addEventListener("cancel", (ev) => { if (!user()) ev.preventDefault(); });
      dialog.showModal();
      input.focus();
    });
  }

  function showUser() {
    $("ll-user-name").textContent = user() || "anonymous";
    $("ll-user").hidden = false;
    $("ll-user-change").hidden = Boolean(boot.user);
  }

  // ---------------------------------------------------------------- banners

  // The banner overlays the top of the item pane (nothing under it moves when it comes or
  // goes); a click dismisses it. `what` names a banner that something else may clear.
  let bannerTimer = null;
  function banner(text, kind, sticky, what) {
    const el = $("ll-banner");
    el.textContent = text;
    el.className = "ll-banner ll-banner-" + (kind || "info");
    el.dataset.what = what || "";
    el.hidden = false;
    clearTimeout(bannerTimer);
    if (!sticky) bannerTimer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  function clearBanner(what) {
    const el = $("ll-banner");
    if (!el.hidden && el.dataset.what === what) { el.hidden = true; clearTimeout(bannerTimer); }
  }

  // ---------------------------------------------------------------- queue

  function fillQueue() {
    if (state.fetching) return state.fetching;
    state.fetching = (async () => {
      try {
        const asked = state.orderSession;
        const resp = await call("GET", "/batch?size=" + BATCH);
        // The session that ordered this batch (servers that don't say: the one config said).
        const session = resp.session !== undefined && resp.session !== null ? resp.session : asked;
        if (state.orderSession !== undefined && session !== undefined && session < state.orderSession) {
          // An older order than the one config announced: give these back and ask again.
          release((resp.items || []).map((it) => it.id).filter((id) => !state.seen.has(String(id))));
          await new Promise((r) => setTimeout(r, 500));
          state.fetching = null;
          return fillQueue();
        }
        if (state.orderSession === undefined) state.orderSession = session;
        else if (session !== undefined && session > state.orderSession) newOrder(session, false);
        let added = 0;
        for (const item of resp.items || []) {
          const id = String(item.id);
          if (state.seen.has(id)) continue;
          state.seen.add(id);
          item._session = session;
          state.queue.push(item);
          added++;
        }
        prefetchMedia();
        if (resp.stats) applyStats(resp.stats);
        if (resp.preparing !== undefined) { state.preparing = resp.preparing || null; showOrder(); }
        // Done when nothing is pending at all; items reserved by others are not done.
        state.done = Boolean(resp.done) && added === 0;
      } catch (e) {
        banner("Could not load items: " + e.message + " (retrying)", "error");
        await new Promise((r) => setTimeout(r, 2000));
        state.fetching = null;
        return fillQueue();
      }
      state.fetching = null;
    })();
    return state.fetching;
  }

  async function nextLive() {
    if (!state.queue.length && !state.done) {
      await fillQueue();
      // The last answers may still be on their way; once stored they leave the queue.
      if (!state.queue.length && !state.done) { await state.writes; await fillQueue(); }
    }
    if (state.historyIndex >= 0) return; // the annotator went back meanwhile
    state.current = state.queue.shift() || null;
    prefetchMedia();
    if (state.queue.length < PREFETCH_AT && !state.done) fillQueue();
    if (!state.current && !state.done) { showWaiting(); return; }
    showLive();
  }

  function showPreparing() {
    // Before the first item: what the server is preparing and how far along it is (not once
    // all is done: the config poll would put "Asking for the first items" over "All done").
    if (state.current || state.done || state.historyIndex >= 0) return;
    const box = $("ll-item");
    if (box.dataset.itemId) return;
    box.hidden = false;
    box.replaceChildren(plain(state.preparing ? preparingText(state.preparing)
      : "Asking the server for the first items…"));
    $("ll-item-mode").textContent = state.preparing ? "Preparing" : "Starting";
  }

  function showWaiting() {
    // Nothing to show yet: the server is still preparing the items (say what, how far),
    // or everything left is reserved by other annotators. Look again in a moment.
    const box = $("ll-item");
    box.hidden = false;
    box.replaceChildren(plain(state.preparing ? preparingText(state.preparing) + "…"
      : "The items left are being labeled by others right now. Checking again in a few seconds…"));
    box.dataset.itemId = "";
    $("ll-item-id").textContent = "";
    $("ll-item-mode").textContent = state.preparing ? "Preparing" : "Waiting";
    $("ll-suggestion").hidden = true;
    $("ll-halting").hidden = true;
    $("ll-done").hidden = true;
    setState("waiting");
    updateNav();
    setTimeout(() => { if (state.historyIndex < 0 && !state.current) nextLive(); },
      state.preparing ? PREPARING_POLL_MS : 3000);
  }

  // ---------------------------------------------------------------- rendering

  function mediaUrl(item) {
    const d = item.data;
    // The webapp's media route (relative to its API base), versioned so the cache is exact.
    if (d && typeof d === "object" && typeof d.media === "string" && /^media\?/.test(d.media)) return API + "/" + d.media;
    return API + "/media?id=" + encodeURIComponent(item.id);
  }

  const MEDIA_AHEAD = 5;
  function prefetchMedia() {
    // The next few items' images or sounds are fetched ahead (the browser caches them).
    for (const item of state.queue.slice(0, MEDIA_AHEAD)) if (!item._preloaded) preload(item);
  }

  function preload(item) {
    item._preloaded = true;
    if (boot.data_type === "image") {
      const img = new Image();
      img.src = mediaUrl(item);
      item._img = img;
    } else if (boot.data_type === "sound") {
      item._audio = fetch(mediaUrl(item), { headers: headers(false) })
        .then((r) => (r.ok ? r.arrayBuffer() : Promise.reject(new Error(r.status))))
        .catch(() => null);
    }
  }

  function cellText(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function pairsOf(data) {
    // Engine items carry ordered [column, value] pairs; plain objects are accepted too.
    if (data && Array.isArray(data.fields)) return data.fields;
    if (data && typeof data === "object") return Object.entries(data);
    return [];
  }

  function kvTable(pairs) {
    const table = document.createElement("table");
    table.className = "ll-kv";
    for (const [key, v] of pairs) {
      const tr = table.insertRow();
      const th = document.createElement("th");
      th.textContent = key;
      th.scope = "row";
      tr.appendChild(th);
      const td = tr.insertCell();
      td.textContent = cellText(v);
      if (v === null || v === undefined || v === "") td.className = "ll-empty";
    }
    return table;
  }

  /** The key caps of a category's button: a `<kbd>` per key given (none for a missing one). */
  function keyCaps(keys) {
    const out = document.createElement("span");
    out.className = "ll-keys";
    for (const k of keys) {
      if (!k) continue;
      const kbd = document.createElement("kbd");
      kbd.textContent = k;
      out.appendChild(kbd);
    }
    return out;
  }

  function renderItem(item, box) {
    box.replaceChildren();
    const data = item.data;
    const type = boot.data_type;
    if (data === null || data === undefined) {
      box.appendChild(errorNote("This item is no longer in the data (id " + item.id + ")."));
    } else if (BOXES && type === "image") {
      renderBoxes(item, box);
    } else if (type === "image") {
      const url = mediaUrl(item);
      const img = item._img && item._img.src === url ? item._img : new Image();
      if (img.src !== url) img.src = url;
      img.className = "ll-image";
      const sharpen = () => img.classList.toggle("ll-pixelated", img.naturalWidth > 0 && img.naturalWidth < 128);
      if (img.complete) sharpen(); else img.addEventListener("load", sharpen, { once: true });
      img.alt = "item " + item.id;
      img.onerror = () => { box.replaceChildren(errorNote("This image could not be loaded.")); };
      box.append(img, caption(item));
    } else if (type === "sound") {
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "auto";
      audio.src = mediaUrl(item);
      audio.className = "ll-audio";
      audio.id = "ll-audio";
      // The player never keeps the keyboard: the shortcuts (numbers, s, p) stay live.
      audio.tabIndex = -1;
      const unfocus = () => { if (document.activeElement === audio) audio.blur(); };
      audio.addEventListener("focus", unfocus);
      for (const ev of ["play", "pause", "seeked", "volumechange", "click", "mouseup"]) audio.addEventListener(ev, unfocus);
      if (boot.autoplay && state.historyIndex < 0) {
        audio.autoplay = true;
        audio.addEventListener("canplay", () => { const r = audio.play(); if (r && r.catch) r.catch(() => {}); }, { once: true });
      }
      const canvas = document.createElement("canvas");
      canvas.className = "ll-wave";
      canvas.id = "ll-wave";
      canvas.width = 900;
      canvas.height = 160;
      box.append(canvas, audio, caption(item));
      drawWaveform(item, canvas, audio);
    } else if (SPANS && typeof data === "object" && "text" in data) {
      // A live item starts from the model's spans (drawn as suggestions); an earlier answer
      // from its own.
      const spans = state.historyIndex >= 0
        ? (Array.isArray(item.label) ? item.label : [])
        : ((suggestionOf(item) || {}).spans || []).map((x) => Object.assign({}, x, { suggested: true }));
      SPANS.show(box, data.text === null || data.text === undefined ? "" : String(data.text), spans);
      const pairs = pairsOf(data);
      if (pairs.length) box.appendChild(kvTable(pairs));
    } else if (type === "text" && typeof data === "object" && "text" in data) {
      box.appendChild(plain(cellText(data.text), "ll-text"));
      const pairs = pairsOf(data);
      if (pairs.length) box.appendChild(kvTable(pairs));
    } else if (typeof data === "object") {
      box.appendChild(kvTable(pairsOf(data)));
    } else {
      box.appendChild(plain(cellText(data)));
    }
  }

  function renderBoxes(item, box) {
    // A live item starts from the model's boxes (dashed suggestions); an earlier answer from
    // its own. The preloaded image is used as it is: it is decoded once.
    const url = mediaUrl(item);
    const img = item._img && item._img.src === url ? item._img : new Image();
    if (img.src !== url) img.src = url;
    img.alt = "item " + item.id;
    img.onerror = () => { box.replaceChildren(errorNote("This image could not be loaded.")); };
    const boxes = state.historyIndex >= 0
      ? (Array.isArray(item.label) ? item.label : [])
      : ((suggestionOf(item) || {}).boxes || []).map((x) => Object.assign({}, x, { suggested: true }));
    const d = item.data || {};
    BOXES.show(box, img, d.width, d.height, boxes);  // the image's name is in the header
  }

  function plain(text) {
    const div = document.createElement("div");
    div.className = "ll-text";
    div.textContent = text;
    return div;
  }

  function caption(item) {
    const p = document.createElement("p");
    p.className = "ll-caption";
    const d = item.data;
    p.textContent = d && typeof d === "object" && d.path ? d.path : String(item.id);
    return p;
  }

  function errorNote(text) {
    const p = document.createElement("p");
    p.className = "ll-error-note";
    p.textContent = text;
    return p;
  }

  async function drawWaveform(item, canvas, audio) {
    const ctx2d = canvas.getContext("2d");
    ctx2d.fillStyle = "#f3f5f8";
    ctx2d.fillRect(0, 0, canvas.width, canvas.height);
    let buf = item._audio ? await item._audio : null;
    if (!buf) {
      try {
        const r = await fetch(mediaUrl(item), { headers: headers(false) });
        buf = await r.arrayBuffer();
      } catch (e) { buf = null; }
    }
    if (!buf) return;
    let decoded;
    try {
      const AC = window.OfflineAudioContext || window.webkitOfflineAudioContext;
      decoded = await new AC(1, 1, 44100).decodeAudioData(buf.slice(0));
    } catch (e) {
      ctx2d.fillStyle = "#888";
      ctx2d.fillText("waveform unavailable for this file", 10, 20);
      return;
    }
    if (!canvas.isConnected) return;
    const samples = decoded.getChannelData(0);
    const w = canvas.width, h = canvas.height, mid = h / 2;
    const step = Math.max(1, Math.floor(samples.length / w));
    ctx2d.fillStyle = "#4c78a8";
    for (let x = 0; x < w; x++) {
      let lo = 1, hi = -1;
      const start = x * step;
      const end = Math.min(samples.length, start + step);
      for (let i = start; i < end; i++) {
        const s = samples[i];
        if (s < lo) lo = s;
        if (s > hi) hi = s;
      }
      if (hi < lo) break;
      ctx2d.fillRect(x, mid - hi * mid, 1, Math.max(1, (hi - lo) * mid));
    }
    ctx2d.fillStyle = "#333";
    ctx2d.fillText(decoded.duration.toFixed(2) + " s", 8, 14);
    // A cursor that follows playback.
    const base = ctx2d.getImageData(0, 0, w, h);
    const tick = () => {
      if (!canvas.isConnected) return;
      ctx2d.putImageData(base, 0, 0);
      if (decoded.duration > 0) {
        const x = (audio.currentTime / decoded.duration) * w;
        ctx2d.fillStyle = "#e45756";
        ctx2d.fillRect(x, 0, 2, h);
      }
      if (!audio.paused) requestAnimationFrame(tick);
    };
    audio.addEventListener("play", () => requestAnimationFrame(tick));
    audio.addEventListener("seeked", tick);
    canvas.addEventListener("click", (ev) => {
      const r = canvas.getBoundingClientRect();
      audio.currentTime = ((ev.clientX - r.left) / r.width) * decoded.duration;
    });
  }

  function suggestionOf(item) {
    const s = item && item.suggestion;
    if (s === null || s === undefined || s === "") return null;
    if (typeof s === "object" && Array.isArray(s.boxes)) {
      return { boxes: s.boxes, label: null, version: s.model_version, session: item._session };
    }
    if (typeof s === "object" && Array.isArray(s.spans)) {
      return { spans: s.spans, label: null, version: s.model_version, session: item._session };
    }
    if (typeof s === "object") {
      const label = s.label !== undefined ? s.label : s.prediction;
      if (label === null || label === undefined) return null;
      return { label: label, confidence: s.confidence, version: s.model_version, session: item._session };
    }
    return { label: s, confidence: item.confidence, session: item._session };
  }

  function boxCount(n) {
    return n === 1 ? "1 box" : n + " boxes";
  }

  function showSuggestion(item) {
    const el = $("ll-suggestion");
    const s = state.historyIndex < 0 ? suggestionOf(item) : null;
    if (!s) { el.hidden = true; el.replaceChildren(); return; }
    el.replaceChildren();
    const a = document.createElement("span");
    a.textContent = "Model suggests ";
    const b = document.createElement("b");
    if (s.boxes) {
      b.textContent = !s.boxes.length ? "no objects" : boxCount(s.boxes.length);
    } else if (s.spans) {
      b.textContent = !s.spans.length ? "no entities" : s.spans.length === 1 ? "1 span"
        : s.spans.length + " spans";
    } else {
      b.textContent = (Array.isArray(s.label) ? s.label.map(String) : [String(s.label)]).join(", ");
    }
    el.append(a, b);
    if (typeof s.confidence === "number" && isFinite(s.confidence)) {
      const c = document.createElement("span");
      c.className = "ll-confidence";
      c.textContent = " " + Math.round(s.confidence * 100) + "% confident";
      el.appendChild(c);
    }
    // Which model made it: its saved version when the queries say, else the session.
    const v = document.createElement("span");
    v.className = "ll-model-version";
    v.textContent = s.version !== undefined && s.version !== null && s.version !== ""
      ? " (model " + s.version + ")" : s.session ? " (model of session " + s.session + ")" : "";
    if (v.textContent) el.appendChild(v);
    const k = document.createElement("span");
    k.className = "ll-muted";
    k.textContent = s.boxes ? (s.boxes.length ? " (dashed; the slider hides the weak ones) — correct them, then Enter"
      : " — box any you see, then Enter")
      : !s.spans ? " — press Enter to accept" : s.spans.length
        ? " (dashed) — correct them, then Enter" : " — mark any you see, then Enter";
    el.appendChild(k);
    el.hidden = false;
  }

  function showHalting(item) {
    const box = $("ll-halting");
    const v = item && typeof item.halting === "number" && state.historyIndex < 0 ? item.halting : null;
    if (v === null) { box.hidden = true; return; }
    box.hidden = false;
    // The halting value ranks the item within its session (1: among the session's most
    // uncertain items, 0: the model is sure of it). It says nothing of whether the model still
    // improves at all: when the metrics history has stalled, no item is worth much, whatever
    // its rank, so the indicator says so instead of contradicting the warning.
    const stalled = stoppingWarnings().length > 0;
    const pos = stalled ? 1 : Math.max(0, Math.min(1, 1 - v));
    $("ll-halting-marker").style.left = (pos * 100).toFixed(1) + "%";
    $("ll-halting").classList.toggle("ll-stalled", stalled);
    const session = item._session ? "session " + item._session : "this session";
    const text = stalled
      ? "not efficient: the model stopped improving over the last retrains, even for the items it is least sure of (see the warning)"
      : v >= 0.999 ? "efficient: among the items the model of " + session + " is least sure of"
        : v > 0 ? "less efficient: the model of " + session + " is fairly sure about items like this"
          : "not efficient: the model of " + session + " is sure about items like this";
    // The number, said for what it is: the item's uncertainty on this session's scale.
    $("ll-halting-text").textContent = text + (stalled ? "" : ". Uncertainty " + v.toFixed(2) +
      " on a scale from 0 (as sure as of the session's surest items) to 1 (as unsure as of its least sure).");
  }

  function categoryButtons() {
    const box = $("ll-categories");
    box.replaceChildren();
    for (const cat of boot.categories) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "ll-cat";
      btn.dataset.category = cat.name;
      const keys = keyCaps(BOXES ? [BOXES.keyOf(cat.name)] : [cat.number, cat.letter]);
      const name = document.createElement("span");
      name.className = "ll-cat-name";
      name.textContent = cat.name;
      if (SPANS || BOXES) {  // the legend: each type's colour, as its spans or boxes are drawn
        btn.style.setProperty("--c", (SPANS || BOXES).colour(cat.name));
        btn.classList.add("ll-type");
        const swatch = document.createElement("span");
        swatch.className = "ll-swatch";
        name.prepend(swatch);
      }
      btn.append(keys, name);
      if (cat.description) {
        const d = document.createElement("span");
        d.className = "ll-cat-desc";
        d.textContent = cat.description;
        btn.appendChild(d);
        btn.title = cat.description;
      }
      btn.addEventListener("click", () => choose(cat.name));
      box.appendChild(btn);
    }
    $("ll-multi").hidden = !boot.multi_label;
  }

  function markCategories(labels, suggested) {
    const chosen = new Set((labels || []).map(String));
    const sug = new Set((suggested || []).map(String));
    for (const btn of $("ll-categories").children) {
      btn.classList.toggle("ll-chosen", chosen.has(btn.dataset.category));
      btn.classList.toggle("ll-suggested", sug.has(btn.dataset.category));
      btn.setAttribute("aria-pressed", chosen.has(btn.dataset.category) ? "true" : "false");
    }
  }

  function setState(name) {
    $("ll-app").dataset.state = name;
  }

  function onScreen() {
    return state.historyIndex >= 0 ? state.history[state.historyIndex] : state.current;
  }

  function showLive() {
    state.historyIndex = -1;
    const item = state.current;
    const box = $("ll-item");
    state.selected = new Set();
    // A comment typed for the live item survives a look at earlier answers.
    $("ll-comment").value = item && state.liveComment.id === item.id ? state.liveComment.text : "";
    state.liveComment = { id: null, text: "" };
    box.hidden = !item;
    if (!item) {
      box.replaceChildren();
      box.dataset.itemId = "";
      $("ll-item-id").textContent = "";
      $("ll-item-mode").textContent = "";
      $("ll-done").hidden = false;
      $("ll-suggestion").hidden = true;
      $("ll-halting").hidden = true;
      setState("done");
      markCategories([], []);
      updateNav();
      return;
    }
    $("ll-done").hidden = true;
    renderItem(item, box);
    box.dataset.itemId = String(item.id);
    $("ll-item-id").textContent = String(item.id);
    $("ll-item-mode").textContent = "To label";
    $("ll-item-mode").className = "ll-item-mode";
    const s = suggestionOf(item);
    markCategories(BOXES ? [BOXES.current] : [], s && !s.spans && !s.boxes ? (Array.isArray(s.label) ? s.label : [s.label]) : []);
    showSuggestion(item);
    showHalting(item);
    showOrder();
    setState("item");
    updateNav();
    shown();
  }

  function showHistory() {
    const entry = state.history[state.historyIndex];
    const box = $("ll-item");
    $("ll-done").hidden = true;
    box.hidden = false;
    if (entry.data !== undefined && entry.data !== null) renderItem(entry, box);
    else box.replaceChildren(plain("item " + entry.id));
    box.dataset.itemId = String(entry.id);
    $("ll-item-id").textContent = String(entry.id);
    const what = entry.status === "SKIPPED" ? "skipped"
      : SPANS ? (Array.isArray(entry.label) ? entry.label.length : 0) + " spans"
        : BOXES ? boxCount(Array.isArray(entry.label) ? entry.label.length : 0)
        : "labeled " + (Array.isArray(entry.label) ? entry.label.join(", ") : cellText(entry.label));
    $("ll-item-mode").textContent = "Earlier answer (" + what + ")" + (SPANS || BOXES
      ? " — edit the " + (SPANS ? "spans" : "boxes") + ", then Enter to change it" : " — choose a category to change it");
    $("ll-item-mode").className = "ll-item-mode ll-history";
    $("ll-comment").value = entry.comment || "";
    const labels = SPANS || BOXES || entry.status === "SKIPPED" || entry.label === null || entry.label === undefined ? []
      : (Array.isArray(entry.label) ? entry.label : [entry.label]);
    state.selected = new Set(labels.map(String));
    markCategories(BOXES ? [BOXES.current] : labels, []);
    $("ll-suggestion").hidden = true;
    $("ll-halting").hidden = true;
    setState("history");
    updateNav();
    shown();
  }

  function shown() {
    if (state.keyAt !== null) {
      const t0 = state.keyAt;
      state.keyAt = null;
      requestAnimationFrame(() => state.timings.push(performance.now() - t0));
    }
  }

  function updateNav() {
    $("ll-back").disabled = state.historyDone && state.historyIndex >= state.history.length - 1;
    $("ll-next").disabled = state.historyIndex < 0;
    $("ll-skip").disabled = !onScreen();
  }

  // ---------------------------------------------------------------- stats, config, metrics

  function applyStats(stats) {
    if (!stats) return;
    state.stats = stats;
    showExtraWarnings(stats.warnings);
    const labeled = stats.labeled || 0, skipped = stats.skipped || 0;
    const total = stats.total || 0;
    const remaining = stats.remaining !== undefined ? stats.remaining : Math.max(0, total - labeled - skipped);
    const pct = (n) => (total ? Math.min(100, (100 * n) / total) : 0).toFixed(2) + "%";
    const team = stats.overlap;  // annotators_per_item > 1: the team's progress, bars too
    if (team) {
      $("ll-progress-text").textContent = "You: " + labeled + " labeled · " + skipped + " skipped · Items: " +
        team.complete + " complete · " + team.partial + " partly answered · " + team.open + " open (" +
        team.k + " annotators each)";
    } else {
      $("ll-progress-text").textContent = labeled + " labeled · " + skipped + " skipped · " + remaining + " remaining" + (total ? " of " + total : "");
    }
    $("ll-progress-labeled").style.width = pct(team ? team.complete : labeled);
    $("ll-progress-skipped").style.width = pct(team ? team.partial : skipped);
    state.session = stats.session;
    $("ll-done-text").textContent = labeled + " labeled and " + skipped + " skipped: there is nothing left to label.";
    updatePerLabel(stats.per_label || {});
  }

  function showOrder() {
    // The order of the item on screen (it may still be one of an older session's).
    const item = state.historyIndex < 0 ? state.current : null;
    const session = item ? item._session : state.orderSession;
    const scored = item ? (typeof item.uncertainty === "number" || suggestionOf(item) !== null)
      : Boolean(state.config && state.config.al_enabled);
    let text = scored ? "Most informative first: model queries" + (session ? ", session " + session : "")
      : !session ? "Random order (no model queries yet)"
        : "Session " + session + ": past the model's queries, the rest in random order";
    if (state.preparing) text += " · " + preparingText(state.preparing);
    $("ll-session").textContent = text;
  }

  function preparingText(p) {
    // The server's `preparing` object: what it prepares and how far along it is.
    if (typeof p === "string") return p;
    const what = p.what || p.message || p.label || p.stage || "preparing the items";
    const done = Number(p.done !== undefined ? p.done : p.current);
    const total = Number(p.total);
    let frac = typeof p.fraction === "number" ? p.fraction : typeof p.progress === "number" ? p.progress : null;
    if (frac === null && isFinite(done) && isFinite(total) && total > 0) frac = done / total;
    let text = String(what).charAt(0).toUpperCase() + String(what).slice(1);
    if (frac !== null && isFinite(frac)) text += ": " + Math.round(Math.max(0, Math.min(1, frac)) * 100) + " %";
    if (isFinite(done) && isFinite(total) && total > 0) text += " (" + done.toLocaleString() + " of " + total.toLocaleString() + ")";
    return text;
  }

  function stoppingWarnings() {
    const c = state.config || {};
    return c.stopping_warnings || [];
  }

  function bokehModel(name, fn, tries) {
    const docs = window.Bokeh && window.Bokeh.documents;
    const model = docs && docs.length ? docs[0].get_model_by_name(name) : null;
    if (model) { fn(model); return; }
    if ((tries || 0) < 100) setTimeout(() => bokehModel(name, fn, (tries || 0) + 1), 100);
  }

  function updatePerLabel(perLabel) {
    const names = boot.categories.map((c) => c.name).reverse();
    const counts = names.map((n) => Number(perLabel[n] || 0));
    const max = Math.max(1, ...counts);
    bokehModel(boot.per_label_source, (src) => {
      src.data = { category: names, count: counts, text: counts.map(String) };
    });
    bokehModel("ll-per-label-xrange", (r) => { r.end = max * 1.15; });
  }

  function showExtraWarnings(list) {
    // Warnings that come with the stats (e.g. folder items set aside), added to the box once.
    const box = $("ll-warnings");
    if (!box || !list || !list.length) return;
    const shown = new Set([...box.children].map((p) => p.textContent));
    for (const w of list) {
      if (shown.has(w)) continue;
      const p = document.createElement("p");
      p.textContent = w;
      box.appendChild(p);
    }
    box.hidden = false;
  }

  function servedSession(cfg) {
    // The session whose order batches come in (servers that build, then swap, say it as
    // `session`; older ones also told the variable's session apart as `queue_session`).
    if (cfg.queue_session !== undefined && cfg.queue_session !== null) return cfg.queue_session;
    return cfg.session;
  }

  async function loadConfig() {
    let cfg;
    try {
      cfg = await call("GET", "/config");
    } catch (e) {
      if (!state.config) state.config = {};
      return;
    }
    applyConfig(cfg);
  }

  function applyConfig(cfg) {
    state.config = cfg;
    state.preparing = cfg.preparing || null;
    showWarnings();
    const served = servedSession(cfg);
    if (served !== undefined && served !== null) {
      if (state.orderSession === undefined) state.orderSession = served;
      else if (served > state.orderSession) newOrder(served, true);
    }
    if (cfg.metrics_version !== undefined && cfg.metrics_version !== state.metricsVersion) {
      const first = state.metricsVersion === undefined;
      state.metricsVersion = cfg.metrics_version;
      if (!first) loadMetrics();
    }
    const names = (cfg.categories || []).map((c) => (typeof c === "string" ? c : c.name));
    const mine = boot.categories.map((c) => c.name);
    state.settingsChanged = names.length > 0 && names.join("\u0000") !== mine.join("\u0000");
    showWarnings();
    showOrder();
    showPreparing();
  }

  function showWarnings() {
    const c = state.config || {};
    const warnings = [...new Set([...(c.warnings || []), ...stoppingWarnings()])];
    const box = $("ll-warnings");
    box.replaceChildren();
    const add = (text, cls) => {
      const p = document.createElement("p");
      p.textContent = text;
      if (cls) p.className = cls;
      box.appendChild(p);
    };
    if (state.configError) add(state.configError, "ll-config-error");
    if (state.settingsChanged) add("This webapp's settings changed on the server (categories): reload the page to use them.", "ll-settings-changed");
    for (const w of warnings) add(typeof w === "string" ? w : (w.message || JSON.stringify(w)));
    box.hidden = box.children.length === 0;
  }

  function pollConfig() {
    const again = () => setTimeout(pollConfig, state.preparing ? PREPARING_POLL_MS : CONFIG_POLL_MS);
    if (document.hidden) { again(); return; }
    loadConfig().finally(again);
  }

  async function pollHost() {
    // GET /api/v1/webapps: the host reports there a project.json it could not apply.
    try {
      const list = await fetch(API.replace(/\/[^/]*$/, ""), { headers: headers(false), cache: "no-store" }).then((r) => r.json());
      const mine = Array.isArray(list) ? list.find((w) => w.id === boot.webapp) : null;
      const err = mine ? (mine.config_error || null) : null;
      if (err !== state.configError) { state.configError = err; showWarnings(); }
    } catch (e) { /* the server is restarting: the next poll tells */ }
  }

  async function loadMetrics() {
    let resp;
    try {
      resp = await call("GET", "/metrics");
    } catch (e) {
      return; // this backend has no metrics route
    }
    // Columns: {labels: [...], auc: [...], f1: [...], map50: [...], contradictions: [...]},
    // one entry per retrain. A span model has no AUC: its page plots the entity F1 instead;
    // a detector's page its mAP@0.5.
    const h = (resp && resp.history) || {};
    const num = (v) => (v === null || v === undefined ? NaN : Number(v));
    const labels = (h.labels || []).map(num);
    if (!labels.length) return;
    const column = (name) => labels.map((_, i) => num((h[name] || [])[i]));
    const data = {
      labels: labels,
      auc: column("auc"),
      f1: column("f1"),
      map50: column("map50"),
      contradictions: column("contradictions"),
    };
    const score = {spans: "f1", boxes: "map50"}[boot.kind] || "auc";
    const scoreName = {f1: "entity F1", map50: "mAP@0.5", auc: "AUC"}[score];
    // The chart is laid out from the start (a plot drawn while hidden stays blank when shown).
    const values = [...data[score], ...data.contradictions].filter((v) => isFinite(v));
    const note = $("ll-metrics-empty");
    note.textContent = "(no " + scoreName + " or contradictions yet: too few labels)";
    note.hidden = values.length > 0;
    const finite = labels.filter((v) => isFinite(v));
    let lo = finite.length ? Math.min(...finite) : 0, hi = finite.length ? Math.max(...finite) : 1;
    const pad = hi > lo ? (hi - lo) * 0.06 : Math.max(1, lo * 0.1);
    lo -= pad; hi += pad;
    bokehModel(boot.metrics_source, (src) => { src.data = data; });
    bokehModel("ll-metrics-xrange", (r) => { r.start = lo; r.end = hi; });
  }

  function newOrder(session, refill) {
    // The model was retrained and the server serves its order: what this page prefetched
    // from the old order goes back (released), and the next item on comes from the new one.
    state.orderSession = session;
    const stale = state.queue.filter((it) => it._session !== session);
    state.queue = state.queue.filter((it) => it._session === session);
    for (const item of stale) state.seen.delete(String(item.id));
    release(stale.map((it) => it.id));
    state.done = false;
    banner("The model was retrained: from the next item on, items come in its order (session " + session + ").", "info");
    showOrder();
    if (refill) {
      // A page that showed "all done" or "waiting" shows the new order's first item.
      fillQueue().then(() => { if (!state.current && state.historyIndex < 0) nextLive(); });
    }
    loadMetrics();
  }

  function release(ids, onLeave) {
    // Reservations we hold but won't answer end now, so others get these items at once.
    ids = (ids || []).map(String);
    if (!ids.length) return;
    const url = API + "/release";
    const body = JSON.stringify({ ids: ids });
    if (onLeave) {
      fetch(url, { method: "POST", headers: headers(true), body: body, keepalive: true }).catch(() => {});
      return;
    }
    call("POST", "/release", { ids: ids }).catch(() => { /* they lapse on their own */ });
  }

  // ---------------------------------------------------------------- actions

  // Answers are sent at once, each as a keepalive request, so closing the tab right after a
  // key press loses nothing; answers for the same item go one after another (in order).
  const itemChains = new Map();

  function write(method, path, body, onOk) {
    const job = { method: method, path: path, body: body, onOk: onOk, status: "queued", error: null };
    state.unsent.push(job);
    state.pending++;
    const key = String(body.id);
    const prev = itemChains.get(key) || Promise.resolve();
    const done = prev.then(() => send(job)).finally(() => {
      state.pending--;
      // All answers stored: one fresh read of the counts (replies may have crossed).
      if (state.pending === 0) {
        state.refreshing++;
        call("GET", "/stats").then(applyStats, () => {}).finally(() => { state.refreshing--; });
      }
      if (itemChains.get(key) === done) itemChains.delete(key);
      showUnsent();
    });
    itemChains.set(key, done);
    state.writes = Promise.all([state.writes, done]).then(() => {});
    showUnsent();
    return done;
  }

  async function send(job) {
    if (job.status === "left") return; // sent by the pagehide handler already
    job.status = "sending";
    for (let attempt = 0; ; attempt++) {
      try {
        // Answers travel in parallel: an older answer's stats must not overwrite newer ones.
        const seq = ++state.writeSeq;
        const resp = await call(job.method, job.path, job.body, true);
        state.unsent = state.unsent.filter((j) => j !== job);
        // Saved: once no answer is left unsaved, the "Not saved" banner has nothing to say.
        if (!state.unsent.some((j) => j.status === "failed")) clearBanner("not-saved");
        if (resp && resp.stats && seq > state.statsSeq) { state.statsSeq = seq; applyStats(resp.stats); }
        if (job.onOk) job.onOk(resp);
        return;
      } catch (e) {
        // Bad input is final; a network hiccup or a busy server is retried.
        if ((e.status && e.status < 500 && e.status !== 429) || attempt >= 4) {
          job.status = "failed";
          job.error = e.message;
          state.errors.push(e.message);
          banner("Not saved (item " + job.body.id + "): " + e.message, "error", true, "not-saved");
          return;
        }
        await new Promise((r) => setTimeout(r, 300 * (attempt + 1)));
      }
    }
  }

  function retry(job) {
    state.unsent = state.unsent.filter((j) => j !== job);
    state.errors = state.errors.filter((m) => m !== job.error);
    write(job.method, job.path, job.body, job.onOk);
  }

  function showUnsent() {
    // Answers that failed for good stay listed, each with a retry button.
    const box = $("ll-unsent");
    const failed = state.unsent.filter((j) => j.status === "failed");
    const waiting = state.unsent.length - failed.length;
    box.replaceChildren();
    if (waiting > 0) {
      const p = document.createElement("p");
      p.className = "ll-muted";
      p.textContent = waiting === 1 ? "1 answer being saved…" : waiting + " answers being saved…";
      box.appendChild(p);
    }
    for (const job of failed) {
      const row = document.createElement("div");
      row.className = "ll-unsent-row";
      const text = document.createElement("span");
      const what = job.path === "/skips" ? "skip" : "label " + (Array.isArray(job.body.label) ? job.body.label.join(", ") : job.body.label);
      text.textContent = "Not saved: " + what + " for item " + job.body.id + " (" + job.error + ")";
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "ll-btn ll-retry";
      btn.textContent = "Retry";
      btn.addEventListener("click", () => retry(job));
      row.append(text, btn);
      box.appendChild(row);
    }
    box.hidden = box.children.length === 0;
  }

  function onLeave() {
    // The page is going away: answers not started yet leave now (keepalive), and the items
    // we hold but didn't answer are released for the other annotators.
    for (const job of state.unsent) {
      if (job.status !== "queued") continue;
      job.status = "left";
      fetch(API + job.path, { method: job.method, headers: headers(true), body: JSON.stringify(job.body), keepalive: true }).catch(() => {});
    }
    const held = state.queue.map((it) => it.id);
    if (state.current && state.historyIndex < 0 && !state.unsent.some((j) => String(j.body.id) === String(state.current.id))) {
      held.unshift(state.current.id);
    }
    release(held, true);
  }

  function remember(item, label, status, comment) {
    // Newest first; answering an item again moves its entry to the front.
    state.history = state.history.filter((h) => String(h.id) !== String(item.id));
    const entry = { id: item.id, data: item.data, label: label, status: status, comment: comment };
    state.history.unshift(entry);
    state.cache.set(String(item.id), item.data);
    return entry;
  }

  function answer(label, skip) {
    const item = onScreen();
    if (!item) return;
    const comment = $("ll-comment").value.trim();
    const inHistory = state.historyIndex >= 0;
    const body = skip ? { id: item.id, comment: comment } : { id: item.id, [FIELD]: label, comment: comment };
    const entry = remember(item, skip ? null : label, skip ? "SKIPPED" : "LABELED", comment);
    write("POST", skip ? "/skips" : "/labels", body, (resp) => {
      if (resp && resp.label_id !== undefined) entry.label_id = resp.label_id;
    });
    if (inHistory) {
      // A changed answer moved to the front; go on with the live item.
      backToLive();
      banner("Answer for " + item.id + " changed.", "info");
    } else {
      nextLive();
    }
  }

  function choose(name) {
    if (!onScreen()) return;
    if (SPANS) { SPANS.applyType(name); return; }
    if (BOXES) { BOXES.setClass(name); return; }
    if (boot.multi_label) {
      if (state.selected.has(name)) state.selected.delete(name);
      else state.selected.add(name);
      markCategories([...state.selected], []);
      return;
    }
    answer(name, false);
  }

  function submitMulti() {
    if (!state.selected.size) {
      banner("Choose at least one category (or skip).", "info");
      return;
    }
    answer(boot.categories.map((c) => c.name).filter((n) => state.selected.has(n)), false);
  }

  function accept() {
    if (BOXES) {  // the boxes as they stand: the model's visible ones with the corrections
      const boxes = onScreen() ? BOXES.answer() : null;
      if (boxes) answer(boxes, false);
      return;
    }
    if (SPANS) {  // the spans as they stand: the model's (accepted) with the corrections
      if (onScreen()) answer(SPANS.answer(), false);
      return;
    }
    if (boot.multi_label && state.selected.size) { submitMulti(); return; }
    const s = state.historyIndex < 0 ? suggestionOf(state.current) : null;
    if (!s) {
      if (boot.multi_label) submitMulti();
      else banner("No model suggestion for this item: choose a category.", "info");
      return;
    }
    if (boot.multi_label) answer(Array.isArray(s.label) ? s.label : [s.label], false);
    else answer(Array.isArray(s.label) ? s.label[0] : s.label, false);
  }

  async function back() {
    if (state.historyIndex + 1 >= state.history.length) {
      if (state.historyDone) { banner("No earlier answers.", "info"); return; }
      await loadOlder();
      if (state.historyIndex + 1 >= state.history.length) { banner("No earlier answers.", "info"); updateNav(); return; }
    }
    if (state.historyIndex < 0 && state.current) {
      state.liveComment = { id: state.current.id, text: $("ll-comment").value };
    }
    state.historyIndex++;
    showHistory();
  }

  function forward() {
    if (state.historyIndex < 0) return;
    state.historyIndex--;
    if (state.historyIndex < 0) backToLive(); else showHistory();
  }

  function backToLive() {
    state.historyIndex = -1;
    if (state.current || state.done) showLive(); else nextLive();
  }

  async function loadOlder() {
    await state.writes; // our latest answers must be on the server before we page through them
    const known = new Set(state.history.map((h) => String(h.id)));
    const ids = state.history.map((h) => h.label_id).filter((x) => x !== undefined && x !== null);
    const before = ids.length ? Math.min(...ids) : null;
    let resp;
    try {
      resp = await call("GET", "/annotations?limit=50" + (before !== null ? "&before=" + encodeURIComponent(before) : ""));
    } catch (e) {
      banner("Could not load earlier answers: " + e.message, "error");
      return;
    }
    const rows = Array.isArray(resp) ? resp : (resp && (resp.items || resp.annotations)) || [];
    for (const r of rows) {
      const id = String(r.id !== undefined ? r.id : r.data_id);
      if (known.has(id)) continue;
      known.add(id);
      state.history.push({
        id: id,
        data: r.data !== undefined ? r.data : state.cache.get(id),
        label: r.label,
        status: r.status || (r.label === null || r.label === undefined ? "SKIPPED" : "LABELED"),
        comment: r.comment || "",
        label_id: r.label_id,
      });
    }
    if (!rows.length || rows.length < 50) state.historyDone = true;
  }

  // ---------------------------------------------------------------- keyboard

  function play() {
    // p plays the clip from its start (again if it is playing).
    const audio = $("ll-audio");
    if (!audio) return;
    audio.currentTime = 0;
    const started = audio.play();
    if (started && started.catch) started.catch(() => {});
  }

  function keyTarget(ev) {
    const t = ev.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }

  function onKey(ev) {
    if ($("ll-name-dialog").open) return;
    if (keyTarget(ev)) {
      if (ev.key === "Escape") ev.target.blur();
      return;
    }
    // The box editor's keys first: its undo (Ctrl+Z) and the held arrows (nudges) included.
    if (BOXES && onScreen() && BOXES.key(ev)) { ev.preventDefault(); ev.stopPropagation(); return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
    const key = ev.key;
    let handled = true;
    const t0 = performance.now();
    if (SPANS && onScreen() && SPANS.key(ev)) { ev.preventDefault(); ev.stopPropagation(); return; }
    if ((SPANS || BOXES) && key === "PageUp") back();
    else if ((SPANS || BOXES) && key === "PageDown") forward();
    else if (BOXES && key.startsWith("Arrow")) handled = true;
    else if (key === "ArrowLeft") back();
    else if (key === "ArrowRight") forward();
    else if (key === "Enter") { state.keyAt = t0; accept(); }
    else if (key === "s" || key === "S" || key === " ") { state.keyAt = t0; answer(null, true); }
    else if ((key === "p" || key === "P") && boot.data_type === "sound") play();
    else {
      const k = key.toLowerCase();
      const cat = !BOXES && boot.categories.find((c) => c.number === k || c.letter === k);
      if (cat) { state.keyAt = t0; choose(cat.name); } else handled = false;
    }
    if (handled) { ev.preventDefault(); ev.stopPropagation(); }
  }

  // ---------------------------------------------------------------- start

  async function start() {
    categoryButtons();
    if (BOXES) BOXES.onclass = (name) => markCategories([name], []);  // the next box's class
    // Capture phase on the window: a focused element (the sound player) cannot swallow a shortcut.
    window.addEventListener("keydown", onKey, true);
    // A clicked button keeps no focus, so Space and Enter stay shortcuts.
    document.addEventListener("click", (ev) => {
      const btn = ev.target.closest && ev.target.closest("button");
      if (btn && !btn.closest("dialog")) btn.blur();
    });
    if (SPANS || BOXES) {  // the arrows edit: back and next are PgUp and PgDn
      for (const [id, key] of [["ll-back", "PgUp"], ["ll-next", "PgDn"]]) {
        $(id).querySelector("kbd").textContent = key;
        $(id).title = $(id).title.replace(/\((.)\)/, "(" + key + ")");
      }
    }
    $("ll-back").addEventListener("click", () => back());
    $("ll-next").addEventListener("click", () => forward());
    $("ll-skip").addEventListener("click", () => answer(null, true));
    $("ll-submit").addEventListener("click", () => submitMulti());
    if ($("ll-play")) $("ll-play").addEventListener("click", () => play());
    $("ll-user-change").addEventListener("click", () => askName());
    $("ll-banner").addEventListener("click", () => { $("ll-banner").hidden = true; });
    if (!user() && boot.session_user) localStorage.setItem(USER_KEY, boot.session_user);
    if (!user()) await askName();
    showUser();
    showPreparing();
    pollConfig();
    pollHost();
    setInterval(() => { if (!document.hidden) pollHost(); }, HOST_POLL_MS);
    loadMetrics();
    setInterval(() => {
      if (!document.hidden && !state.pending) call("GET", "/stats").then(applyStats, () => {});
    }, POLL_MS);
    await nextLive();
  }

  window.addEventListener("pagehide", onLeave);
  window.addEventListener("beforeunload", (ev) => {
    // Answers not acknowledged yet: ask before the page closes.
    if (state.unsent.length) { ev.preventDefault(); ev.returnValue = ""; }
  });

  window.labelloop = {
    state: state,
    boot: boot,
    idle: () => state.pending === 0 && !state.fetching && !state.refreshing,
    unsent: () => state.unsent.length,
    flush: () => state.writes,
    boxes: BOXES,
  };

  // Review mode (review.js, `?mode=review`) shows items as this page does and runs itself.
  window.LabelloopPage = { boot: boot, call: call, user: user, askName: askName,
                           showUser: showUser, banner: banner, renderItem: renderItem,
                           keyCaps: keyCaps };
  if (boot.mode === "review") return;

  // The script tag follows the page's markup, so everything it needs is there: start now,
  // without waiting for Bokeh's scripts below it.
  start();
})();
