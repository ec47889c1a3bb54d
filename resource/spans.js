/* Labelloop span editor: marks typed spans of a text for the `spans` annotation kind.
 *
 * The text is cut into tokens (a run of letters, digits and _, or one other visible
 * character); a selection always covers whole tokens, by mouse (a drag) or by keyboard (the
 * arrows move a cursor over tokens, Shift extends). Offsets are character offsets as the
 * server counts them (code points, end exclusive), not JavaScript's UTF-16 indices.
 * The text is put in the page with textContent only. Loaded before labeling.js, which uses
 * `window.LabelloopSpans` when the webapp's kind is `spans`. */
(function () {
  "use strict";

  const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2",
    "#eeca3b", "#9d755d", "#ff9da6", "#79706e"];
  const WORD = /[\p{L}\p{N}_]/u;
  const SPACE = /\s/u;

  /** Tokens of `text`: {start, end} in code points, {ustart, uend} in UTF-16 units. */
  function tokenize(text) {
    const toks = [];
    let cp = 0, u = 0, cur = null;
    for (const ch of text) {
      const w = WORD.test(ch);
      if (cur && w && cur.word) {
        cur.end = cp + 1;
        cur.uend = u + ch.length;
      } else {
        if (cur) { toks.push(cur); cur = null; }
        if (!SPACE.test(ch)) {
          cur = { start: cp, end: cp + 1, ustart: u, uend: u + ch.length, word: w };
          if (!w) { toks.push(cur); cur = null; }
        }
      }
      cp += 1;
      u += ch.length;
    }
    if (cur) toks.push(cur);
    return toks;
  }

  function SpanEditor(types, overlapping) {
    this.types = types;
    this.overlapping = !!overlapping;
    this.colours = {};
    types.forEach((t, i) => { this.colours[t.name] = PALETTE[i % PALETTE.length]; });
    this.toks = [];
    this.spans = [];
    this.cursor = 0;
    this.anchor = null;
    this.dragging = false;
    this.onchange = null;
    window.addEventListener("mouseup", () => { this.dragging = false; });
  }

  SpanEditor.prototype.colour = function (name) {
    return this.colours[name] || "#888";
  };

  /** Show `text` with `spans` ({start, end, label, score?, suggested?}) in `box`. */
  SpanEditor.prototype.show = function (box, text, spans) {
    this.text = text;
    this.toks = tokenize(text);
    this.spans = (spans || []).filter((s) => s && s.end > s.start).map((s) => ({
      start: s.start, end: s.end, label: s.label, score: s.score, suggested: !!s.suggested,
    }));
    this.cursor = 0;
    this.anchor = null;
    const root = document.createElement("div");
    root.className = "ll-text ll-spans";
    root.id = "ll-spans";
    this.tokEls = new Array(this.toks.length);
    this.gapEls = new Array(this.toks.length);
    this.painted = new Array(this.toks.length);
    this.gapPainted = new Array(this.toks.length);
    let at = 0;
    const frag = document.createDocumentFragment();
    this.toks.forEach((t, i) => {
      if (t.ustart > at) {
        const gap = document.createElement("span");
        gap.className = "ll-gap";
        gap.textContent = text.slice(at, t.ustart);
        frag.appendChild(gap);
        this.gapEls[i] = gap;
      }
      const el = document.createElement("span");
      el.className = "ll-tok";
      el.dataset.i = String(i);
      el.textContent = text.slice(t.ustart, t.uend);
      frag.appendChild(el);
      this.tokEls[i] = el;
      at = t.uend;
    });
    if (at < text.length) frag.appendChild(document.createTextNode(text.slice(at)));
    root.appendChild(frag);
    root.addEventListener("mousedown", (ev) => {
      const i = this.tokenAt(ev.target);
      if (i === null || ev.button !== 0) return;
      ev.preventDefault(); // no native text selection: the editor's own
      this.dragging = true;
      this.anchor = i;
      this.cursor = i;
      this.paint();
    });
    root.addEventListener("mouseover", (ev) => {
      if (!this.dragging) return;
      const i = this.tokenAt(ev.target);
      if (i !== null && i !== this.cursor) { this.cursor = i; this.paint(); }
    });
    this.root = root;
    box.replaceChildren(root);
    this.paint();
  };

  SpanEditor.prototype.tokenAt = function (el) {
    const tok = el && el.closest ? el.closest(".ll-tok") : null;
    return tok && tok.dataset.i !== undefined ? Number(tok.dataset.i) : null;
  };

  /** The selected characters [start, end): the tokens from the anchor to the cursor. */
  SpanEditor.prototype.selection = function () {
    if (!this.toks.length) return null;
    const a = this.anchor === null ? this.cursor : this.anchor;
    const lo = Math.min(a, this.cursor), hi = Math.max(a, this.cursor);
    return [this.toks[lo].start, this.toks[hi].end];
  };

  /** Give the selection (or the token under the cursor) the type `label`. */
  SpanEditor.prototype.applyType = function (label) {
    const sel = this.selection();
    if (!sel) return;
    const [s, e] = sel;
    const same = this.spans.find((x) => x.start === s && x.end === e);
    if (same) {
      same.label = label;
      same.suggested = false;
      same.score = undefined;
    } else {
      if (!this.overlapping) this.spans = this.spans.filter((x) => x.end <= s || x.start >= e);
      this.spans.push({ start: s, end: e, label: label, suggested: false });
    }
    this.anchor = null;
    this.paint();
  };

  /** Remove the span under the cursor (the shortest when they nest); false if none. */
  SpanEditor.prototype.removeAtCursor = function () {
    if (!this.toks.length) return false;
    const t = this.toks[this.cursor];
    let best = -1;
    this.spans.forEach((x, k) => {
      if (x.start <= t.start && t.end <= x.end &&
          (best < 0 || x.end - x.start < this.spans[best].end - this.spans[best].start)) best = k;
    });
    if (best < 0) return false;
    this.spans.splice(best, 1);
    this.anchor = null;
    this.paint();
    return true;
  };

  /** The answer: the spans as they stand (suggestions included), sorted. */
  SpanEditor.prototype.answer = function () {
    return this.spans.map((x) => ({ start: x.start, end: x.end, label: x.label }))
      .sort((a, b) => a.start - b.start || a.end - b.end || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
  };

  SpanEditor.prototype.move = function (to, extend) {
    if (!this.toks.length) return;
    if (extend && this.anchor === null) this.anchor = this.cursor;
    if (!extend) this.anchor = null;
    this.cursor = Math.max(0, Math.min(this.toks.length - 1, to));
    this.paint();
    const el = this.tokEls[this.cursor];
    if (el && el.scrollIntoView) el.scrollIntoView({ block: "nearest" });
  };

  /** Editing keys: true when the key was the editor's. */
  SpanEditor.prototype.key = function (ev) {
    const k = ev.key;
    if (k === "ArrowRight") this.move(this.cursor + 1, ev.shiftKey);
    else if (k === "ArrowLeft") this.move(this.cursor - 1, ev.shiftKey);
    else if (k === "Home") this.move(0, ev.shiftKey);
    else if (k === "End") this.move(this.toks.length - 1, ev.shiftKey);
    else if (k === "Backspace" || k === "Delete") this.removeAtCursor();
    else if (k === "Escape") { this.anchor = null; this.paint(); }
    else return false;
    return true;
  };

  /** Draw the spans, the selection and the cursor: only tokens whose look changed are touched
   * (a long text keeps every key press cheap). */
  SpanEditor.prototype.paint = function () {
    const n = this.toks.length;
    if (!n) { if (this.onchange) this.onchange(); return; }
    const inner = new Array(n).fill(-1); // the shortest span covering each token
    const starts = this.toks.map((t) => t.start);
    const first = (pos) => { // the first token starting at or after pos
      let lo = 0, hi = n;
      while (lo < hi) { const m = (lo + hi) >> 1; if (starts[m] < pos) lo = m + 1; else hi = m; }
      return lo;
    };
    this.spans.forEach((x, k) => {
      for (let i = first(x.start); i < n && this.toks[i].end <= x.end; i++) {
        const cur = inner[i];
        if (cur < 0 || x.end - x.start < this.spans[cur].end - this.spans[cur].start) inner[i] = k;
      }
    });
    const sel = this.anchor === null ? null : [Math.min(this.anchor, this.cursor), Math.max(this.anchor, this.cursor)];
    for (let i = 0; i < n; i++) {
      const k = inner[i];
      const x = k >= 0 ? this.spans[k] : null;
      const isFirst = x && (i === 0 || inner[i - 1] !== k);
      const isLast = x && (i === n - 1 || inner[i + 1] !== k);
      const selected = sel && i >= sel[0] && i <= sel[1];
      const look = [k, x ? x.label : "", x && x.suggested ? 1 : 0, isFirst ? 1 : 0, isLast ? 1 : 0,
        selected ? 1 : 0, i === this.cursor ? 1 : 0, x && x.score !== undefined ? x.score : ""].join("|");
      if (this.painted[i] !== look) {
        this.painted[i] = look;
        const el = this.tokEls[i];
        let cls = "ll-tok";
        if (x) cls += x.suggested ? " ll-in ll-sug" : " ll-in";
        if (isFirst) cls += " ll-first";
        if (isLast) cls += " ll-last";
        if (selected) cls += " ll-sel";
        if (i === this.cursor) cls += " ll-cur";
        el.className = cls;
        if (x) el.style.setProperty("--c", this.colour(x.label)); else el.style.removeProperty("--c");
        if (isLast) {
          const score = typeof x.score === "number" && x.suggested ? " " + Math.round(x.score * 100) + "%" : "";
          el.dataset.tag = x.label + score;
        } else delete el.dataset.tag;
        if (x) el.dataset.span = x.start + ":" + x.end + ":" + x.label; else delete el.dataset.span;
      }
      const gap = this.gapEls[i];
      if (gap) {
        const joined = i > 0 && k >= 0 && inner[i - 1] === k;
        const glook = joined ? k + "|" + (x.suggested ? 1 : 0) + "|" + x.label : "";
        if (this.gapPainted[i] !== glook) {
          this.gapPainted[i] = glook;
          gap.className = joined ? (x.suggested ? "ll-gap ll-in ll-sug" : "ll-gap ll-in") : "ll-gap";
          if (joined) gap.style.setProperty("--c", this.colour(x.label)); else gap.style.removeProperty("--c");
        }
      }
    }
    if (this.onchange) this.onchange();
  };

  window.LabelloopSpans = SpanEditor;
  window.LabelloopSpans.tokenize = tokenize;
  window.LabelloopSpans.PALETTE = PALETTE;
})();
