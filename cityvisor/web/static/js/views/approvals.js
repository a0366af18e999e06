// Pending commands: two-person approvals to approve or reject, the user's own requests,
// and the user's selections waiting for confirmation.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { fmtDateTime, t, tx } from "../i18n.js";
import { commandLabel, deviceName, errorText } from "../format.js";
import { state, zoneLabel } from "../state.js";
import { empty, notify } from "../ui.js";
import { argumentsText, deviceDetails, outcomeWord, selectorText } from "../wording.js";

const known = new Map(); // device id -> its detail (the labels of its commands)

function describe(pending) {
  const device = state.devices.get(pending.device_id);
  const detail = known.get(pending.device_id);
  const command = detail ? (detail.commands || []).find((c) => c.name === pending.command) : null;
  const args = argumentsText(command, pending.arguments);
  const target = pending.group
    ? t("approvals.group", { n: pending.group.targets, selector: selectorText(pending.group.selector) })
    : `${deviceName(device, pending.device_id)}${pending.member ? ` · ${pending.member}` : ""}`;
  return [
    h("strong", { class: "pending-command", dataset: { command: pending.command } }, command ? commandLabel(command) : pending.command),
    args ? h("span", { class: "mono" }, ` (${args})`) : null,
    h("span", {}, ` — ${target}`),
    pending.zone ? h("span", { class: "muted" }, ` · ${zoneLabel(pending.zone, tx)}`) : null,
  ];
}

export function mount(root, route, ctx) {
  let closed = false;
  let shown = "";
  const decide = h("div", { id: "approvals-decide" });
  const mine = h("div", { id: "approvals-mine" });
  const selections = h("div", { id: "approvals-confirmations" });
  replace(
    root,
    h(
      "section",
      { class: "panel approvals" },
      h("h2", {}, t("approvals.title")),
      h("h3", {}, t("approvals.to_decide")),
      decide,
      h("h3", {}, t("approvals.requested")),
      mine,
      h("h3", {}, t("approvals.confirmations")),
      selections,
    ),
  );

  async function act(path, body, okText) {
    try {
      const result = await api.post(path, body);
      const message = result && result.outcome ? outcomeWord(result.outcome) : okText;
      notify(message, result && result.outcome === "succeeded" ? "success" : "info");
    } catch (error) {
      notify(errorText(error), "error");
    }
    shown = "";
    load();
  }

  function approvalItem(pending) {
    const comment = h("input", { name: "comment", maxlength: "500", placeholder: t("approvals.comment"), "aria-label": t("approvals.comment") });
    return h(
      "li",
      { class: "pending", dataset: { approval: pending.id } },
      h("div", {}, describe(pending)),
      h(
        "div",
        { class: "muted" },
        t("approvals.requested_by", { user: pending.requested_by, time: fmtDateTime(pending.created_ms), expires: fmtDateTime(pending.expires_ms) }),
        pending.comment ? h("q", { class: "comment" }, pending.comment) : null,
      ),
      h(
        "div",
        { class: "pending-actions" },
        comment,
        h(
          "button",
          {
            type: "button",
            class: "primary",
            dataset: { action: "approve" },
            onclick: () => act(`/api/v1/commands/approvals/${encodeURIComponent(pending.id)}/approve`, { comment: comment.value.trim() }, t("approvals.approved")),
          },
          t("approvals.approve"),
        ),
        h(
          "button",
          {
            type: "button",
            class: "danger",
            dataset: { action: "reject" },
            onclick: () => act(`/api/v1/commands/approvals/${encodeURIComponent(pending.id)}/reject`, { comment: comment.value.trim() }, t("approvals.rejected")),
          },
          t("approvals.reject"),
        ),
      ),
    );
  }

  function ownItem(pending, confirmation) {
    return h(
      "li",
      { class: "pending", dataset: { pending: pending.id } },
      h("div", {}, describe(pending)),
      h("div", { class: "muted" }, t("approvals.expires", { time: fmtDateTime(pending.expires_ms) })),
      h(
        "div",
        { class: "pending-actions" },
        confirmation
          ? h(
              "button",
              {
                type: "button",
                class: ["primary", "danger"],
                dataset: { action: "confirm" },
                onclick: () => act(`/api/v1/commands/confirm/${encodeURIComponent(pending.id)}`, undefined, t("approvals.confirmed")),
              },
              t("confirm.execute"),
            )
          : null,
        h(
          "button",
          {
            type: "button",
            dataset: { action: "cancel" },
            onclick: () => act(`/api/v1/commands/pending/${encodeURIComponent(pending.id)}/cancel`, {}, t("approvals.withdrawn")),
          },
          t("approvals.withdraw"),
        ),
      ),
    );
  }

  async function load() {
    let approvals;
    let confirmations;
    try {
      [approvals, confirmations] = await Promise.all([
        api.get("/api/v1/commands/approvals"),
        api.get("/api/v1/commands/confirmations"),
      ]);
    } catch (error) {
      replace(decide, empty(errorText(error)));
      return;
    }
    if (closed) return;
    // Rebuilt only when the lists change: a comment being typed is kept.
    const signature = JSON.stringify([approvals.approvals, approvals.requested, confirmations.confirmations].map((list) => list.map((p) => p.id)));
    if (signature === shown) return;
    const lists = [approvals.approvals, approvals.requested, confirmations.confirmations];
    for (const [id, detail] of await deviceDetails(lists.flat().map((p) => p.device_id))) known.set(id, detail);
    if (closed) return;
    shown = signature;
    replace(decide, approvals.approvals.length ? h("ul", { class: "pending-list" }, approvals.approvals.map(approvalItem)) : empty(t("approvals.none")));
    replace(mine, approvals.requested.length ? h("ul", { class: "pending-list" }, approvals.requested.map((p) => ownItem(p, false))) : empty(t("approvals.none_requested")));
    replace(
      selections,
      confirmations.confirmations.length
        ? h("ul", { class: "pending-list" }, confirmations.confirmations.map((p) => ownItem(p, true)))
        : empty(t("approvals.none_confirmations")),
    );
  }

  load();
  const timer = setInterval(load, 3000);
  return {
    unmount() {
      closed = true;
      clearInterval(timer);
    },
  };
}
