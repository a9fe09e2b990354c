// The overview's charts (uPlot), drawn from the JSON the page carries (#chart-data).
(function () {
  "use strict";
  const holder = document.getElementById("chart-data");
  if (!holder || !window.uPlot) return;
  const data = JSON.parse(holder.textContent);

  function draw(id, series, columns) {
    const box = document.getElementById(id);
    const width = Math.max(280, box.clientWidth || 320);
    new uPlot(
      {
        width: width,
        height: 200,
        series: [{}].concat(series),
        axes: [{}, { size: 50 }],
        legend: { live: false },
      },
      [data.x].concat(columns),
      box
    );
  }

  draw("chart-finished", [{ label: "finished", stroke: "#2b5797", fill: "rgba(43,87,151,.15)" }], [data.finished]);
  draw(
    "chart-run",
    [{ label: "p50", stroke: "#2b8a3e", spanGaps: true, points: { show: true, size: 6 } }, { label: "p95", stroke: "#c92a2a", spanGaps: true, points: { show: true, size: 6 } }],
    data.run
  );
  draw(
    "chart-wait",
    [{ label: "p50", stroke: "#2b8a3e", spanGaps: true, points: { show: true, size: 6 } }, { label: "p95", stroke: "#c92a2a", spanGaps: true, points: { show: true, size: 6 } }],
    data.wait
  );
})();
