// The compare page: steps to target and the summary layer's last RDF peak, one line each.
"use strict";

(function () {
  const compared = JSON.parse(document.getElementById("page-data").textContent);
  const { lineChart } = window.dfpCharts;
  const xLabel = compared.map((c) => c.sweep_field).find(Boolean) || "swept value";

  function lastPeak(row) {
    const peaks = Object.values(row.peak_inverse_delta_by_checkpoint || {});
    return peaks.length ? peaks[peaks.length - 1] : null;
  }

  function series(pick) {
    return compared.map((c) => {
      const rows = c.summary.filter((r) => typeof r.sweep_value === "number");
      return { name: c.name, x: rows.map((r) => r.sweep_value), y: rows.map(pick) };
    });
  }

  lineChart(document.getElementById("chart-compare-steps"), {
    title: "Steps to target", xLabel, yLabel: "steps", points: true, legend: true,
    empty: "no swept runs reached the target", series: series((r) => r.steps_to_target),
  });
  lineChart(document.getElementById("chart-compare-peaks"), {
    title: "Summary layer RDF peak (last checkpoint)", xLabel, yLabel: "peak 1/δ", yLog: true,
    points: true, legend: true, empty: "no summary yet", series: series(lastPeak),
  });
  document.documentElement.dataset.ready = "true";
})();
