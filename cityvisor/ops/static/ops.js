// The operations screen: open incidents, dispatch, crews and the crisis; refreshed every 3 s.

const EN = {
  title: "Operations", back: "Back to supervision", incidents: "Open incidents", what: "Subject",
  priority: "Priority", state: "State", crew: "Crew", crews: "Crews", skills: "Skills",
  position: "Position", propose: "Propose a crew", send: "Send", next: "Next step",
  noCrisis: "No crisis open", crisis: "Crisis",
};
const FR = {
  propose: "Proposer une équipe", send: "Envoyer", next: "Étape suivante",
  noCrisis: "Aucune crise ouverte", crisis: "Crise",
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

function button(label, action) {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", () => action().then(refresh).catch(say));
  return b;
}

function say(error) {
  document.getElementById("message").textContent = error ? String(error.message || error) : "";
}

async function propose(incident, actions) {
  const found = await call("GET", `/api/v1/ops/incidents/${incident.id}/dispatch`);
  actions.replaceChildren();
  for (const p of found.proposals) {
    const km = (p.distance_m / 1000).toFixed(1);
    const minutes = Math.round(p.eta_s / 60);
    actions.append(button(`${t("send")} ${p.name} (${km} km, ${minutes} min)`, () =>
      call("POST", `/api/v1/ops/incidents/${incident.id}/dispatch`, { crew: p.crew })));
  }
}

async function refresh() {
  const [incidents, crews, crisis] = await Promise.all([
    call("GET", "/api/v1/ops/incidents"), call("GET", "/api/v1/ops/crews"),
    call("GET", "/api/v1/ops/crisis"),
  ]);
  const body = document.querySelector("#incidents tbody");
  body.replaceChildren();
  for (const incident of incidents.incidents) {
    const row = document.createElement("tr");
    row.dataset.incident = incident.id;
    for (const value of [incident.id, incident.title, incident.zone, incident.priority,
      incident.state, incident.crew]) cell(row, value);
    const actions = cell(row, "");
    if (incident.state === "new") {
      actions.append(button(t("propose"), () => propose(incident, actions)));
    } else if (NEXT[incident.state]) {
      actions.append(button(`${t("next")}: ${NEXT[incident.state]}`, () =>
        call("POST", `/api/v1/ops/incidents/${incident.id}/state`, { state: NEXT[incident.state] })));
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
}

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
