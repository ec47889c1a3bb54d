/* Labelloop box editor: draws typed bounding boxes on an image for the `boxes` annotation kind.
 *
 * Boxes are kept in pixels of the original image (floats while editing, integers in the
 * answer) and only converted for display, so they are exact at any zoom. The image is put in
 * the page once, as an <img> moved and scaled by a CSS transform (a zoom or a pan never
 * decodes it again); the boxes are an SVG overlay in screen pixels, and a mouse move repaints
 * only that overlay. Loaded before labeling.js, which uses `window.LabelloopBoxes` when the
 * webapp's kind is `boxes`. Class names are put in the page with textContent only. */
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const GRAB = 7;          // screen px around a handle or an edge of the selected box
  const CLICK = 3;         // a press that moves less than this (screen px) is a click
  const MAX_SCALE = 40;    // screen px per image px at the closest zoom
  const THRESHOLD_KEY = "labelloop.boxes.threshold";
  const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];

  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function copy(boxes) {
    return boxes.map((b) => Object.assign({}, b));
  }

  function BoxEditor(classes) {
    this.classes = (classes || []).map((c) => ({ name: c.name, colour: c.colour || "#e6194b", key: c.key || null }));
    this.byKey = {};
    this.colours = {};
    for (const c of this.classes) {
      this.colours[c.name] = c.colour;
      if (c.key) this.byKey[c.key] = c.name;
    }
    this.current = this.classes.length ? this.classes[0].name : "";
    const t = Number(localStorage.getItem(THRESHOLD_KEY));
    this.threshold = isFinite(t) && localStorage.getItem(THRESHOLD_KEY) !== null ? t : 0.5;
    this.boxes = [];
    this.sel = -1;
    this.undos = [];
    this.redos = [];
    this.drag = null;
    this.onclass = null;   // called with the class of the next box when it changes
    this.onchange = null;  // called after every edit
    this.lastPaintMs = 0;
    window.addEventListener("mousemove", (ev) => this.dragTo(ev));
    window.addEventListener("mouseup", (ev) => this.drop(ev));
    if (window.ResizeObserver) {
      this.resizer = new ResizeObserver(() => { if (this.fitted) this.fit(); else this.paint(); });
    }
  }

  BoxEditor.prototype.colour = function (name) {
    return this.colours[name] || "#888";
  };

  BoxEditor.prototype.keyOf = function (name) {
    const c = this.classes.find((x) => x.name === name);
    return c ? c.key : null;
  };

  /** Show the image `img` (an <img>, loaded or not) of `width` x `height` pixels (null: read
   * from the image once loaded) in `box`, with `boxes` ({x, y, w, h, label, score?, suggested?}). */
  BoxEditor.prototype.show = function (box, img, width, height, boxes) {
    this.boxes = (boxes || []).filter((b) => b && b.w > 0 && b.h > 0).map((b) => ({
      x: Number(b.x), y: Number(b.y), w: Number(b.w), h: Number(b.h), label: b.label,
      score: typeof b.score === "number" ? b.score : undefined, suggested: !!b.suggested,
    }));
    this.sel = -1;
    this.undos = [];
    this.redos = [];
    this.drag = null;
    this.W = width > 0 ? width : 0;
    this.H = height > 0 ? height : 0;
    this.view = { s: 1, tx: 0, ty: 0 };
    this.fitted = true;

    const root = document.createElement("div");
    root.className = "ll-boxes";
    const bar = document.createElement("div");
    bar.className = "ll-boxes-bar";
    this.nextEl = document.createElement("span");
    this.nextEl.className = "ll-boxes-next";
    this.nextEl.id = "ll-boxes-next";
    const sugs = this.boxes.filter((b) => b.suggested).length;
    const thr = document.createElement("label");
    thr.className = "ll-boxes-threshold";
    thr.hidden = !sugs;
    const thrText = document.createElement("span");
    const slider = document.createElement("input");
    slider.type = "range";
    slider.min = "0";
    slider.max = "1";
    slider.step = "0.01";
    slider.value = String(this.threshold);
    slider.id = "ll-boxes-threshold";
    slider.title = "Hide the model's boxes scoring below this";
    slider.addEventListener("input", () => {
      this.setThreshold(Number(slider.value));
    });
    // The keyboard goes back to the page (Enter submits) once the slider is let go.
    slider.addEventListener("change", () => slider.blur());
    thr.append("Suggestions ≥ ", slider, thrText);
    this.thrText = thrText;
    this.zoomEl = document.createElement("span");
    this.zoomEl.className = "ll-boxes-zoom";
    this.zoomEl.id = "ll-boxes-zoom";
    this.posEl = document.createElement("span");
    this.posEl.className = "ll-boxes-pos";
    this.posEl.id = "ll-boxes-pos";
    const fit = document.createElement("button");
    fit.type = "button";
    fit.className = "ll-btn ll-boxes-fit";
    fit.textContent = "Fit (f)";
    fit.addEventListener("click", () => this.fit());
    bar.append(this.nextEl, thr, this.posEl, this.zoomEl, fit);

    const view = document.createElement("div");
    view.className = "ll-boxes-view";
    view.id = "ll-boxes";
    img.className = "ll-boxes-img";
    img.draggable = false;
    img.alt = img.alt || "image";
    const svg = el("svg", { class: "ll-boxes-svg" });
    this.layer = el("g", {}, svg);
    this.draft = el("rect", { class: "ll-box ll-box-draft", visibility: "hidden" }, svg);
    this.handles = el("g", { class: "ll-handles", visibility: "hidden" }, svg);
    this.handleEls = HANDLES.map((h) => el("rect", { class: "ll-handle", "data-handle": h, width: 8, height: 8 }, this.handles));
    this.cross = [el("line", { class: "ll-cross" }, svg), el("line", { class: "ll-cross" }, svg)];
    view.append(img, svg);
    view.addEventListener("mousedown", (ev) => this.press(ev));
    view.addEventListener("mousemove", (ev) => { if (!this.drag) this.hover(ev); });
    view.addEventListener("mouseleave", () => this.hover(null));
    view.addEventListener("wheel", (ev) => this.wheel(ev), { passive: false });
    view.addEventListener("contextmenu", (ev) => ev.preventDefault());
    root.append(bar, view);
    this.root = root;
    this.viewEl = view;
    this.img = img;
    this.svg = svg;
    this.els = [];
    box.replaceChildren(root);
    if (this.resizer) { this.resizer.disconnect(); this.resizer.observe(view); }
    const ready = () => {
      if (!this.W || !this.H) { this.W = img.naturalWidth; this.H = img.naturalHeight; }
      img.style.width = this.W + "px";
      img.style.height = this.H + "px";
      this.fit();
    };
    if (this.W && this.H) ready();
    else if (img.complete && img.naturalWidth) ready();
    else img.addEventListener("load", ready, { once: true });
    this.showClass();
  };

  // ------------------------------------------------------------ view (zoom and pan)

  /** Show the whole image, centred. */
  BoxEditor.prototype.fit = function () {
    if (!this.viewEl || !this.W) return;
    const vw = this.viewEl.clientWidth, vh = this.viewEl.clientHeight;
    if (!vw || !vh) return;
    const s = Math.min(vw / this.W, vh / this.H);
    this.view = { s: s, tx: (vw - s * this.W) / 2, ty: (vh - s * this.H) / 2 };
    this.fitScale = s;
    this.fitted = true;
    this.place();
  };

  /** Zoom by `factor` keeping the image point under screen point (cx, cy) where it is. */
  BoxEditor.prototype.zoom = function (factor, cx, cy) {
    if (!this.W) return;
    const v = this.view;
    const min = Math.min(this.fitScale || v.s, 1) / 2;
    const s = Math.max(min, Math.min(MAX_SCALE, v.s * factor));
    if (cx === undefined) { cx = this.viewEl.clientWidth / 2; cy = this.viewEl.clientHeight / 2; }
    this.view = { s: s, tx: cx - ((cx - v.tx) * s) / v.s, ty: cy - ((cy - v.ty) * s) / v.s };
    this.fitted = false;
    this.place();
  };

  BoxEditor.prototype.wheel = function (ev) {
    ev.preventDefault();
    const r = this.viewEl.getBoundingClientRect();
    const unit = ev.deltaMode === 1 ? 16 : ev.deltaMode === 2 ? 400 : 1;
    this.zoom(Math.exp(-ev.deltaY * unit * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
  };

  /** Move the image to the view (its transform only) and repaint the boxes. */
  BoxEditor.prototype.place = function () {
    const v = this.view;
    this.img.style.transform = "translate(" + v.tx + "px, " + v.ty + "px) scale(" + v.s + ")";
    // Zoomed in far, pixels stay sharp squares: a box's edge can be put between two of them.
    this.img.classList.toggle("ll-pixelated", v.s >= 3);
    this.viewEl.dataset.scale = String(v.s);
    this.zoomEl.textContent = Math.round(v.s * 100) + "%";
    this.paint();
  };

  /** Image pixels of a mouse event (floats, not clamped). */
  BoxEditor.prototype.toImage = function (ev, rect) {
    const r = rect || this.viewEl.getBoundingClientRect();
    const v = this.view;
    return { x: (ev.clientX - r.left - v.tx) / v.s, y: (ev.clientY - r.top - v.ty) / v.s };
  };

  BoxEditor.prototype.clampPoint = function (p) {
    return { x: Math.max(0, Math.min(this.W, p.x)), y: Math.max(0, Math.min(this.H, p.y)) };
  };

  // ------------------------------------------------------------ boxes

  BoxEditor.prototype.visible = function (b) {
    return !b.suggested || b.score === undefined || b.score >= this.threshold - 1e-9;
  };

  /** Keep the state before an edit (for undo); a new edit forgets what was undone. */
  BoxEditor.prototype.remember = function () {
    this.undos.push({ boxes: copy(this.boxes), sel: this.sel });
    this.redos = [];
  };

  BoxEditor.prototype.edited = function () {
    this.paint();
    if (this.onchange) this.onchange();
  };

  /** A box touched by an edit is the annotator's own (no longer the model's suggestion). */
  function own(b) {
    b.suggested = false;
    b.score = undefined;
  }

  BoxEditor.prototype.undo = function () {
    if (!this.undos.length) return;
    this.redos.push({ boxes: copy(this.boxes), sel: this.sel });
    const s = this.undos.pop();
    this.boxes = s.boxes;
    this.sel = s.sel;
    this.edited();
  };

  BoxEditor.prototype.redo = function () {
    if (!this.redos.length) return;
    this.undos.push({ boxes: copy(this.boxes), sel: this.sel });
    const s = this.redos.pop();
    this.boxes = s.boxes;
    this.sel = s.sel;
    this.edited();
  };

  BoxEditor.prototype.showClass = function () {
    const name = this.current;
    this.nextEl.replaceChildren();
    const sw = document.createElement("span");
    sw.className = "ll-swatch";
    sw.style.setProperty("--c", this.colour(name));
    const b = document.createElement("b");
    b.textContent = name;
    this.nextEl.append("Next box: ", sw, b);
    if (this.onclass) this.onclass(name);
  };

  /** The class of the next box, and of the selected one. */
  BoxEditor.prototype.setClass = function (name) {
    if (!(name in this.colours)) return;
    this.current = name;
    this.showClass();
    const b = this.boxes[this.sel];
    if (b && (b.label !== name || b.suggested)) {
      this.remember();
      b.label = name;
      own(b);
      this.edited();
    }
  };

  BoxEditor.prototype.setThreshold = function (t) {
    this.threshold = t;
    localStorage.setItem(THRESHOLD_KEY, String(t));
    if (this.sel >= 0 && !this.visible(this.boxes[this.sel])) this.sel = -1;
    this.paint();
  };

  BoxEditor.prototype.remove = function () {
    if (this.sel < 0) return;
    this.remember();
    this.boxes.splice(this.sel, 1);
    this.sel = -1;
    this.edited();
  };

  BoxEditor.prototype.nudge = function (dx, dy) {
    const b = this.boxes[this.sel];
    if (!b) return;
    const x = Math.max(0, Math.min(this.W - b.w, b.x + dx));
    const y = Math.max(0, Math.min(this.H - b.h, b.y + dy));
    if (x === b.x && y === b.y) return;
    this.remember();
    b.x = x;
    b.y = y;
    own(b);
    this.edited();
  };

  /** Select the next (or previous) visible box; false when there is none. */
  BoxEditor.prototype.cycle = function (step) {
    const shown = this.boxes.map((b, i) => i).filter((i) => this.visible(this.boxes[i]));
    if (!shown.length) return false;
    const at = shown.indexOf(this.sel);
    const k = at < 0 ? (step > 0 ? 0 : shown.length - 1) : (at + step + shown.length) % shown.length;
    this.sel = shown[k];
    this.paint();
    return true;
  };

  /** The answer: the boxes as they stand (the model's visible ones included), in whole
   * pixels of the original image, inside it, at least one pixel a side (null until the
   * image's size is known). */
  BoxEditor.prototype.answer = function () {
    if (!this.W || !this.H) return null;  // the image's size is not known yet
    const out = [];
    for (const b of this.boxes) {
      if (!this.visible(b)) continue;
      let x0 = Math.max(0, Math.min(this.W, Math.round(b.x)));
      let y0 = Math.max(0, Math.min(this.H, Math.round(b.y)));
      let x1 = Math.max(0, Math.min(this.W, Math.round(b.x + b.w)));
      let y1 = Math.max(0, Math.min(this.H, Math.round(b.y + b.h)));
      if (x1 <= x0) { if (x0 >= this.W) x0 = this.W - 1; x1 = x0 + 1; }
      if (y1 <= y0) { if (y0 >= this.H) y0 = this.H - 1; y1 = y0 + 1; }
      out.push({ x: x0, y: y0, w: x1 - x0, h: y1 - y0, label: b.label });
    }
    return out.sort((a, b) => a.y - b.y || a.x - b.x || a.h - b.h || a.w - b.w || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
  };

  // ------------------------------------------------------------ mouse

  /** What the mouse is over: a handle or edge of the selected box, else the smallest visible
   * box containing the point. */
  BoxEditor.prototype.hit = function (sx, sy, p) {
    const v = this.view;
    const b = this.boxes[this.sel];
    if (b) {
      const l = v.tx + v.s * b.x, t = v.ty + v.s * b.y, r = l + v.s * b.w, bo = t + v.s * b.h;
      const inY = sy > t - GRAB && sy < bo + GRAB, inX = sx > l - GRAB && sx < r + GRAB;
      const edges = {
        w: inY && Math.abs(sx - l) <= GRAB, e: inY && Math.abs(sx - r) <= GRAB,
        n: inX && Math.abs(sy - t) <= GRAB, s: inX && Math.abs(sy - bo) <= GRAB,
      };
      // A small box: the nearer edge of each pair wins.
      if (edges.w && edges.e) { if (Math.abs(sx - l) <= Math.abs(sx - r)) edges.e = false; else edges.w = false; }
      if (edges.n && edges.s) { if (Math.abs(sy - t) <= Math.abs(sy - bo)) edges.s = false; else edges.n = false; }
      const which = (edges.n ? "n" : edges.s ? "s" : "") + (edges.w ? "w" : edges.e ? "e" : "");
      if (which) return { resize: which, index: this.sel };
    }
    let best = -1;
    this.boxes.forEach((x, i) => {
      if (!this.visible(x)) return;
      if (p.x >= x.x && p.x <= x.x + x.w && p.y >= x.y && p.y <= x.y + x.h &&
          (best < 0 || x.w * x.h < this.boxes[best].w * this.boxes[best].h)) best = i;
    });
    return best >= 0 ? { move: best } : null;
  };

  BoxEditor.prototype.press = function (ev) {
    if (!this.W) return;
    const rect = this.viewEl.getBoundingClientRect();
    const sx = ev.clientX - rect.left, sy = ev.clientY - rect.top;
    ev.preventDefault();
    if (ev.button === 1 || ev.button === 2) {  // the middle or right button pans
      this.drag = { pan: true, sx: sx, sy: sy, tx: this.view.tx, ty: this.view.ty, rect: rect };
      return;
    }
    if (ev.button !== 0) return;
    const p = this.toImage(ev, rect);
    const h = ev.altKey ? null : this.hit(sx, sy, p);
    if (h && h.resize) {
      this.drag = { resize: h.resize, index: h.index, orig: Object.assign({}, this.boxes[h.index]), p0: p, sx: sx, sy: sy, rect: rect };
    } else if (h) {
      this.sel = h.move;
      this.drag = { move: h.move, orig: Object.assign({}, this.boxes[h.move]), p0: p, sx: sx, sy: sy, rect: rect };
      this.paint();
    } else {
      // Alt draws even over a box (nested objects).
      this.drag = { draw: true, p0: this.clampPoint(p), sx: sx, sy: sy, rect: rect };
    }
  };

  BoxEditor.prototype.dragTo = function (ev) {
    const d = this.drag;
    if (!d) return;
    const t0 = performance.now();
    const sx = ev.clientX - d.rect.left, sy = ev.clientY - d.rect.top;
    if (d.pan) {
      this.view.tx = d.tx + sx - d.sx;
      this.view.ty = d.ty + sy - d.sy;
      this.fitted = false;
      this.place();
      return;
    }
    if (!d.moved && Math.abs(sx - d.sx) < CLICK && Math.abs(sy - d.sy) < CLICK) return;
    d.moved = true;
    const p = this.toImage(ev, d.rect);
    if (d.draw) {
      const q = this.clampPoint(p);
      d.box = { x: Math.min(d.p0.x, q.x), y: Math.min(d.p0.y, q.y), w: Math.abs(q.x - d.p0.x), h: Math.abs(q.y - d.p0.y) };
      this.paintDraft(d.box);
    } else if (d.move !== undefined) {
      const o = d.orig, b = this.boxes[d.move];
      b.x = Math.max(0, Math.min(this.W - o.w, o.x + p.x - d.p0.x));
      b.y = Math.max(0, Math.min(this.H - o.h, o.y + p.y - d.p0.y));
      this.paint();
    } else if (d.resize) {
      const o = d.orig, b = this.boxes[d.index];
      const q = this.clampPoint(p);
      const min = Math.min(1, 1 / this.view.s);  // a box keeps some area
      let l = o.x, t = o.y, r = o.x + o.w, bo = o.y + o.h;
      if (d.resize.includes("w")) l = Math.min(q.x - d.p0.x + o.x, r - min);
      if (d.resize.includes("e")) r = Math.max(q.x - d.p0.x + o.x + o.w, l + min);
      if (d.resize.includes("n")) t = Math.min(q.y - d.p0.y + o.y, bo - min);
      if (d.resize.includes("s")) bo = Math.max(q.y - d.p0.y + o.y + o.h, t + min);
      l = Math.max(0, l); t = Math.max(0, t); r = Math.min(this.W, r); bo = Math.min(this.H, bo);
      Object.assign(b, { x: l, y: t, w: r - l, h: bo - t });
      this.paint();
    }
    this.lastPaintMs = performance.now() - t0;
  };

  BoxEditor.prototype.drop = function () {
    const d = this.drag;
    if (!d) return;
    this.drag = null;
    if (d.pan) return;
    if (d.draw) {
      this.draft.setAttribute("visibility", "hidden");
      if (!d.moved || !d.box || d.box.w * this.view.s < CLICK || d.box.h * this.view.s < CLICK) {
        if (this.sel >= 0) { this.sel = -1; this.paint(); }  // a click on nothing: no selection
        return;
      }
      this.remember();
      this.boxes.push(Object.assign(d.box, { label: this.current, suggested: false }));
      this.sel = this.boxes.length - 1;
      this.edited();
      return;
    }
    const i = d.move !== undefined ? d.move : d.index;
    const b = this.boxes[i], o = d.orig;
    if (!d.moved || !b || (b.x === o.x && b.y === o.y && b.w === o.w && b.h === o.h)) return;
    // The edit as one step: the state before the drag is what undo gives back.
    const now = Object.assign({}, b);
    Object.assign(b, o);
    this.remember();
    Object.assign(b, now);
    own(b);
    this.edited();
  };

  BoxEditor.prototype.hover = function (ev) {
    if (!ev || !this.W) {
      for (const l of this.cross) l.setAttribute("visibility", "hidden");
      this.viewEl.style.cursor = "";
      return;
    }
    const r = this.viewEl.getBoundingClientRect();
    const sx = ev.clientX - r.left, sy = ev.clientY - r.top;
    const p = this.toImage(ev, r);
    const h = ev.altKey ? null : this.hit(sx, sy, p);
    this.viewEl.style.cursor = h && h.resize ? ({ n: "ns", s: "ns", e: "ew", w: "ew", nw: "nwse", se: "nwse", ne: "nesw", sw: "nesw" })[h.resize] + "-resize"
      : h ? "move" : "crosshair";
    const [lx, ly] = this.cross;
    lx.setAttribute("x1", 0); lx.setAttribute("x2", r.width); lx.setAttribute("y1", sy); lx.setAttribute("y2", sy);
    ly.setAttribute("y1", 0); ly.setAttribute("y2", r.height); ly.setAttribute("x1", sx); ly.setAttribute("x2", sx);
    for (const l of this.cross) l.setAttribute("visibility", h ? "hidden" : "visible");
    const inside = p.x >= 0 && p.y >= 0 && p.x <= this.W && p.y <= this.H;
    this.posEl.textContent = inside ? "x " + Math.floor(p.x) + ", y " + Math.floor(p.y) : "";
  };

  // ------------------------------------------------------------ keyboard

  /** Editing keys: true when the key was the editor's. */
  BoxEditor.prototype.key = function (ev) {
    const k = ev.key;
    if (ev.ctrlKey || ev.metaKey) {
      if (ev.altKey) return false;
      if (k === "z" || k === "Z") { if (ev.shiftKey) this.redo(); else this.undo(); return true; }
      if (k === "y" || k === "Y") { this.redo(); return true; }
      return false;
    }
    if (ev.altKey) return false;
    const step = ev.shiftKey ? 10 : 1;
    if (k === "ArrowLeft") this.nudge(-step, 0);
    else if (k === "ArrowRight") this.nudge(step, 0);
    else if (k === "ArrowUp") this.nudge(0, -step);
    else if (k === "ArrowDown") this.nudge(0, step);
    else if (ev.repeat) return false;
    else if (k === "Delete" || k === "Backspace") this.remove();
    else if (k === "Escape") { if (this.drag) { this.drag = null; this.draft.setAttribute("visibility", "hidden"); } this.sel = -1; this.paint(); }
    else if (k === "Tab") { if (!this.cycle(ev.shiftKey ? -1 : 1)) return false; }
    else if (k === "f" || k === "F") this.fit();
    else if (k === "+" || k === "=") this.zoom(1.5);
    else if (k === "-") this.zoom(1 / 1.5);
    else if (k in this.byKey) this.setClass(this.byKey[k]);
    else return false;
    return true;
  };

  // ------------------------------------------------------------ painting

  BoxEditor.prototype.paintDraft = function (b) {
    const v = this.view;
    const r = this.draft;
    r.setAttribute("x", v.tx + v.s * b.x);
    r.setAttribute("y", v.ty + v.s * b.y);
    r.setAttribute("width", Math.max(0, v.s * b.w));
    r.setAttribute("height", Math.max(0, v.s * b.h));
    r.style.setProperty("--c", this.colour(this.current));
    r.setAttribute("visibility", "visible");
  };

  /** Draw the boxes (the SVG overlay only): one group per box, reused from paint to paint. */
  BoxEditor.prototype.paint = function () {
    if (!this.layer) return;
    const t0 = performance.now();
    const v = this.view;
    const n = this.boxes.length;
    while (this.els.length < n) {
      const g = el("g", {}, this.layer);
      const rect = el("rect", {}, g);
      const tag = el("text", { class: "ll-box-tag" }, g);
      this.els.push({ g: g, rect: rect, tag: tag, look: "" });
    }
    while (this.els.length > n) this.els.pop().g.remove();
    let shown = 0, sugs = 0;
    for (let i = 0; i < n; i++) {
      const b = this.boxes[i], e = this.els[i];
      const vis = this.visible(b);
      if (b.suggested) sugs += 1;
      if (vis && b.suggested) shown += 1;
      const x = v.tx + v.s * b.x, y = v.ty + v.s * b.y, w = v.s * b.w, h = v.s * b.h;
      const look = [vis, x, y, w, h, b.label, b.suggested, b.score, i === this.sel].join("|");
      if (look === e.look) continue;
      e.look = look;
      e.g.setAttribute("visibility", vis ? "visible" : "hidden");
      e.g.setAttribute("class", "ll-box" + (b.suggested ? " ll-box-sug" : "") + (i === this.sel ? " ll-box-sel" : ""));
      e.g.style.setProperty("--c", this.colour(b.label));
      e.g.dataset.box = [b.x, b.y, b.w, b.h].map((z) => Math.round(z * 100) / 100).join(",") + "," + b.label;
      if (b.score !== undefined) e.g.dataset.score = String(b.score); else delete e.g.dataset.score;
      e.rect.setAttribute("x", x);
      e.rect.setAttribute("y", y);
      e.rect.setAttribute("width", Math.max(0, w));
      e.rect.setAttribute("height", Math.max(0, h));
      e.tag.setAttribute("x", x + 2);
      e.tag.setAttribute("y", y > 14 ? y - 4 : y + 13);
      e.tag.textContent = b.label + (b.suggested && b.score !== undefined ? " " + Math.round(b.score * 100) + "%" : "");
    }
    const b = this.boxes[this.sel];
    if (b && this.visible(b)) {
      const l = v.tx + v.s * b.x, t = v.ty + v.s * b.y, r = l + v.s * b.w, bo = t + v.s * b.h;
      const at = { nw: [l, t], n: [(l + r) / 2, t], ne: [r, t], e: [r, (t + bo) / 2], se: [r, bo], s: [(l + r) / 2, bo], sw: [l, bo], w: [l, (t + bo) / 2] };
      HANDLES.forEach((hname, k) => {
        this.handleEls[k].setAttribute("x", at[hname][0] - 4);
        this.handleEls[k].setAttribute("y", at[hname][1] - 4);
      });
      this.handles.style.setProperty("--c", this.colour(b.label));
      this.handles.setAttribute("visibility", "visible");
    } else this.handles.setAttribute("visibility", "hidden");
    if (this.thrText) {
      this.thrText.textContent = " " + this.threshold.toFixed(2) + " (" + shown + " of " + sugs + " shown)";
      this.thrText.parentElement.hidden = !sugs;
    }
    this.lastPaintMs = performance.now() - t0;
  };

  window.LabelloopBoxes = BoxEditor;
})();
