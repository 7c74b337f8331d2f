// Live updates for the dashboard's pages, from the server-sent events of /events/... (web_svc/events.py).
// Everything shown is set with textContent, never parsed as HTML: job data cannot become markup.
"use strict";

const csrf = () => document.body.dataset.csrf || "";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function setLive(text, state) {
  const live = document.getElementById("live");
  if (!live) return;
  live.textContent = text;
  live.dataset.state = state;
}

function actionForm(id, action, label, back) {
  return el("form", { method: "post", action: `/jobs/${id}/${action}`, class: "inline" },
    el("input", { type: "hidden", name: "csrf", value: csrf() }),
    el("input", { type: "hidden", name: "back", value: back }),
    el("button", { type: "submit", class: action }, label));
}

function actions(row, back) {
  const cell = document.createDocumentFragment();
  if (row.cancellable) cell.append(actionForm(row.id, "cancel", "Cancel", back));
  if (row.rerunnable) cell.append(actionForm(row.id, "rerun", "Re-run", back));
  return cell;
}

function statusBadge(status) {
  return el("span", { class: `status ${status}` }, status);
}

function jobRow(row, back) {
  const tr = el("tr", { "data-id": row.id, "data-updated": String(row.updated_at) });
  const link = el("a", { href: `/jobs/${row.id}` }, row.id.slice(0, 8));
  const cells = [link, row.type, statusBadge(row.status), row.priority, row.attempts, el("code", {}, row.payload),
    row.outcome, row.created, row.updated, actions(row, back)];
  for (const content of cells) tr.append(el("td", {}, content));
  return tr;
}

// Opens `url` and hands each named event's JSON to its handler; the common endings are handled here.
function listen(url, handlers) {
  const source = new EventSource(url);
  const on = (name, handle) => source.addEventListener(name, (event) => handle(JSON.parse(event.data)));
  for (const [name, handle] of Object.entries(handlers)) on(name, handle);
  on("unavailable", (data) => { source.close(); setLive(data.message, "off"); });
  on("expired", () => { source.close(); window.location.assign("/login"); });
  on("gone", (data) => { source.close(); setLive(data.message, "off"); });
  on("interrupted", () => setLive("live updates: reconnecting…", "wait"));
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) setLive("live updates stopped: reload the page", "off");
    else setLive("live updates: reconnecting…", "wait");
  };
  window.addEventListener("pagehide", () => source.close());
  return source;
}

function liveList(tbody) {
  const back = tbody.dataset.back;
  const wanted = (row) => (!tbody.dataset.status || row.status === tbody.dataset.status)
    && (!tbody.dataset.type || row.type === tbody.dataset.type);
  const showEmpty = () => { document.getElementById("empty").hidden = tbody.rows.length > 0; };
  listen(tbody.dataset.events, {
    snapshot: (rows) => {
      tbody.replaceChildren(...rows.map((row) => jobRow(row, back)));
      showEmpty();
    },
    ready: () => setLive("live", "on"),
    jobs: (rows) => {
      for (const row of rows) {
        const current = tbody.querySelector(`tr[data-id="${CSS.escape(row.id)}"]`);
        if (current && Number(current.dataset.updated) > row.updated_at) continue;
        if (!wanted(row)) { if (current) current.remove(); continue; }
        if (current) current.replaceWith(jobRow(row, back));
        else if (tbody.dataset.first === "1") tbody.prepend(jobRow(row, back));
      }
      showEmpty();
    },
  });
}

function liveJob(root) {
  if (root.dataset.final === "1") { setLive("finished", "off"); return; }
  const back = window.location.pathname;
  const source = listen(root.dataset.events, {
    job: (job) => {
      for (const field of root.querySelectorAll("[data-field]")) {
        const name = field.dataset.field;
        if (name in job) field.textContent = String(job[name]);
      }
      const status = root.querySelector('[data-field="status"]');
      status.className = `status ${job.status}`;
      document.getElementById("actions").replaceChildren(actions(job, back));
      const rows = job.attempt_history.map((a) => {
        const tr = el("tr");
        for (const content of [String(a.number), a.worker_id, a.started, a.ended, statusBadge(a.outcome),
          el("pre", { class: "error-text" }, a.error)]) tr.append(el("td", {}, content));
        return tr;
      });
      document.getElementById("attempts").replaceChildren(...rows);
      setLive(job.final ? "finished" : "live", job.final ? "off" : "on");
    },
    done: () => { source.close(); setLive("finished", "off"); },
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const list = document.getElementById("jobs");
  if (list && list.dataset.events) liveList(list);
  const job = document.getElementById("job");
  if (job) liveJob(job);
});
