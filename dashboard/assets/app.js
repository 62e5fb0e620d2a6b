// cacheplane dashboard: shared helpers (API calls, tables, charts,
// confirmations, polling). No framework; uPlot draws the charts.
"use strict";
const cp = {
  csrf: () => document.querySelector('meta[name="csrf"]').content,
  charts: {}, // by element id: {plot, data} (the e2e test reads data)

  async api(method, path, body) {
    const opts = {method, credentials: "same-origin", headers: {"X-Cacheplane-CSRF": cp.csrf()}};
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch("/api" + path, opts);
    if (r.status === 401) {
      location.href = "/login";
      throw new Error("session ended");
    }
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  },

  el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  },

  link(href, text) {
    const a = cp.el("a", text);
    a.href = href;
    return a;
  },

  // rows fills a table body; each row is an array of strings or nodes.
  rows(tableId, rows) {
    const tb = document.querySelector("#" + tableId + " tbody");
    tb.replaceChildren(...rows.map(cells => {
      const tr = document.createElement("tr");
      for (const c of cells) {
        const td = document.createElement("td");
        if (c instanceof Node) td.appendChild(c); else td.textContent = c === undefined || c === null ? "-" : String(c);
        tr.appendChild(td);
      }
      return tr;
    }));
  },

  bytes(n) {
    if (n === undefined || n === null) return "-";
    const u = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + u[i];
  },

  pct: v => (v === undefined || v === null) ? "-" : v.toFixed(1) + "%",
  time: t => (!t || t.startsWith("0001")) ? "-" : new Date(t).toLocaleString(),

  colors: ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"],

  // chart draws (or updates) a uPlot chart from a dashboard.Chart.
  chart(id, title, ch, fmt) {
    const host = document.getElementById(id);
    const data = [ch.x, ...ch.lines.map(l => l.values)];
    const labels = ch.lines.map(l => l.label).join("\u0000");
    const prev = cp.charts[id];
    if (prev && prev.labels === labels) {
      prev.plot.setData(data);
      prev.data = data;
      return;
    }
    if (prev) prev.plot.destroy();
    const width = Math.max(300, host.clientWidth || 480);
    const opts = {
      title, width, height: 200,
      scales: {x: {time: true}},
      axes: [{}, {values: (u, vals) => vals.map(v => fmt(v)), size: 84}],
      series: [{}, ...ch.lines.map((l, i) => ({label: l.label, stroke: cp.colors[i % cp.colors.length], width: 1.5, spanGaps: true,
        value: (u, v) => v === null || v === undefined ? "-" : fmt(v)}))],
    };
    const plot = new uPlot(opts, data, host);
    cp.charts[id] = {plot, data, labels};
  },

  // confirm shows an in-page confirmation; resolves true on Confirm.
  confirm(text) {
    const box = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    box.hidden = false;
    return new Promise(resolve => {
      const done = v => { box.hidden = true; yes.onclick = no.onclick = null; resolve(v); };
      const yes = document.getElementById("confirm-yes"), no = document.getElementById("confirm-no");
      yes.onclick = () => done(true);
      no.onclick = () => done(false);
    });
  },

  status(text, bad) {
    const s = document.getElementById("status");
    s.textContent = text;
    s.className = bad ? "status bad" : "status";
  },

  // poll runs fn now and every ms milliseconds, one call at a time.
  poll(fn, ms) {
    const run = async () => {
      try {
        await fn();
        cp.status("updated " + new Date().toLocaleTimeString());
      } catch (e) {
        cp.status(String(e.message || e), true);
      }
      setTimeout(run, ms);
    };
    run();
  },

  lastPart: () => decodeURIComponent(location.pathname.split("/").pop()),

  // progress of an operation: steps done / steps.
  progress(op) {
    const steps = op.steps || [];
    const done = steps.filter(s => s.state === "done").length;
    const cur = steps.find(s => s.state !== "done");
    return {text: done + "/" + steps.length, current: cur ? cur.name + (cur.detail ? " (" + cur.detail + ")" : "") : "-"};
  },

  active: op => op.state === "pending" || op.state === "running",
};
