/* Labelloop labeling page: the "Is active learning helping?" panel.
 * Opening it asks the webapp's `GET learning-curve` route (labeling.report): the labels
 * replayed in the order they were given vs random orders, cross-validated. Draws both
 * curves as an SVG and prints the figures. API data goes in with textContent only. */
(function () {
  "use strict";

  const boot = JSON.parse(document.getElementById("ll-bootstrap").textContent);
  const API = boot.api_base;
  const SVG = "http://www.w3.org/2000/svg";
  const panel = document.querySelector(".ll-panel");
  if (!panel || !API) return;

  const box = document.createElement("details");
  box.className = "ll-section ll-curve";
  box.id = "ll-curve";
  const summary = document.createElement("summary");
  summary.className = "ll-section-title";
  summary.textContent = "Is active learning helping?";
  const body = document.createElement("div");
  body.id = "ll-curve-body";
  body.dataset.state = "idle";
  box.append(summary, body);
  const help = panel.querySelector(".ll-help");
  panel.insertBefore(box, help || null);

  function el(tag, attrs, text) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function figure(label, id, value) {
    const row = el("div", { class: "ll-curve-figure" });
    row.append(el("span", {}, label + " "), el("b", { id }, value));
    return row;
  }

  // A round step (1, 2 or 5 x 10^k) cutting [lo, hi] in about `count` parts.
  function niceStep(lo, hi, count) {
    const raw = (hi - lo) / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 5, 10].map((f) => f * mag).find((v) => v >= raw) || raw;
  }

  // Tick values: the multiples of `step` within [lo, hi].
  function ticks(lo, hi, step) {
    const out = [];
    for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9; v += step) {
      out.push(Number(v.toFixed(6)));
    }
    return out;
  }

  function chart(data) {
    // Drawn in a 300 x 190 box scaled to the panel's width; the margins hold the ticks.
    const w = 300, h = 190, left = 44, right = 14, top = 10, bottom = 36;
    const ys = data.given.concat(data.random);
    // The accuracy axis starts at a tick at or below the lowest point, and ends at 1.
    const low = Math.max(0, Math.min(...ys) - 0.02), hi = 1;
    const yStep = niceStep(low, hi, 4);
    const lo = Math.floor(low / yStep + 1e-9) * yStep;
    const xMax = Math.max(...data.points);
    const x = (m) => left + (w - left - right) * m / xMax;
    const y = (a) => h - bottom - (h - top - bottom) * (a - lo) / (hi - lo);
    const svg = el("svg:svg", { viewBox: `0 0 ${w} ${h}`, id: "ll-curve-chart", role: "img",
      style: "width: 100%; height: auto; display: block",
      "aria-label": "accuracy against labels, your order and random order" });
    const axis = { stroke: "#888", "stroke-width": 1 };
    svg.append(el("svg:line", { x1: left, y1: h - bottom, x2: w - right, y2: h - bottom, ...axis }));
    svg.append(el("svg:line", { x1: left, y1: top, x2: left, y2: h - bottom, ...axis }));
    for (const v of ticks(0, xMax, niceStep(0, xMax, 5))) {
      svg.append(el("svg:line", { x1: x(v), y1: h - bottom, x2: x(v), y2: h - bottom + 4, ...axis }));
      svg.append(el("svg:text", { x: x(v), y: h - bottom + 14, "font-size": 9,
        "text-anchor": "middle", class: "ll-curve-xtick" }, String(v)));
    }
    for (const v of ticks(lo, hi, yStep)) {
      svg.append(el("svg:line", { x1: left - 4, y1: y(v), x2: w - right, y2: y(v),
        stroke: "#eee", "stroke-width": 1 }));
      svg.append(el("svg:text", { x: left - 6, y: y(v) + 3, "font-size": 9, "text-anchor": "end",
        class: "ll-curve-ytick" }, v.toFixed(2)));
    }
    svg.append(el("svg:text", { x: (left + w - right) / 2, y: h - 4, "font-size": 10,
      "text-anchor": "middle" }, "labels"));
    svg.append(el("svg:text", { x: 10, y: (top + h - bottom) / 2, "font-size": 10,
      "text-anchor": "middle", transform: `rotate(-90 10 ${(top + h - bottom) / 2})` }, "accuracy"));
    svg.append(el("svg:line", { x1: left, y1: y(data.target), x2: w - right, y2: y(data.target),
      stroke: "#999", "stroke-dasharray": "4 3", "stroke-width": 1 }));
    for (const [values, color, name] of [[data.random, "#888", "random"], [data.given, "#1f77b4", "given"]]) {
      const pts = data.points.map((m, i) => `${x(m).toFixed(1)},${y(values[i]).toFixed(1)}`).join(" ");
      svg.append(el("svg:polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2,
        "data-curve": name }));
    }
    return svg;
  }

  // The legend in HTML, so that it wraps in a narrow panel instead of being cut off.
  function legend() {
    const row = el("div", { class: "ll-curve-legend", id: "ll-curve-legend",
      style: "display: flex; flex-wrap: wrap; gap: 2px 12px; font-size: 0.85em" });
    for (const [color, dash, text] of [["#1f77b4", "", "your order"],
      ["#888", "", "random order (mean)"], ["#999", "4 3", "target: today's accuracy − 0.01"]]) {
      const item = el("span", { style: "white-space: nowrap" });
      const key = el("svg:svg", { width: 18, height: 8, "aria-hidden": "true" });
      key.append(el("svg:line", { x1: 0, y1: 4, x2: 18, y2: 4, stroke: color, "stroke-width": 2,
        "stroke-dasharray": dash }));
      item.append(key, document.createTextNode(" " + text));
      row.append(item);
    }
    return row;
  }

  function render(data) {
    body.replaceChildren();
    if (!data.enough) {
      body.dataset.state = "too-few";
      body.append(el("p", { class: "ll-muted", id: "ll-curve-message" }, data.message));
      return;
    }
    body.dataset.state = "ready";
    body.append(chart(data), legend());
    body.append(figure("Labels:", "ll-curve-labels", String(data.labels)));
    body.append(figure("Today's accuracy:", "ll-curve-accuracy", data.accuracy.toFixed(3)));
    const given = data.given_reached === null ? "not yet" : Math.round(data.given_reached) + " labels";
    const random = data.random_reached === null ? "all " + data.labels + " labels"
      : "about " + Math.round(data.random_reached) + " labels";
    body.append(figure(`Your order reached ${data.target.toFixed(3)} with`, "ll-curve-given", given));
    body.append(figure("Random order would have needed", "ll-curve-random", random));
    body.append(el("p", { class: "ll-muted", id: "ll-curve-caption",
      style: "overflow-wrap: anywhere; white-space: normal" },
      `Accuracy: ${data.folds}-fold cross-validation; random order: the mean of ` +
      `${data.orders} random orders; ${data.algorithm}. The same figures as ` +
      "`labelloop report learning-curve`."));
  }

  async function load() {
    body.dataset.state = "loading";
    body.replaceChildren(el("p", { class: "ll-muted" }, "Replaying your labels…"));
    const headers = {};
    const name = localStorage.getItem("labelloop.user");
    if (name && !boot.user) headers["X-Labelloop-User"] = encodeURIComponent(name);
    try {
      const resp = await fetch(API + "/learning-curve", { headers });
      const data = await resp.json();
      if (!resp.ok) throw new Error(data.error || resp.statusText);
      render(data);
    } catch (err) {
      body.dataset.state = "error";
      body.replaceChildren(el("p", { class: "ll-muted", id: "ll-curve-message" },
        "The learning curve is not available: " + err.message));
    }
  }

  box.addEventListener("toggle", () => { if (box.open) load(); });
})();
