"use strict";
cp.poll(async () => {
  const [hosts, addons, ops, figs] = await Promise.all([
    cp.api("GET", "/v1/hosts"), cp.api("GET", "/v1/addons"), cp.api("GET", "/v1/operations"),
    cp.api("GET", "/v1/figures/hosts?window=1h")]);
  cp.rows("hosts", hosts.map(h => [cp.link("/hosts/" + encodeURIComponent(h.id), h.id), h.state, (h.labels || {}).zone || "-",
    h.memory_mb + " MB", h.committed_mb + " MB", h.free_mb + " MB", h.members,
    h.figures ? cp.pct(h.figures.cpu_percent) : "-", h.figures ? cp.bytes(h.figures.memory_used_bytes) : "-", cp.time(h.last_heartbeat)]));
  cp.chart("chart-host-cpu", "Host CPU", figs.charts.cpu, v => v.toFixed(0) + "%");
  cp.chart("chart-host-memory", "Host memory used", figs.charts.memory, cp.bytes);
  cp.rows("addons", addons.map(a => [cp.link("/addons/" + encodeURIComponent(a.id), a.id), a.app, a.plan, a.engine + " " + a.version,
    a.status, a.entrypoint || "-"]));
  const by = {};
  for (const a of addons) {
    const k = a.plan + " · " + a.engine + " · " + a.status;
    by[k] = (by[k] || 0) + 1;
  }
  document.getElementById("addon-summary").textContent = Object.keys(by).sort().map(k => k + ": " + by[k]).join("  |  ") || "no addons";
  cp.rows("operations", ops.filter(cp.active).map(o => {
    const p = cp.progress(o);
    return [o.id, o.kind, cp.link("/addons/" + encodeURIComponent(o.addon_id), o.addon_id), o.state, p.text, p.current];
  }));
}, 2000);
