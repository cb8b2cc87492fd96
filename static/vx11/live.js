// Live status in the admin: listens on /ws/<session> (the staff session cookie is the auth) and
// moves badges as events arrive: fleet modules and summary counts (status_changed), daughters
// (status_changed with daughter_id, or a reaper sweep's daughter_ids) and tasks (plan_updated). No reload.
// Every event is also re-sent on the document as a "vx11:event" CustomEvent for page scripts.
(function () {
  const COLOURS = { up: "#1a7f37", degraded: "#b58105", down: "#cf222e", unknown: "#6e7781" };
  // as vx11_site/display.py STATUS_COLOURS
  const WORK = { finished: "#1a7f37", completed: "#1a7f37", running: "#0969da", retrying: "#b58105", mutated: "#b58105",
                 failed: "#cf222e", expired: "#cf222e", killed: "#6e7781", cancelled: "#6e7781" };
  const indicator = document.getElementById("vx11-live");
  const session = "admin-live-" + Math.random().toString(36).slice(2, 10);
  let delay = 1000;

  function show(text, ok) {
    if (!indicator) return;
    indicator.textContent = text;
    indicator.style.color = ok ? "#1a7f37" : "#cf222e";
  }

  function bump(state, by) {
    document.querySelectorAll('[data-count="' + state + '"]').forEach(function (el) {
      el.textContent = Math.max(0, parseInt(el.textContent, 10) + by);
    });
  }

  function paint(selector, status) {
    document.querySelectorAll(selector).forEach(function (badge) {
      badge.textContent = status;
      badge.style.background = WORK[status] || "#8c959f";
    });
  }

  function applyWork(event) {
    const d = event.data;
    if (event.type === "status_changed" && d.daughter_id && d.status) paint('[data-daughter="' + d.daughter_id + '"]', d.status);
    if (event.type === "status_changed" && d.daughter_ids && d.status) {
      d.daughter_ids.forEach(function (id) { paint('[data-daughter="' + id + '"]', d.status); });
    }
    if (event.type === "plan_updated" && d.task_id && d.status) paint('[data-task="' + d.task_id + '"]', d.status);
  }

  function apply(event) {
    if (event.data) applyWork(event);
    if (event.type !== "status_changed" || !event.data || !event.data.module || !event.data.to) return;
    const d = event.data;
    document.querySelectorAll('.vx11-badge[data-module="' + d.module + '"]').forEach(function (badge) {
      badge.dataset.state = d.to;
      badge.textContent = d.to;
      badge.style.background = COLOURS[d.to] || COLOURS.unknown;
      badge.title = d.reason || "";
    });
    if (d.from) bump(d.from, -1);
    bump(d.to, +1);
    const log = document.getElementById("vx11-live-log");
    if (log) {
      const li = document.createElement("li");
      li.textContent = new Date(event.timestamp).toLocaleTimeString() + "  " + d.module + ": " + (d.from || "?") + " → " + d.to + "  (" + (d.reason || "") + ")";
      log.prepend(li);
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws/" + session);
    ws.onopen = function () { delay = 1000; show("● live", true); };
    ws.onmessage = function (m) {
      let event;
      try { event = JSON.parse(m.data); } catch (e) { return; }
      apply(event);
      // other scripts of a page (the scorecard's) follow the same socket instead of opening their own
      document.dispatchEvent(new CustomEvent("vx11:event", { detail: event }));
    };
    ws.onclose = function () {
      show("○ live updates paused, reconnecting…", false);
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  connect();
})();
