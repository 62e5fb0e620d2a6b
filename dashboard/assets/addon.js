"use strict";
(() => {
  const id = cp.lastPart();
  const win = document.getElementById("window");
  let addon = null;
  const mask = a => a.entrypoint ? (a.settings.force_tls ? "rediss" : "redis") + "://default:••••••••@" + a.entrypoint : "(no address yet)";
  const refresh = async () => {
    addon = await cp.api("GET", "/v1/addons/" + encodeURIComponent(id));
    const [figs, ops, backups] = await Promise.all([
      cp.api("GET", "/v1/figures/addons/" + encodeURIComponent(id) + "?window=" + win.value),
      cp.api("GET", "/v1/operations?addon=" + encodeURIComponent(id)),
      cp.api("GET", "/v1/backups?app=" + encodeURIComponent(addon.app)).catch(() => [])]);
    document.getElementById("title").textContent = "Addon " + addon.id;
    document.getElementById("summary").textContent = "App " + addon.app + " · plan " + addon.plan + " · " + addon.engine + " " + addon.version +
      " · status " + addon.status + " · health " + (addon.health || "-");
    const url = document.getElementById("url");
    if (!url.dataset.revealed) url.textContent = mask(addon);
    const now = {};
    for (const m of figs.members) now[m.member_id] = m.latest || {};
    const members = addon.members || [];
    cp.rows("members", members.map(m => {
      const f = now[m.id] || {};
      return [m.id, m.role, cp.link("/hosts/" + encodeURIComponent(m.host_id), m.host_id), m.address ? m.address + ":" + m.port : "-",
        m.redis_role || "-", m.role === "haproxy" ? (m.active ? "holds it" : "backup") : "-", m.state || "-",
        cp.pct(f.cpu_percent), cp.bytes(f.memory_bytes), cp.bytes(f.memory_highest_bytes), m.role === "redis" ? cp.bytes(f.memory_free_bytes) : "-",
        cp.bytes(f.swap_bytes), cp.bytes(f.swap_highest_bytes), cp.bytes(f.swap_free_bytes), cp.bytes(f.disk_bytes)];
    }));
    const primary = members.find(m => m.role === "redis" && m.redis_role === "primary");
    document.getElementById("primary").textContent = primary ? primary.id + " on " + primary.host_id : "-";
    const holder = members.find(m => m.role === "haproxy" && m.active);
    document.getElementById("holder").textContent = holder ? holder.id + " on " + holder.host_id : (primary && members.every(m => m.role === "redis") ? primary.id + " (direct)" : "-");
    const c = figs.charts;
    cp.chart("chart-cpu", "CPU", c.cpu, v => v.toFixed(0) + "%");
    cp.chart("chart-memory", "Memory", c.memory, cp.bytes);
    cp.chart("chart-swap", "Swap", c.swap, cp.bytes);
    cp.chart("chart-disk", "On-disk size", c.disk, cp.bytes);
    document.getElementById("set-persistence").textContent = addon.settings.persistence;
    document.getElementById("set-cache-mode").textContent = addon.settings.cache_mode ? "on" : "off";
    const opsEl = document.getElementById("operations");
    opsEl.replaceChildren(...ops.slice().reverse().slice(0, 10).map(o => {
      const d = cp.el("details");
      if (cp.active(o)) d.open = true;
      const p = cp.progress(o);
      d.appendChild(cp.el("summary", o.id + " · " + o.kind + " · " + o.state + " · " + p.text + (o.error ? " · " + o.error : "")));
      const ol = cp.el("ol");
      for (const s of o.steps || []) ol.appendChild(cp.el("li", s.name + " — " + s.state + (s.detail ? " (" + s.detail + ")" : ""), "step-" + s.state));
      d.appendChild(ol);
      return d;
    }));
    cp.rows("backups", backups.map(b => [b.id, b.kind, cp.time(b.created_at), b.status, b.size_bytes ? cp.bytes(b.size_bytes) : "-",
      b.status === "done" ? cp.link("/api/v1/backups/" + encodeURIComponent(b.id) + "/download?app=" + encodeURIComponent(addon.app), "download") : "-"]));
  };
  const change = async (what, body) => {
    if (!addon) return;
    if (!await cp.confirm("Change " + what + " of " + addon.id + "? The change is applied live to every member.")) return;
    const msg = document.getElementById("settings-message");
    try {
      const r = await cp.api("POST", "/v1/settings", Object.assign({app: addon.app}, body));
      msg.textContent = r.message;
    } catch (e) {
      msg.textContent = e.message;
    }
    await refresh();
  };
  document.getElementById("switch-persistence").onclick = () =>
    change("persistence to " + (addon.settings.persistence === "aof" ? "rdb" : "aof"), {persistence: addon.settings.persistence === "aof" ? "rdb" : "aof"});
  document.getElementById("switch-cache-mode").onclick = () =>
    change("cache mode to " + (addon.settings.cache_mode ? "off" : "on"), {cache_mode: !addon.settings.cache_mode});
  document.getElementById("reveal").onclick = async () => {
    if (!addon || !await cp.confirm("Reveal the URL of " + addon.app + " with its password? This is written to the audit log.")) return;
    const env = await cp.api("GET", "/v1/env?app=" + encodeURIComponent(addon.app));
    const url = document.getElementById("url");
    url.textContent = env.vars.find(v => v.name === "REDIS_URL").value;
    url.dataset.revealed = "1";
  };
  win.onchange = () => refresh();
  cp.poll(refresh, 2000);
})();
