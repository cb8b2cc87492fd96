// The admin's scorecard page: when a snapshot is computed (a status_changed event whose data.source is
// "metrics", passed on by live.js as a "vx11:event"), fetch this page again and swap its board in place.
// No reload, no inline script; a page showing an older scorecard (?id=N) stays as it is.
(function () {
  const board = document.getElementById("vx11-scorecard");
  const note = document.getElementById("vx11-scorecard-updated");
  if (!board || board.dataset.follow !== "latest") return;
  let busy = false;
  let again = false;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.pathname + location.search, { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
      .then(function (html) {
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("vx11-scorecard");
        if (!fresh) return;
        board.innerHTML = fresh.innerHTML;
        board.dataset.scorecard = fresh.dataset.scorecard;
        if (note) note.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function (e) { if (note) note.textContent = "could not refresh: " + e.message; })
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  document.addEventListener("vx11:event", function (e) {
    const event = e.detail;
    if (event.type === "status_changed" && event.data && event.data.source === "metrics") refresh();
  });
})();
