// The operator console (templates/operator/console.html): joins a session's event stream on /ws and sends
// events into it. A static file, not an inline script, so the page works under the portal's CSP.
(function () {
  let ws = null;
  const $ = (id) => document.getElementById(id);
  function row(cells) {
    const tr = document.createElement("tr");
    cells.forEach((c) => { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
    $("events").prepend(tr);
  }
  $("join").onsubmit = function (e) {
    e.preventDefault();
    if (ws) ws.close();
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const cursor = $("cursor").value.trim();
    ws = new WebSocket(scheme + location.host + "/ws/" + encodeURIComponent($("session").value) + (cursor ? "?cursor=" + encodeURIComponent(cursor) : ""));
    ws.onopen = () => { $("state").textContent = "● connected"; $("state").style.color = "#1a7f37"; };
    ws.onclose = (ev) => { $("state").textContent = "○ closed (" + ev.code + ")"; $("state").style.color = "#cf222e"; };
    ws.onmessage = (m) => {
      const ev = JSON.parse(m.data);
      row([ev.timestamp || new Date().toISOString(), (ev.type || "") + (ev.replayed ? " (replayed)" : ""), ev.session_id || ev.channel || "broadcast", JSON.stringify(ev.data || ev)]);
    };
  };
  $("send").onsubmit = function (e) {
    e.preventDefault();
    if (!ws || ws.readyState !== 1) { alert("connect first"); return; }
    const type = $("etype").value, text = $("payload").value;
    if (!type) { ws.send(text); return; }
    let data = {};
    if (text.trim()) { try { data = JSON.parse(text); } catch (err) { alert("data is not valid JSON: " + err.message); return; } }
    ws.send(JSON.stringify({ event_type: type, data: data }));
  };
  $("join").requestSubmit();
})();
