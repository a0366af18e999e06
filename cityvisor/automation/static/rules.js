// The rules list: each rule's condition, whether it is enabled, its last firing with the
// values that fired it; a supervisor enables or disables it (journaled). Refreshed every 2 s.

import { call, el, fmtTime, isSupervisor, say, sayError, start, t } from "./automation.js";

function values(rule) {
  const entries = Object.entries(rule.last_values || {});
  if (!entries.length) return null;
  return el("ul", { class: "values" }, entries.map(([point, value]) => el("li", {}, el("code", {}, point), ` = ${JSON.stringify(value)}`)));
}

async function toggle(rule) {
  const input = document.getElementById("comment");
  const action = rule.enabled ? "disable" : "enable";
  const body = await call("POST", `/api/v1/automation/rules/${encodeURIComponent(rule.name)}/${action}`, { comment: input.value });
  input.value = ""; // journaled with this switch, not the next
  say(t(body.enabled ? "rule.switched_on" : "rule.switched_off", { name: rule.name }));
}

async function refresh() {
  const found = await call("GET", "/api/v1/automation/rules");
  const body = document.querySelector("#rules tbody");
  body.replaceChildren();
  if (!found.rules.length) body.append(el("tr", {}, el("td", { colspan: 6 }, t("rule.none"))));
  const allowed = isSupervisor();
  document.getElementById("supervisor-only").hidden = allowed;
  for (const rule of found.rules) {
    const state = [t(rule.enabled ? "rule.enabled" : "rule.disabled")];
    if (rule.holding) state.push(t("rule.holding"));
    if (rule.failing) state.push(t("rule.failing"));
    const button = el("button", {
      type: "button",
      dataset: { action: rule.enabled ? "disable" : "enable" },
      disabled: !allowed,
      title: allowed ? null : t("rule.supervisor_only"),
      onclick: () => toggle(rule).then(refresh).catch(sayError),
    }, t(rule.enabled ? "rule.disable" : "rule.enable"));
    body.append(el("tr", { dataset: { rule: rule.name, enabled: String(rule.enabled), failing: String(rule.failing) } },
      el("td", {}, el("strong", {}, rule.name), rule.description ? el("div", { class: "note" }, rule.description) : null),
      el("td", {}, el("code", {}, rule.when)),
      el("td", { class: "state" }, state.join(", ")),
      el("td", { class: "last" }, rule.last_fired_ts ? fmtTime(rule.last_fired_ts) : t("rule.never"), values(rule)),
      el("td", { class: "fired" }, String(rule.fired)),
      el("td", {}, button),
    ));
  }
}

start()
  .then(refresh)
  .then(() => setInterval(() => refresh().catch(sayError), 2000))
  .catch(sayError);
