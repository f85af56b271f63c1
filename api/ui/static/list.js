// The experiments list: rows still queued or running update their status and progress live.
"use strict";

(function () {
  // Experiments and analyses alike: each row names its JSON resource.
  const rows = Array.from(document.querySelectorAll("tr[data-url][data-terminal=false]"));

  function show(row, e) {
    const badge = row.querySelector("[data-field=status]");
    badge.textContent = e.status;
    badge.className = `badge status-${e.status}`;
    row.querySelector("[data-field=fraction]").value = e.progress.fraction;
    const text = e.is_terminal ? "done"
      : `${Math.round(e.progress.fraction * 100)} %` +
        (e.progress.epoch !== null && e.progress.epochs ? ` · epoch ${e.progress.epoch}/${e.progress.epochs}` : "");
    row.querySelector("[data-field=progress-text]").textContent = text;
    if (e.is_terminal) {
      row.dataset.terminal = "true";
      if (e.finished_at) row.querySelector("[data-field=finished]").textContent =
        e.finished_at.slice(0, 16).replace("T", " ");
    }
  }

  async function follow(row) {
    // At most DFP_MAX_CONCURRENT_JOBS rows are unfinished; each long-polls on its own.
    while (row.dataset.terminal === "false") {
      try {
        const response = await fetch(`${row.dataset.url}?wait=3`,
                                     { credentials: "same-origin" });
        if (!response.ok) return;
        show(row, await response.json());
      } catch (err) {
        await new Promise((r) => setTimeout(r, 5000));
      }
    }
  }

  rows.forEach(follow);
})();
