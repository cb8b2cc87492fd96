// A pipeline run's admin page while the run goes: each plan_updated event of this run (passed on by live.js as a
// "vx11:event") carries every phase as it stands, and the timeline's rows are drawn again from it; when the run
// ends (its status_changed), the page is loaded again for the final verdict, bag and mirror commit. The page's data
// (run id, API URL, colours, phase folders) comes from a json_script block: no inline script.
(function () {
  const table = document.getElementById("vx11-pipeline-timeline");
  const source = document.getElementById("vx11-pipeline-data");
  if (!table || !source) return;
  const page = JSON.parse(source.textContent);
  const body = table.querySelector("tbody");

  function cell(content) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content);
    else td.textContent = content;
    return td;
  }

  function badge(status, attrs) {
    const span = document.createElement("span");
    span.className = "vx11-pipeline-badge";
    Object.keys(attrs || {}).forEach(function (k) { span.dataset[k] = attrs[k]; });
    span.style.cssText = "color:#fff;padding:2px 8px;border-radius:10px;font-weight:600";
    span.style.background = page.colours[status] || "#8c959f";
    span.textContent = status;
    return span;
  }

  function seconds(value) {
    return value === null || value === undefined ? "—" : value.toFixed(1) + " s";
  }

  function moment(iso) {
    return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) : "—";
  }

  // as apps/pipeline/api.py evidence_files: the name is the path within the phase's folder
  function fileName(number, path) {
    const folder = "/" + page.folders[number] + "/";
    const at = ("/" + path).indexOf(folder);
    return at >= 0 ? ("/" + path).slice(at + folder.length) : path.split("/").pop();
  }

  function bar(phase, longest) {
    const track = document.createElement("div");
    track.style.cssText = "background:#eaeef2;height:10px;border-radius:5px";
    const fill = document.createElement("div");
    fill.className = "vx11-phase-bar";
    fill.style.cssText = "height:10px;border-radius:5px";
    fill.style.width = (100 * (phase.duration_seconds || 0) / longest).toFixed(1) + "%";
    fill.style.background = page.colours[phase.status] || "#8c959f";
    track.appendChild(fill);
    return track;
  }

  function summary(phase) {
    const box = document.createElement("span");
    const text = document.createElement("span");
    text.style.whiteSpace = "pre-wrap";
    text.textContent = phase.summary || "—";
    box.appendChild(text);
    if (phase.status === "running") {
      box.appendChild(document.createElement("br"));
      const step = document.createElement("small");
      step.textContent = Math.round(phase.progress || 0) + "% " + (phase.step || "");
      box.appendChild(step);
    }
    return box;
  }

  function files(phase) {
    const box = document.createElement("span");
    if (!phase.evidence || !phase.evidence.length) {
      box.textContent = "—";
      return box;
    }
    phase.evidence.forEach(function (path) {
      const name = fileName(phase.number, path);
      const link = document.createElement("a");
      link.href = page.api + "/phases/" + phase.number + "/evidence/" + name.split("/").map(encodeURIComponent).join("/");
      link.setAttribute("download", "");
      link.textContent = name;
      box.appendChild(link);
      box.appendChild(document.createElement("br"));
    });
    return box;
  }

  function render(phases) {
    const longest = Math.max(1, ...phases.map(function (p) { return p.duration_seconds || 0; }));
    body.replaceChildren(...phases.map(function (phase) {
      const row = document.createElement("tr");
      row.className = "vx11-phase";
      row.dataset.phase = phase.number;
      row.dataset.status = phase.status;
      [
        cell(String(phase.number)),
        cell(phase.name),
        cell(badge(phase.status, { phase: phase.number })),
        cell(moment(phase.started_at)),
        cell(seconds(phase.duration_seconds)),
        cell(bar(phase, longest)),
        cell(summary(phase)),
        cell(files(phase)),
      ].forEach(function (td) { row.appendChild(td); });
      return row;
    }));
  }

  function runStatus(status) {
    document.querySelectorAll('.vx11-pipeline-badge[data-pipeline-run="' + page.run + '"]').forEach(function (el) {
      el.textContent = status;
      el.style.background = page.colours[status] || "#8c959f";
    });
  }

  document.addEventListener("vx11:event", function (e) {
    const event = e.detail || {};
    const d = event.data || {};
    if (d.source !== "pipeline" || d.pipeline_run !== page.run) return;
    if (event.type === "plan_updated" && Array.isArray(d.phases)) {
      render(d.phases);
      if (d.status) runStatus(d.status);
    }
    if (event.type === "status_changed" && d.to) {
      runStatus(d.to);
      if (page.unfinished.indexOf(d.to) < 0) location.reload();
    }
  });
})();
