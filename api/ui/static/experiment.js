// The experiment page: live status (server-sent events, else long-polling), the results
// through the JSON API, and the charts. Marks <html data-ready> once the charts are drawn.
"use strict";

(function () {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const { lineChart, fmt } = window.dfpCharts;
  const id = data.experiment.id;
  const base = `/v1/experiments/${id}`;
  const els = {
    status: document.getElementById("status"),
    progress: document.getElementById("progress"),
    progressText: document.getElementById("progress-text"),
    run: document.getElementById("run-select"),
    slider: document.getElementById("checkpoint"),
    label: document.getElementById("checkpoint-label"),
    play: document.getElementById("play"),
    note: document.getElementById("charts-note"),
    cancel: document.getElementById("cancel-form"),
    del: document.getElementById("delete-form"),
  };
  let experiment = data.experiment;
  let selected = null;   // the selected run's full result
  let allRuns = [];      // every run's history (curves of one layer at one checkpoint)
  let summary = [];      // the sweep summary: steps to target per swept value
  let verdicts = null;
  let timer = null;

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin",
                                        headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  // ------------------------------------------------------------------ status and progress

  function showExperiment(e) {
    const wasTerminal = experiment.is_terminal;
    experiment = e;
    const badge = els.status.querySelector("[data-field=status]");
    badge.textContent = e.status;
    badge.className = `badge status-${e.status}`;
    els.progress.value = e.progress.fraction;
    let text = `${Math.round(e.progress.fraction * 100)} % · ` +
               `${e.progress.runs_finished}/${e.progress.n_runs} runs`;
    if (e.progress.epoch !== null && e.progress.epochs && !e.is_terminal) {
      text += ` · run ${e.progress.run} epoch ${e.progress.epoch}/${e.progress.epochs}`;
    }
    if (e.progress.train_loss !== null && !e.is_terminal) text += ` · loss ${fmt(e.progress.train_loss)}`;
    els.progressText.textContent = text;
    for (const r of e.runs) {
      const row = document.querySelector(`#runs tr[data-run="${r.index}"]`);
      if (!row) continue;
      const b = row.querySelector("[data-field=status]");
      b.textContent = r.status;
      b.className = `badge status-${r.status}`;
      row.querySelector("[data-field=epoch]").textContent =
        r.epoch === null ? "—" : (r.epochs ? `${r.epoch} / ${r.epochs}` : String(r.epoch));
      row.querySelector("[data-field=attempts]").textContent = r.attempts;
    }
    els.cancel.hidden = e.is_terminal;
    els.del.hidden = !e.is_terminal;
    if (e.is_terminal && !wasTerminal) loadResults();
  }

  function follow() {
    if (experiment.is_terminal) return;
    if (!window.EventSource) { poll(); return; }
    const source = new EventSource(`${base}/events`);
    let heard = false;
    source.addEventListener("experiment", (event) => {
      heard = true;
      const e = JSON.parse(event.data);
      showExperiment(e);
      refreshWhileRunning();
      if (e.is_terminal) source.close();
    });
    source.addEventListener("error", (event) => {
      // No stream (an older server) or it failed before saying anything: long-poll instead.
      if (!heard || event.data) { source.close(); poll(); }
    });
  }

  async function poll() {
    while (!experiment.is_terminal) {
      try {
        // Returns at once when the status changes, else after two seconds with fresh progress.
        showExperiment(await getJSON(`${base}?wait=2`));
        refreshWhileRunning();
      } catch (err) {
        els.note.textContent = `live updates paused: ${err.message}`;
        await new Promise((r) => setTimeout(r, 3000));
      }
    }
  }

  let lastRefresh = 0;
  function refreshWhileRunning() {
    // New checkpoints arrive while runs train: re-read the curves now and then.
    const now = performance.now();
    if (now - lastRefresh > 4000) { lastRefresh = now; loadResults(); }
  }

  // ----------------------------------------------------------------------------- results

  // The selected run in full first (the page is interactive once it is drawn); then every
  // run's history, with one layer at one checkpoint only, for the loss curves of all runs.
  async function loadResults() {
    // Verdicts judge the whole result (slow to compute): they come with the second read.
    const one = await getJSON(`${base}/results?run=${Number(els.run.value || 0)}&verdicts=false`);
    selected = one.runs[0] || null;
    summary = one.summary || [];
    if (!allRuns.length) allRuns = one.runs;
    const checkpoints = selected ? selected.checkpoints.length : 0;
    const atEnd = Number(els.slider.value) >= Number(els.slider.max);
    els.slider.max = Math.max(0, checkpoints - 1);
    if (atEnd || Number(els.slider.value) > checkpoints - 1) els.slider.value = Math.max(0, checkpoints - 1);
    els.note.textContent = one.partial ? "partial: the experiment is still running" : "";
    drawAll();
    let query = `run=${Number(els.run.value || 0)}&epoch=0`;
    if (selected && selected.checkpoints.length) {
      const c = selected.checkpoints[0];
      query = `layer=${encodeURIComponent(c.layers[0].layer)}&epoch=${c.epoch}`;
    }
    const every = await getJSON(`${base}/results?${query}`);
    if (data.experiment.n_runs > 1) allRuns = every.runs;
    verdicts = every.verdicts || null;
    drawAll();
    if (!document.documentElement.dataset.complete) {
      document.documentElement.dataset.completeMs = String(Math.round(performance.now()));
      document.documentElement.dataset.complete = "true";
    }
  }

  async function selectRun() {
    const one = await getJSON(`${base}/results?run=${Number(els.run.value)}&verdicts=false`);
    selected = one.runs[0] || null;
    const n = selected ? selected.checkpoints.length : 0;
    els.slider.max = Math.max(0, n - 1);
    els.slider.value = Math.max(0, n - 1);
    drawAll();
  }

  function checkpoint() {
    if (!selected || !selected.checkpoints.length) return null;
    return selected.checkpoints[Math.min(Number(els.slider.value), selected.checkpoints.length - 1)];
  }

  function drawCurves() {
    const c = checkpoint();
    els.label.textContent = c ? `epoch ${c.epoch} (step ${c.step})` : "—";
    const layers = c ? c.layers : [];
    lineChart(document.getElementById("chart-rdf"), {
      title: "RDF against 1/δ", xLabel: "1/δ", yLabel: "RDF", xLog: true,
      series: layers.map((l) => ({ name: l.layer, x: l.rdf_inverse_deltas, y: l.rdf })),
    });
    lineChart(document.getElementById("chart-lfr"), {
      title: "LFR against 1/δ", xLabel: "1/δ", yLabel: "LFR", xLog: true,
      series: layers.map((l) => ({ name: l.layer, x: l.inverse_deltas, y: l.lfr })),
    });
  }

  function drawAll() {
    drawCurves();
    const cps = selected ? selected.checkpoints : [];
    const names = cps.length ? cps[0].layers.map((l) => l.layer) : [];
    lineChart(document.getElementById("chart-peaks"), {
      title: "RDF peak over training", xLabel: "epoch", yLabel: "peak 1/δ", yLog: true, points: true,
      series: names.map((name, j) => ({
        name, x: cps.map((c) => c.epoch),
        y: cps.map((c) => (c.layers[j] && c.layers[j].layer === name ? c.layers[j].peak_inverse_delta : null)),
      })),
    });
    lineChart(document.getElementById("chart-loss"), {
      title: "Training loss", xLabel: "step", yLabel: "train loss", yLog: true,
      series: allRuns.map((r) => ({
        name: data.sweep_field ? `${r.sweep_value}` : `run ${r.index}`,
        x: r.history.map((h) => h.step), y: r.history.map((h) => h.train_loss),
      })),
    });
    const steps = document.getElementById("chart-steps");
    if (steps) {
      const rows = summary.filter((r) => typeof r.sweep_value === "number");
      lineChart(steps, {
        title: "Steps to target", xLabel: data.sweep_field, yLabel: "steps", points: true,
        empty: "no run has reached the target loss yet",
        series: [{ name: "steps to target", x: rows.map((r) => r.sweep_value),
                   y: rows.map((r) => r.steps_to_target) }],
      });
    }
    for (const r of allRuns) {
      const row = document.querySelector(`#runs tr[data-run="${r.index}"]`);
      if (!row) continue;
      row.querySelector("[data-field=steps]").textContent = r.steps_to_target ?? "—";
      const last = r.history.length ? r.history[r.history.length - 1].train_loss : null;
      row.querySelector("[data-field=loss]").textContent = fmt(last);
    }
    showVerdicts();
    if (!document.documentElement.dataset.ready) {
      document.documentElement.dataset.readyMs = String(Math.round(performance.now()));
      document.documentElement.dataset.ready = "true";
    }
  }

  function showVerdicts() {
    const box = document.getElementById("verdicts");
    if (!verdicts || !verdicts.length) { box.hidden = true; return; }
    const body = box.querySelector("tbody");
    body.textContent = "";
    for (const v of verdicts) {
      const tr = document.createElement("tr");
      for (const key of ["claim", "scope", "statistic", "value", "threshold", "outcome", "detail"]) {
        const td = document.createElement("td");
        const value = v[key];
        td.textContent = typeof value === "number" ? fmt(value)
          : value === null || value === undefined ? "—"
          : typeof value === "object" ? JSON.stringify(value) : String(value);
        if (key === "outcome") td.className = `outcome outcome-${String(value)}`;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    box.hidden = false;
  }

  // Listing the figures reads every stored curve: only when someone opens the list.
  async function listFigures() {
    const list = document.getElementById("figure-list");
    if (list.dataset.loaded) return;
    list.dataset.loaded = "true";
    try {
      const figures = await getJSON(`${base}/figures`);
      for (const f of figures.data) {
        const li = document.createElement("li");
        const a = document.createElement("a");
        a.href = f.url;
        a.textContent = `${f.name}.png`;
        li.appendChild(a);
        list.appendChild(li);
      }
    } catch (err) {
      list.textContent = "no figures yet";
      delete list.dataset.loaded;
    }
  }

  // ---------------------------------------------------------------------------- controls

  els.slider.addEventListener("input", drawCurves);
  els.run.addEventListener("change", selectRun);
  els.play.addEventListener("click", () => {
    if (timer) {
      clearInterval(timer); timer = null;
      els.play.textContent = "▶ Play"; els.play.setAttribute("aria-pressed", "false");
      return;
    }
    if (Number(els.slider.value) >= Number(els.slider.max)) els.slider.value = 0;
    els.play.textContent = "❚❚ Pause"; els.play.setAttribute("aria-pressed", "true");
    timer = setInterval(() => {
      if (Number(els.slider.value) >= Number(els.slider.max)) { els.play.click(); return; }
      els.slider.value = Number(els.slider.value) + 1;
      drawCurves();
    }, 700);
  });

  loadResults().catch((err) => { els.note.textContent = `could not load the results: ${err.message}`; });
  follow();
  document.getElementById("figures").addEventListener("toggle", listFigures);
})();
