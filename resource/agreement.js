/* Labelloop labeling page: the "Agreement between annotators" panel.
 * Opening it asks the webapp's `GET agreement` route (labeling.quality.agreement): the overall
 * figures, the per-annotator and pairwise tables (admins see everyone, others themselves),
 * and the category heat map, a Bokeh plot of the document whose source this file fills.
 * API data goes in with textContent only. */
(function () {
  "use strict";

  const boot = JSON.parse(document.getElementById("ll-bootstrap").textContent);
  const API = boot.api_base;
  const box = document.getElementById("ll-agreement");
  const body = document.getElementById("ll-agreement-body");
  const chartBox = document.getElementById("ll-agreement-chart");
  if (!box || !body || !API) return;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const fmt = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));

  function figure(label, id, value, reason) {
    const row = el("div", { class: "ll-agreement-figure" });
    row.append(el("span", {}, label + " "), el("b", { id }, value));
    if (reason) row.append(el("span", { class: "ll-muted", id: id + "-reason" }, " (" + reason + ")"));
    return row;
  }

  function tableOf(id, headers, rows) {
    const table = el("table", { class: "ll-agreement-table", id });
    const head = el("tr");
    for (const h of headers) head.append(el("th", {}, h));
    table.append(head);
    for (const cells of rows) {
      const tr = el("tr");
      for (const c of cells) tr.append(el("td", {}, c));
      table.append(tr);
    }
    return table;
  }

  function bokehModel(name) {
    const docs = window.Bokeh && window.Bokeh.documents;
    return docs && docs.length ? docs[0].get_model_by_name(name) : null;
  }

  // The Bokeh document connects after the page's own script runs: wait for it (10 s).
  async function bokehReady(name) {
    for (let tries = 0; tries < 100; tries++) {
      const model = bokehModel(name);
      if (model) return model;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return null;
  }

  // The heat map: one cell per (one annotator said y, the other said x), its pair count.
  async function heatmap(confusion) {
    const src = await bokehReady(boot.agreement_source);
    if (!src) return false;
    const cats = confusion.categories;
    const max = Math.max(1, ...confusion.counts.flat());
    const data = { x: [], y: [], count: [], text: [], ink: [] };
    cats.forEach((said, i) => cats.forEach((other, j) => {
      const n = confusion.counts[i][j];
      data.x.push(other); data.y.push(said); data.count.push(n);
      data.text.push(n ? String(n) : "");
      data.ink.push(n > max / 2 ? "#fff" : "#222");  // readable on the dark cells
    }));
    const xr = bokehModel("ll-agreement-x"), yr = bokehModel("ll-agreement-y");
    if (xr) xr.factors = cats.slice();
    if (yr) yr.factors = cats.slice().reverse();
    const colors = bokehModel("ll-agreement-colors");
    if (colors) colors.high = max;
    src.data = data;
    return true;
  }

  async function render(data) {
    body.replaceChildren();
    const spans = data.kind === "spans";
    body.append(figure("Items with two answers or more:", "ll-agreement-items", String(data.items)));
    if (!data.items) {
      body.dataset.state = "empty";
      body.append(el("p", { class: "ll-muted", id: "ll-agreement-message" },
        "No item has two answers yet: agreement needs items that several annotators answered " +
        "(labels_per_annotator, or annotators_per_item above 1)."));
      chartBox.hidden = true;
      return;
    }
    const reasons = data.reasons || {};
    body.append(figure("Krippendorff's α:", "ll-agreement-alpha", fmt(data.krippendorff_alpha),
      data.krippendorff_alpha === null ? reasons.krippendorff_alpha : null));
    body.append(figure("Fleiss' κ:", "ll-agreement-fleiss", fmt(data.fleiss_kappa),
      data.fleiss_kappa === null ? reasons.fleiss_kappa : null));
    body.append(el("div", { class: "ll-section-title" }, "Per annotator"));
    body.append(tableOf("ll-agreement-annotators",
      ["annotator", "items", spans ? "F1" : "agrees", "quality"],
      data.per_annotator.map((r) => [r.annotator, String(r.n), fmt(r.agreement), fmt(r.quality)])));
    if (data.pairwise.length) {
      body.append(el("div", { class: "ll-section-title" }, "Pairs"));
      body.append(tableOf("ll-agreement-pairs", ["a", "b", "items", spans ? "F1" : "Cohen's κ"],
        data.pairwise.map((p) => [p.a, p.b, String(p.n), fmt(spans ? p.f1 : p.cohen_kappa)])));
    }
    // Pairs of categories that differing answers gave, most frequent first.
    const cats = data.confusion.categories, counts = data.confusion.counts;
    const confused = [];
    cats.forEach((x, i) => cats.forEach((y, j) => {
      if (i < j && counts[i][j]) confused.push([counts[i][j], `${x} ↔ ${y}`]);
    }));
    confused.sort((p, q) => q[0] - p[0]);
    if (confused.length) {
      body.append(el("p", { class: "ll-muted", id: "ll-agreement-confused" },
        "Most confused: " + confused.slice(0, 4).map(([n, pair]) => `${pair} (${n})`).join(", ")));
    }
    const note = data.note.charAt(0).toUpperCase() + data.note.slice(1);
    body.append(el("p", { class: "ll-muted", id: "ll-agreement-note" },
      (spans ? "Quality: span F1 (exact start, end and type) with the other annotators. "
        : "Quality: Cohen's κ between the annotator and the majority of the others " +
          "(1: always the same, 0: what chance gives). ") + note + "."));
    chartBox.hidden = false;
    body.dataset.state = (await heatmap(data.confusion)) ? "ready" : "no-chart";
  }

  async function load() {
    body.dataset.state = "loading";
    body.replaceChildren(el("p", { class: "ll-muted" }, "Comparing the annotators' answers…"));
    const headers = {};
    const name = localStorage.getItem("labelloop.user");
    if (name && !boot.user) headers["X-Labelloop-User"] = encodeURIComponent(name);
    try {
      const resp = await fetch(API + "/agreement", { headers });
      const data = await resp.json();
      if (!resp.ok) throw new Error(data.error || resp.statusText);
      await render(data);
    } catch (err) {
      body.dataset.state = "error";
      chartBox.hidden = true;
      body.replaceChildren(el("p", { class: "ll-muted", id: "ll-agreement-message" },
        "Agreement is not available: " + err.message));
    }
  }

  box.addEventListener("toggle", () => { if (box.open) load(); });
})();
