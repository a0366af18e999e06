// The playbook runner: the playbooks, a dry run of each (what every step would touch), and
// a run followed live: its state, pause / resume / abort / undo, each step with every
// target's outcome, the manual check's confirmation and the approval that only a second
// supervisor can give. A run in progress is asked for twice a second; the lists every 3 s.

import { call, el, fmtTime, isSupervisor, say, sayError, session, start, t } from "./automation.js";

const STOPPED = new Set(["done", "failed", "aborted", "undone", "interrupted"]);
const FAST = 500;
const SLOW = 3000;
let shown = null; // the id of the run on screen
let timer = null;

function selectorText(selector) {
  return Object.entries(selector || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

function stepText(step) {
  switch (step.kind) {
    case "group":
      return t("step.group", { command: step.command, selector: selectorText(step.selector) });
    case "wait":
      return t("step.wait", { text: step.text, timeout: step.timeout });
    case "broadcast":
      return t("step.broadcast", { text: step.text, device: step.device, stage: step.stage });
    case "incident": {
      const text = t("step.incident", { text: step.text });
      return step.incident?.dispatch ? `${text} ${t("step.dispatch", { skill: step.incident.skill })}` : text;
    }
    default:
      return t(`step.${step.kind}`, { text: step.text });
  }
}

function outcomeWord(target, outcome) {
  if (target === "incident" || target === "crew" || target === "reason") return outcome;
  return t(`outcome.${outcome}`);
}

function outcomesTable(outcomes) {
  const entries = Object.entries(outcomes || {});
  if (!entries.length) return null;
  return el("table", { class: "outcomes" },
    el("thead", {}, el("tr", {}, el("th", {}, t("outcome.target")), el("th", {}, t("outcome.outcome")))),
    el("tbody", {}, entries.map(([target, outcome]) => {
      const label = ["incident", "crew", "reason"].includes(target) ? t(`outcome.${target}`) : target;
      return el("tr", { dataset: { target, outcome } },
        el("td", {}, label),
        el("td", { class: `outcome-${outcome}` }, outcomeWord(target, outcome)));
    })));
}

// ----------------------------------------------------------------------------- dry run

async function dryRun(playbook) {
  const found = await call("GET", `/api/v1/automation/playbooks/${encodeURIComponent(playbook.name)}/dry-run`);
  document.getElementById("dry-run").hidden = false;
  document.getElementById("dry-run").dataset.playbook = playbook.name;
  document.getElementById("dry-title").textContent = t("dry.title", { title: playbook.title });
  const list = document.getElementById("dry-steps");
  list.replaceChildren();
  for (const step of found.steps) {
    const item = el("li", { dataset: { step: step.step, kind: step.kind } }, stepText(step));
    if (step.kind === "group") {
      if (!step.targets.length) item.append(el("div", { class: "note" }, t("dry.no_target")));
      else {
        item.append(el("div", { class: "targets-count" }, t("dry.targets", { n: step.targets.length })),
          el("ul", { class: "targets" }, step.targets.map((target) => el("li", { dataset: { target } }, target))));
      }
      if (step.undo) item.append(el("div", { class: "note" }, t("dry.undo", { command: step.undo.command, n: step.undo_targets.length })));
    }
    list.append(item);
  }
}

// ----------------------------------------------------------------------------- a run

async function act(run, action) {
  const body = await call("POST", `/api/v1/automation/runs/${run.id}/${action}`, {});
  renderRun(body);
}

function control(run, action, label, enabled = true, reason = null) {
  return el("button", {
    type: "button", dataset: { action }, disabled: !enabled, title: reason,
    onclick: () => act(run, action).catch(sayError),
  }, label);
}

function renderRun(run) {
  shown = run.id;
  const section = document.getElementById("run");
  section.hidden = false;
  section.dataset.run = run.id;
  section.dataset.state = run.state;
  document.getElementById("run-title").textContent = t("run.title", { id: run.id, title: run.title || run.playbook });
  document.getElementById("run-by").textContent = t("run.by", { user: run.user, time: fmtTime(run.started_ts) });
  let state = t(`state.${run.paused && !STOPPED.has(run.state) ? "paused" : run.state}`);
  if (run.interrupted_in) state += ` (${t("run.interrupted_in", { state: t(`state.${run.interrupted_in}`) })})`;
  document.getElementById("run-state").textContent = state;
  let done = 0;
  let total = 0;
  for (const step of run.steps) {
    if (step.kind !== "group") continue;
    for (const outcome of Object.values(step.outcomes)) {
      total += 1;
      if (outcome !== "sending" && outcome !== "not_sent") done += 1;
    }
  }
  document.getElementById("run-summary").textContent = total ? t("run.summary", { done, total }) : "";
  const controls = document.getElementById("run-controls");
  controls.replaceChildren();
  const going = !STOPPED.has(run.state) && run.state !== "undoing";
  if (going && !run.paused) controls.append(control(run, "pause", t("run.pause")));
  if (going && run.paused) controls.append(control(run, "resume", t("run.resume")));
  if (going) controls.append(control(run, "abort", t("run.abort")));
  if (["done", "failed", "aborted"].includes(run.state) && run.steps.some((s) => s.undo)) {
    controls.append(control(run, "undo", t("run.undo")));
  }
  const list = document.getElementById("run-steps");
  list.replaceChildren();
  run.steps.forEach((step, index) => {
    const current = index === run.step && !STOPPED.has(run.state);
    const where = index < run.step || (index === run.step && STOPPED.has(run.state) && Object.keys(step.outcomes).length) ? "passed" : current ? "current" : "pending";
    const item = el("li", { class: current ? "step-current" : null, dataset: { step: index, kind: step.kind, where } },
      stepText(step), " ", el("span", { class: "note" }, t(`step.${where}`)));
    if (step.signed_by) item.append(" ", el("span", { class: "signed" }, t("run.signed", { user: step.signed_by })));
    if (current && run.state === "waiting_check") item.append(" ", control(run, "check", t("run.check")));
    if (current && run.state === "waiting_approval") {
      const author = run.user === session.user.name;
      const reason = author ? t("run.approve_author") : isSupervisor() ? null : t("run.approve_role");
      item.append(" ", control(run, "approve", t("run.approve"), !reason, reason));
      if (reason) item.append(el("div", { class: "note approval-reason" }, reason));
    }
    const table = outcomesTable(step.outcomes);
    if (table) item.append(table);
    list.append(item);
  });
}

async function showRun(id) {
  renderRun(await call("GET", `/api/v1/automation/runs/${id}`));
}

async function startRun(playbook) {
  const run = await call("POST", `/api/v1/automation/playbooks/${encodeURIComponent(playbook.name)}/run`, {});
  say(t("playbook.started", { id: run.id }));
  renderRun(run);
  lastLists = 0; // the new run in the list at the next beat
}

// ----------------------------------------------------------------------------- lists

async function refreshLists() {
  const found = await call("GET", "/api/v1/automation/playbooks");
  const body = document.querySelector("#playbooks tbody");
  body.replaceChildren();
  if (!found.playbooks.length) body.append(el("tr", {}, el("td", { colspan: 3 }, t("playbook.none"))));
  for (const playbook of found.playbooks) {
    body.append(el("tr", { dataset: { playbook: playbook.name } },
      el("td", {}, el("strong", {}, playbook.title), el("div", { class: "note" }, playbook.name)),
      el("td", {}, String(playbook.steps.length)),
      el("td", {},
        el("button", { type: "button", dataset: { action: "dry-run" }, onclick: () => dryRun(playbook).catch(sayError) }, t("playbook.dry_run")),
        el("button", { type: "button", dataset: { action: "run" }, onclick: () => startRun(playbook).then(tick).catch(sayError) }, t("playbook.run")))));
  }
  const runs = document.querySelector("#runs tbody");
  runs.replaceChildren();
  if (!found.runs.length) runs.append(el("tr", {}, el("td", { colspan: 6 }, t("history.none"))));
  for (const run of found.runs) {
    runs.append(el("tr", { dataset: { run: run.id, state: run.state } },
      el("td", {}, String(run.id)), el("td", {}, run.title || run.playbook), el("td", {}, run.user),
      el("td", {}, fmtTime(run.started_ts)), el("td", {}, t(`state.${run.state}`)),
      el("td", {}, el("button", { type: "button", dataset: { action: "show" }, onclick: () => showRun(run.id).then(tick).catch(sayError) }, t("history.open")))));
  }
}

let lastLists = 0;

/** One beat: the run on screen (twice a second while it goes), the lists every 3 s. */
async function tick() {
  clearTimeout(timer);
  let going = false;
  try {
    if (shown !== null) {
      const run = await call("GET", `/api/v1/automation/runs/${shown}`);
      renderRun(run);
      going = !STOPPED.has(run.state);
    }
    if (Date.now() - lastLists >= SLOW || !going) {
      lastLists = Date.now();
      await refreshLists();
    }
  } catch (error) {
    sayError(error);
  }
  timer = setTimeout(tick, going ? FAST : SLOW);
}

start().then(tick).catch(sayError);
