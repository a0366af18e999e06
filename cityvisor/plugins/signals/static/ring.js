// The ring diagram of one junction: its stages around a circle, in serving
// order and in proportion to the running plan's green times; each phase in
// its live colour. Data: GET /api/v1/signals/{id}/ring, once a second.

const french = (navigator.language || "fr").startsWith("fr");
const TEXT = {
  phase: ["Phase", "Phase"],
  approach: ["Approche", "Approach"],
  state: ["Couleur", "Colour"],
  held: ["Maintenue", "Held"],
  conflicts: ["En conflit avec", "Conflicts with"],
  plan: ["Plan", "Plan"],
  flash: ["CLIGNOTANT", "FLASHING"],
  offline: ["hors ligne", "offline"],
  central: ["commande centrale", "central control"],
  schedule: ["programme horaire", "own schedule"],
  yes: ["oui", "yes"],
  bus: ["bus", "bus"],
  green: ["vert", "green"],
  yellow: ["jaune", "yellow"],
  red: ["rouge", "red"],
  dark: ["éteint", "dark"],
  unknown: ["inconnu", "unknown"],
};
const t = (key) => (TEXT[key] || [key, key])[french ? 0 : 1];
const COLOURS = { green: "#4cd964", yellow: "#ffcc00", red: "#ff5e57", flash: "#ffcc00" };
const SVG = "http://www.w3.org/2000/svg";

function element(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function arc(radius, from, to) {
  const point = (angle) => [radius * Math.sin(angle), -radius * Math.cos(angle)];
  const [x1, y1] = point(from);
  const [x2, y2] = point(to);
  const large = to - from > Math.PI ? 1 : 0;
  return `M 0 0 L ${x1} ${y1} A ${radius} ${radius} 0 ${large} 1 ${x2} ${y2} Z`;
}

export function draw(svg, ring) {
  svg.replaceChildren();
  const byNumber = new Map(ring.phases.map((phase) => [phase.number, phase]));
  const greens = ring.greens || ring.stages.map(() => 1);
  const total = greens.reduce((sum, green) => sum + green, 0);
  let angle = 0;
  ring.stages.forEach((stage, index) => {
    const span = (2 * Math.PI * greens[index]) / total;
    const states = stage.map((number) => byNumber.get(number)?.state);
    const lit = states.find((state) => state === "green" || state === "yellow");
    const fill = ring.flashing ? "#3a3320" : lit ? COLOURS[lit] : "#26303b";
    svg.append(element("path", { d: arc(100, angle, angle + span), fill, stroke: "#10151c", "stroke-width": 2 }));
    const middle = angle + span / 2;
    stage.forEach((number, row) => {
      const phase = byNumber.get(number);
      const radius = 62 - row * 20;
      const label = `${number}${phase?.held ? "●" : ""}${phase?.bus ? " 🚌" : ""}`;
      svg.append(
        element(
          "text",
          {
            x: radius * Math.sin(middle),
            y: -radius * Math.cos(middle) + 5,
            "text-anchor": "middle",
            "font-size": 16,
            fill: lit ? "#10151c" : "#e8edf2",
          },
          label,
        ),
      );
    });
    angle += span;
  });
}

function table(body, ring) {
  body.replaceChildren(
    ...ring.phases.map((phase) => {
      const row = document.createElement("tr");
      const cells = [
        `${phase.number} ${phase.name}`,
        phase.approach + (phase.bus ? ` (${t("bus")})` : ""),
        t(phase.state),
        phase.held ? t("yes") : "",
        phase.conflicts.join(", "),
      ];
      for (const text of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      row.children[2].className = `state-${phase.state}`;
      return row;
    }),
  );
}

async function refresh(device) {
  const response = await fetch(`/api/v1/signals/${encodeURIComponent(device)}/ring`, {
    credentials: "same-origin",
  });
  if (!response.ok) throw new Error(`${response.status}`);
  const ring = await response.json();
  document.title = ring.name;
  document.getElementById("title").textContent = `${ring.name} (${ring.junction})`;
  const status = document.getElementById("status");
  const control = ring.central_control ? t("central") : t("schedule");
  status.textContent = ring.online
    ? `${t("plan")} ${ring.plan ?? "?"} ${ring.plan_name ? `« ${ring.plan_name} »` : ""}, ${control}` +
      (ring.flashing ? `, ${t("flash")}` : "")
    : t("offline");
  status.className = ring.flashing || !ring.online ? "alarm" : "";
  draw(document.getElementById("ring"), ring);
  table(document.querySelector("#phases tbody"), ring);
}

function start() {
  for (const cell of document.querySelectorAll("[data-label]")) cell.textContent = t(cell.dataset.label);
  const device = new URLSearchParams(location.search).get("device");
  if (!device) return;
  const tick = () =>
    refresh(device)
      .catch((error) => {
        document.getElementById("status").textContent = `${t("offline")} (${error.message})`;
      })
      .finally(() => setTimeout(tick, 1000));
  tick();
}

start();
