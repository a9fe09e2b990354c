// A task's page, live: its events stream (/ui/tasks/{id}/events, the API's stream) moves
// the status, the progress bar and the timeline without a reload. Every value is set as
// text (textContent), never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("task");
  if (!root || root.dataset.final === "true" || !window.EventSource) return;

  const byId = (id) => document.getElementById(id);
  const status = byId("status");
  const progress = byId("progress");
  const progressText = byId("progress-text");
  const timeline = byId("timeline");

  function setStatus(value) {
    status.textContent = value;
    status.className = "status status-" + value.toLowerCase();
  }

  function addToTimeline(type, at, text) {
    const item = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = new Date(at).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    const name = document.createElement("b");
    name.textContent = type;
    const body = document.createElement("span");
    body.textContent = text || "";
    item.append(time, " ", name, " ", body);
    timeline.append(item);
  }

  function showJson(id, value) {
    const box = byId(id);
    if (!box) return;
    box.textContent = JSON.stringify(value, null, 2);
    box.hidden = value === null || value === undefined;
  }

  let url = root.dataset.events;
  if (root.dataset.after) url += "?after=" + encodeURIComponent(root.dataset.after);
  const source = new EventSource(url);

  source.addEventListener("queued", (e) => {
    const d = JSON.parse(e.data);
    byId("standing").textContent =
      "position " + d.position + (d.eta_s != null ? ", about " + d.eta_s.toFixed(1) + " s" : "");
  });
  source.addEventListener("started", (e) => {
    const d = JSON.parse(e.data);
    setStatus("STARTED");
    byId("standing").textContent = "";
    byId("attempts").textContent = String(d.attempt);
    const cancel = byId("cancel-form");
    if (cancel) cancel.hidden = true;
    byId("progress-box").hidden = false;
    addToTimeline("started", d.at, "attempt " + d.attempt + " on " + (d.worker || "a worker"));
  });
  source.addEventListener("progress", (e) => {
    const d = JSON.parse(e.data);
    if (d.total) progress.setAttribute("max", d.total);
    progress.setAttribute("value", d.done); // the attribute: what tests and tools can read
    progressText.textContent = d.done + (d.total ? "/" + d.total : "") + " " + (d.message || "");
    addToTimeline("progress", d.at, progressText.textContent);
  });
  source.addEventListener("log", (e) => {
    const d = JSON.parse(e.data);
    addToTimeline("log", d.at, (d.level || "info") + ": " + d.message);
  });
  source.addEventListener("output", (e) => {
    const d = JSON.parse(e.data);
    addToTimeline("output", d.at, JSON.stringify(d.partial));
  });
  source.addEventListener("completed", (e) => {
    source.close();
    const d = JSON.parse(e.data);
    const task = d.task || {};
    if (task.status) setStatus(task.status);
    byId("standing").textContent = "";
    const cancel = byId("cancel-form");
    if (cancel) cancel.hidden = true;
    if (task.status === "SUCCESS" && progress.value < progress.max && !progressText.textContent) {
      byId("progress-box").hidden = true;
    }
    byId("finished-at").textContent = task.finished_at || "";
    showJson("result", task.result);
    showJson("error", task.error);
    addToTimeline("completed", d.at, task.status || "");
  });
})();
