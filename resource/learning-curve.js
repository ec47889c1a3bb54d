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

  function chart(data) {
    const w = 260, h = 150, pad = 24;
    const ys = data.given.concat(data.random);
    const lo = Math.max(0, Math.min(...ys) - 0.02), hi = 1;
    const xMax = Math.max(...data.points);
    const x = (m) => pad + (w - 2 * pad) * m / xMax;
    const y = (a) => h - pad - (h - 2 * pad) * (a - lo) / (hi - lo);
    const svg = el("svg:svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, id: "ll-curve-chart",
      role: "img", "aria-label": "accuracy against labels, your order and random order" });
    svg.append(el("svg:rect", { x: pad, y: pad, width: w - 2 * pad, height: h - 2 * pad,
      fill: "none", stroke: "#ccc" }));
    for (const [values, color, name] of [[data.random, "#888", "random"], [data.given, "#1f77b4", "given"]]) {
      const pts = data.points.map((m, i) => `${x(m).toFixed(1)},${y(values[i]).toFixed(1)}`).join(" ");
      svg.append(el("svg:polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2,
        "data-curve": name }));
    }
    svg.append(el("svg:text", { x: pad, y: h - 6, "font-size": 10 }, `0 … ${xMax} labels`));
    svg.append(el("svg:text", { x: pad, y: pad - 6, "font-size": 10 },
      `accuracy ${lo.toFixed(2)} … 1 · blue: your order · gray: random`));
    return svg;
  }

  function render(data) {
    body.replaceChildren();
    if (!data.enough) {
      body.dataset.state = "too-few";
      body.append(el("p", { class: "ll-muted", id: "ll-curve-message" }, data.message));
      return;
    }
    body.dataset.state = "ready";
    body.append(chart(data));
    body.append(figure("Labels:", "ll-curve-labels", String(data.labels)));
    body.append(figure("Today's accuracy:", "ll-curve-accuracy", data.accuracy.toFixed(3)));
    const given = data.given_reached === null ? "not yet" : Math.round(data.given_reached) + " labels";
    const random = data.random_reached === null ? "all " + data.labels + " labels"
      : "about " + Math.round(data.random_reached) + " labels";
    body.append(figure(`Your order reached ${data.target.toFixed(3)} with`, "ll-curve-given", given));
    body.append(figure("Random order would have needed", "ll-curve-random", random));
    body.append(el("p", { class: "ll-muted" },
      `${data.folds}-fold cross-validation, ${data.orders} random orders, ${data.algorithm}`));
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
