// The operations screen: open incidents, dispatch, crews and the crisis; refreshed every 3 s.

const EN = {
  title: "Operations", back: "Back to supervision", incidents: "Open incidents", what: "Subject",
  priority: "Priority", state: "State", crew: "Crew", crews: "Crews", skills: "Skills",
  position: "Position", propose: "Propose a crew", send: "Send", next: "Next step",
  noCrisis: "No crisis open", crisis: "Crisis", alarms: "Alarms without an incident",
  alarm: "Alarm", open: "Open an incident", crisisCell: "Crisis cell", openCrisis: "Open the crisis",
  addNote: "Add to the timeline", closeCrisis: "Close the crisis", report: "Report",
};
const FR = {
  propose: "Proposer une équipe", send: "Envoyer", next: "Étape suivante",
  noCrisis: "Aucune crise ouverte", crisis: "Crise", open: "Ouvrir une intervention",
};
const english = (navigator.language || "fr").startsWith("en");
const t = (key) => (english ? EN[key] : FR[key]) || EN[key] || key;
const NEXT = { new: null, assigned: "on_site", on_site: "resolved", resolved: "closed" };
let csrf = null;

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.message || `HTTP ${response.status}`);
  return data;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  row.append(td);
  return td;
}

function button(label, action, name = "") {
  const b = document.createElement("button");
  if (name) b.dataset.action = name;
  b.textContent = label;
  b.addEventListener("click", () => action().then(refresh).catch(say));
  return b;
}

function say(error) {
  document.getElementById("message").textContent = error ? String(error.message || error) : "";
}

const proposals = new Map(); // incident id -> the crews proposed, until one is sent

async function propose(incident) {
  const found = await call("GET", `/api/v1/ops/incidents/${incident.id}/dispatch`);
  proposals.set(incident.id, found.proposals);
}

function proposalButtons(incident, actions) {
  for (const p of proposals.get(incident.id) || []) {
    const km = (p.distance_m / 1000).toFixed(1);
    const minutes = Math.round(p.eta_s / 60);
    const send = button(`${t("send")} ${p.name} (${km} km, ${minutes} min)`, async () => {
      await call("POST", `/api/v1/ops/incidents/${incident.id}/dispatch`, { crew: p.crew });
      proposals.delete(incident.id);
    }, "send");
    send.dataset.crew = p.crew;
    actions.append(send);
  }
}

async function refresh() {
  const [incidents, crews, crisis, alarms] = await Promise.all([
    call("GET", "/api/v1/ops/incidents?state=active"), call("GET", "/api/v1/ops/crews"),
    call("GET", "/api/v1/ops/crisis"), call("GET", "/api/v1/alarms?scope=active"),
  ]);
  const linked = new Set();
  for (const incident of incidents.incidents) {
    for (const link of incident.links) if (link.kind === "alarm") linked.add(link.ref);
  }
  const alarmBody = document.querySelector("#alarms tbody");
  alarmBody.replaceChildren();
  for (const alarm of alarms.alarms) {
    if (linked.has(alarm.id)) continue;
    const row = document.createElement("tr");
    row.dataset.alarm = alarm.id;
    const message = (alarm.message && (alarm.message[english ? "en" : "fr"] || alarm.message.fr)) || alarm.id;
    for (const value of [message, alarm.zone, alarm.priority]) cell(row, value);
    cell(row, "").append(button(t("open"), () =>
      call("POST", "/api/v1/ops/incidents/from-alarm", { alarm: alarm.id }), "open"));
    alarmBody.append(row);
  }
  const body = document.querySelector("#incidents tbody");
  body.replaceChildren();
  for (const incident of incidents.incidents) {
    const row = document.createElement("tr");
    row.dataset.incident = incident.id;
    row.dataset.state = incident.state;
    for (const value of [incident.id, incident.title, incident.zone, incident.priority,
      incident.state, incident.crew]) cell(row, value);
    const actions = cell(row, "");
    if (incident.state === "new") {
      actions.append(button(t("propose"), () => propose(incident), "propose"));
      proposalButtons(incident, actions);
    } else if (NEXT[incident.state]) {
      actions.append(button(`${t("next")}: ${NEXT[incident.state]}`, () =>
        call("POST", `/api/v1/ops/incidents/${incident.id}/state`, { state: NEXT[incident.state] }),
        "next"));
    }
    body.append(row);
  }
  const crewBody = document.querySelector("#crews tbody");
  crewBody.replaceChildren();
  for (const crew of crews.crews) {
    const row = document.createElement("tr");
    const where = crew.position ? `${crew.position.lat.toFixed(4)}, ${crew.position.lon.toFixed(4)}` : "";
    const eta = crew.eta_ms ? new Date(crew.eta_ms).toLocaleTimeString() : "";
    for (const value of [crew.name, crew.skills.join(", "), crew.state, where, eta]) cell(row, value);
    crewBody.append(row);
  }
  const current = crisis.current;
  document.getElementById("crisis").textContent = current
    ? `${t("crisis")} ${current.id}: ${current.title} (${current.kind})` : t("noCrisis");
  document.getElementById("crisis-open").hidden = Boolean(current);
  document.getElementById("crisis-note").hidden = !current;
  document.getElementById("crisis-close").hidden = !current;
  const shown = current || crisis.crises[0];
  const report = document.getElementById("crisis-report");
  report.hidden = !shown || Boolean(current);
  if (shown) report.href = `/api/v1/ops/crisis/${shown.id}/report`;
  const timeline = document.getElementById("timeline");
  timeline.replaceChildren();
  if (current) {
    const found = await call("GET", `/api/v1/ops/crisis/${current.id}/timeline`);
    for (const entry of found.timeline.slice(-50)) {
      const item = document.createElement("li");
      item.textContent = `${new Date(entry.ts).toLocaleTimeString()} ${entry.user || ""}: ${entry.message}`;
      timeline.append(item);
    }
  }
}

function onSubmit(id, action) {
  document.getElementById(id).addEventListener("submit", (event) => {
    event.preventDefault();
    action().then(refresh).then(() => say(null)).catch(say);
  });
}

onSubmit("crisis-open", () => call("POST", "/api/v1/ops/crisis", {
  kind: document.getElementById("crisis-kind").value,
  title: document.getElementById("crisis-title").value,
}));
onSubmit("crisis-note", async () => {
  const input = document.getElementById("crisis-note-text");
  await call("POST", "/api/v1/ops/crisis/notes", { text: input.value });
  input.value = "";
});
onSubmit("crisis-close", () => call("POST", "/api/v1/ops/crisis/close", {
  summary: document.getElementById("crisis-summary").value,
}));

async function start() {
  for (const node of document.querySelectorAll("[data-t]")) {
    if (english) node.textContent = t(node.dataset.t);
  }
  document.documentElement.lang = english ? "en" : "fr";
  const session = await call("GET", "/api/v1/session");
  csrf = session.csrf_token;
  await refresh();
  setInterval(() => refresh().then(() => say(null)).catch(say), 3000);
}

start().catch(say);
