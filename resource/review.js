/* Labelloop review mode (`/webapps/<id>?mode=review`): the items of the webapp's review queue
 * (GET review), most suspicious first, each with its answers, the consensus, the model's
 * suggestion and why it is here; the reviewer keeps the consensus (Enter), takes the
 * suggestion (Space) or picks a category (its number or letter, as on the labeling page), and
 * the final label goes to POST review. Items render as on the labeling page (labeling.js's
 * renderItem). Data from the API is only ever put in the page with textContent. */
(function () {
  "use strict";

  const page = window.LabelloopPage;
  const boot = page.boot;
  const $ = (id) => document.getElementById(id);
  const SIZE = 20;
  const SPANS = boot.kind === "spans";
  const MULTI = Boolean(boot.multi_label);

  const state = {
    queue: [],          // fetched, not shown yet
    seen: new Set(),    // ids shown on this page (decided or left for later)
    current: null,
    selected: new Set(),
    reviewed: 0,
    total: null,        // items in the server's queue when last asked
    sinceFill: 0,       // reviewed since then
    last: null,         // the last decision, as shown
    fetching: null,
    sending: 0,
    writes: Promise.resolve(),
    done: false,
  };

  function shown(value) {
    if (value === null || value === undefined) return "–";
    if (SPANS && Array.isArray(value)) {
      if (!value.length) return "(no spans)";
      const text = current() && current().data ? String(current().data.text || "") : "";
      return value.map((s) => s.label + " “" + text.slice(s.start, s.end) + "”").join(", ");
    }
    if (Array.isArray(value)) return value.length ? value.join(", ") : "(none)";
    return String(value);
  }

  function current() { return state.current; }

  function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

  function suggested(item) {
    const s = item && item.suggestion;
    if (!s) return null;
    if (SPANS) return Array.isArray(s.spans) ? s.spans.map((x) => ({ start: x.start, end: x.end, label: x.label })) : null;
    if (s.label === undefined || s.label === null) return null;
    if (MULTI) return Array.isArray(s.label) ? s.label : [s.label];
    return Array.isArray(s.label) ? s.label[0] : s.label;
  }

  // ---------------------------------------------------------------- the queue

  async function fill() {
    if (state.fetching) return state.fetching;
    state.fetching = (async () => {
      try {
        const resp = await page.call("GET", "/review?size=" + SIZE);
        state.total = resp.size;
        state.sinceFill = 0;
        for (const item of resp.items || []) {
          if (state.seen.has(String(item.id))) continue;
          if (state.queue.some((q) => String(q.id) === String(item.id))) continue;
          state.queue.push(item);
        }
        state.done = !state.queue.length;
      } catch (e) {
        state.done = true;
        $("ll-done-text").textContent = e.status === 403
          ? e.message
          : "Could not load the review queue: " + e.message;
        $("ll-done").querySelector("h2").textContent = e.status === 403 ? "Reviewers only" : "Review queue unavailable";
      }
      state.fetching = null;
    })();
    return state.fetching;
  }

  async function next() {
    state.current = null;
    if (!state.queue.length) {
      await state.writes;  // reviewed items leave the server's queue once stored
      await fill();
    }
    const item = state.queue.shift() || null;
    state.current = item;
    if (item) state.seen.add(String(item.id));
    show();
  }

  // ---------------------------------------------------------------- showing

  function show() {
    const item = state.current;
    $("ll-app").dataset.state = item ? "item" : "done";
    $("ll-done").hidden = Boolean(item);
    $("ll-item").hidden = !item;
    $("ll-comment").value = "";
    state.selected.clear();
    $("ll-rv-submit").hidden = true;
    progress();
    if (!item) {
      delete $("ll-item").dataset.itemId;
      $("ll-item-id").textContent = "";
      $("ll-rv-reason").textContent = "";
      for (const id of ["ll-rv-consensus", "ll-rv-suggestion", "ll-rv-agreement"]) $(id).textContent = "";
      $("ll-rv-answers").replaceChildren();
      markCategories();
      return;
    }
    // Spans: the text shows the consensus's spans (drawn as the labeling page draws proposals).
    page.renderItem(SPANS ? Object.assign({}, item, { suggestion: { spans: item.consensus || [] } }) : item,
                    $("ll-item"));
    $("ll-item").dataset.itemId = String(item.id);
    $("ll-item-id").textContent = String(item.id);
    const reason = $("ll-rv-reason");
    reason.replaceChildren();
    const score = document.createElement("span");
    score.className = "ll-rv-score";
    score.textContent = Number(item.score).toFixed(2);
    score.title = "how suspicious (0 to 1)";
    reason.append(score, document.createTextNode(" " + item.reason));
    $("ll-rv-consensus").textContent = shown(item.consensus);
    $("ll-rv-agreement").textContent = item.agreement === null || item.agreement === undefined
      ? "" : "(agreement " + Math.round(item.agreement * 100) + " %)";
    $("ll-rv-keep").disabled = item.consensus === null || item.consensus === undefined;
    const list = $("ll-rv-answers");
    list.replaceChildren();
    for (const a of item.answers || []) {
      const li = document.createElement("li");
      const who = document.createElement("span");
      who.className = "ll-rv-annotator";
      who.textContent = a.annotator;
      const what = document.createElement("span");
      what.className = "ll-rv-label";
      what.textContent = shown(a.label);
      li.className = same(a.label, item.consensus) ? "ll-rv-agrees" : "ll-rv-differs";
      li.append(who, what);
      list.appendChild(li);
    }
    if (!list.children.length) {
      const li = document.createElement("li");
      li.className = "ll-muted";
      li.textContent = "no answer";
      list.appendChild(li);
    }
    const s = suggested(item);
    const conf = item.suggestion && typeof item.suggestion.confidence === "number"
      ? " (" + Math.round(item.suggestion.confidence * 100) + " %)" : "";
    $("ll-rv-suggestion").textContent = s === null ? "no suggestion" : shown(s) + conf;
    $("ll-rv-take").disabled = s === null;
    markCategories();
  }

  function progress() {
    const left = state.total === null ? "–" : Math.max(0, state.total - state.sinceFill);
    $("ll-rv-progress").textContent = "Reviewed here: " + state.reviewed + " · in the queue: " + left;
    $("ll-rv-last").textContent = state.last ? "Last: " + state.last : "";
  }

  function categoryButtons() {
    const box = $("ll-categories");
    box.replaceChildren();
    if (SPANS) { box.closest(".ll-section").hidden = true; return; }
    for (const c of boot.categories) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "ll-cat";
      btn.dataset.name = c.name;
      const keys = page.keyCaps([c.number, c.letter]);
      const name = document.createElement("span");
      name.className = "ll-cat-name";
      name.textContent = c.name;
      btn.append(keys, name);
      btn.addEventListener("click", () => choose(c.name));
      box.appendChild(btn);
    }
  }

  function markCategories() {
    const item = state.current;
    const consensus = item ? item.consensus : null;
    const chosen = Array.isArray(consensus) ? consensus : [consensus];
    for (const btn of $("ll-categories").children) {
      btn.classList.toggle("ll-chosen", state.selected.has(btn.dataset.name));
      btn.classList.toggle("ll-suggested", !state.selected.size && chosen.includes(btn.dataset.name));
    }
  }

  // ---------------------------------------------------------------- deciding

  function decide(label) {
    const item = state.current;
    if (!item || label === null || label === undefined) return;
    const body = { id: item.id, label: label, comment: $("ll-comment").value.trim() || null };
    state.sending++;
    state.writes = state.writes.then(() => page.call("POST", "/review", body)).then(() => {
      state.reviewed++;
      state.sinceFill++;
      progress();
    }, (e) => {
      page.banner("Review of " + item.id + " not recorded: " + e.message, "error", true);
    }).finally(() => { state.sending--; });
    state.last = item.id + " → " + shown(label);
    next();
  }

  function keep() {
    const item = state.current;
    if (!item) return;
    if (MULTI && state.selected.size) { submitChosen(); return; }
    if (item.consensus === null || item.consensus === undefined) {
      page.banner("No consensus for this item: choose a category.", "info");
      return;
    }
    decide(item.consensus);
  }

  function take() {
    const s = suggested(state.current);
    if (s === null) { page.banner("No model suggestion for this item.", "info"); return; }
    decide(s);
  }

  function choose(name) {
    if (!state.current) return;
    if (!MULTI) { decide(name); return; }
    if (state.selected.has(name)) state.selected.delete(name); else state.selected.add(name);
    $("ll-rv-submit").hidden = !state.selected.size;
    markCategories();
  }

  function submitChosen() {
    decide(boot.categories.map((c) => c.name).filter((n) => state.selected.has(n)));
  }

  function onKey(ev) {
    if ($("ll-name-dialog").open) return;
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) {
      if (ev.key === "Escape") t.blur();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
    let handled = true;
    if (ev.key === "Enter") keep();
    else if (ev.key === " ") take();
    else if (ev.key === "ArrowRight") next();
    else {
      const k = ev.key.toLowerCase();
      const cat = SPANS ? null : boot.categories.find((c) => c.number === k || c.letter === k);
      if (cat) choose(cat.name); else handled = false;
    }
    if (handled) { ev.preventDefault(); ev.stopPropagation(); }
  }

  async function start() {
    categoryButtons();
    window.addEventListener("keydown", onKey, true);
    document.addEventListener("click", (ev) => {
      const btn = ev.target.closest && ev.target.closest("button");
      if (btn && !btn.closest("dialog")) btn.blur();  // Enter and Space stay shortcuts
    });
    $("ll-rv-keep").addEventListener("click", keep);
    $("ll-rv-take").addEventListener("click", take);
    $("ll-rv-submit").addEventListener("click", submitChosen);
    $("ll-next").addEventListener("click", () => next());
    $("ll-user-change").addEventListener("click", () => page.askName());
    $("ll-banner").addEventListener("click", () => { $("ll-banner").hidden = true; });
    if (!page.user() && boot.session_user) localStorage.setItem("labelloop.user", boot.session_user);
    if (!page.user()) await page.askName();
    page.showUser();
    await next();
  }

  window.labelloopReview = {
    state: state,
    idle: () => state.sending === 0 && !state.fetching,
    flush: () => state.writes,
  };

  start();
})();
