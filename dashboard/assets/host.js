"use strict";
(() => {
  const id = cp.lastPart();
  document.getElementById("title").textContent = "Host " + id;
  const win = document.getElementById("window");
  let host = null;
  const refresh = async () => {
    const [hosts, addons, figs] = await Promise.all([cp.api("GET", "/v1/hosts"), cp.api("GET", "/v1/addons"),
      cp.api("GET", "/v1/figures/hosts?window=" + win.value + "&host=" + encodeURIComponent(id))]);
    host = hosts.find(h => h.id === id);
    if (!host) throw new Error("no host " + id);
    const f = host.figures || {};
    document.getElementById("summary").textContent = "State " + host.state + " · zone " + ((host.labels || {}).zone || "-") +
      " · address " + host.address + " · capacity " + host.memory_mb + " MB · committed " + host.committed_mb + " MB · free " + host.free_mb +
      " MB · CPU " + cp.pct(f.cpu_percent) + " · memory used " + cp.bytes(f.memory_used_bytes) + " of " + cp.bytes(f.memory_total_bytes) +
      " · swap used " + cp.bytes(f.swap_used_bytes) + " · disk free " + cp.bytes(f.disk_free_bytes);
    const rows = [];
    for (const a of addons) for (const m of a.members || []) if (m.host_id === id)
      rows.push([m.id, cp.link("/addons/" + encodeURIComponent(a.id), a.id), m.role, m.redis_role || "-", m.state || "-"]);
    cp.rows("members", rows);
    cp.chart("chart-cpu", "CPU", figs.charts.cpu, v => v.toFixed(0) + "%");
    cp.chart("chart-memory", "Memory used", figs.charts.memory, cp.bytes);
  };
  const drain = on => async () => {
    if (!await cp.confirm((on ? "Drain" : "Undrain") + " host " + id + "?" + (on ? " Its members move to other hosts one by one." : ""))) return;
    const msg = document.getElementById("drain-message");
    try {
      const r = await cp.api("POST", "/v1/hosts/" + encodeURIComponent(id) + (on ? "/drain" : "/undrain"));
      msg.textContent = r.message;
    } catch (e) {
      msg.textContent = e.message;
    }
  };
  document.getElementById("drain").onclick = drain(true);
  document.getElementById("undrain").onclick = drain(false);
  win.onchange = () => refresh();
  cp.poll(refresh, 2000);
})();
