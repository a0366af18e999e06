// A device's commands as forms built from their parameters' JSON schemas; select before
// operate (a dialog with a countdown), two-person approval, outcomes and refusals.

import * as api from "./api.js";
import { append, h, option, replace } from "./dom.js";
import { fmtDateTime, fmtNumber, t, tOr, tx } from "./i18n.js";
import { commandLabel, deviceName, errorText, formatValue } from "./format.js";
import { field, modal, notify } from "./ui.js";
import { argumentsText, outcomeWord, refusalText } from "./wording.js";

/** One input for a parameter's schema; returns {element, read()} (read throws a message). */
function parameterInput(command, name, schema, required) {
  const id = `cmd-${command.name}-${name}`;
  const label = `${tx(schema["x-doc"]) || schema.description || name}${schema["x-unit"] ? ` (${schema["x-unit"]})` : ""}`;
  let control;
  let read;
  if (Array.isArray(schema.enum)) {
    control = h(
      "select",
      { id, name },
      required ? null : option("", "—"),
      schema.enum.map((v) => option(String(v), String(v), v === schema.default)),
    );
    read = () => {
      if (control.value === "") return undefined;
      const found = schema.enum.find((v) => String(v) === control.value);
      return found === undefined ? control.value : found;
    };
  } else if (schema.type === "boolean") {
    control = h("input", { id, name, type: "checkbox", checked: Boolean(schema.default) });
    read = () => control.checked;
  } else if (schema.type === "number" || schema.type === "integer") {
    control = h("input", {
      id,
      name,
      type: "number",
      inputmode: "decimal",
      step: schema.type === "integer" ? "1" : "any",
      min: schema.minimum ?? null,
      max: schema.maximum ?? null,
      required,
      value: schema.default ?? null,
    });
    read = () => {
      if (control.value === "") {
        if (required) throw new Error(t("commands.required", { name: label }));
        return undefined;
      }
      const value = Number(control.value);
      if (!Number.isFinite(value) || (schema.type === "integer" && !Number.isInteger(value))) {
        throw new Error(t("commands.not_a_number", { name: label }));
      }
      if (schema.minimum !== undefined && value < schema.minimum) {
        throw new Error(t("commands.below", { name: label, min: fmtNumber(schema.minimum) }));
      }
      if (schema.maximum !== undefined && value > schema.maximum) {
        throw new Error(t("commands.above", { name: label, max: fmtNumber(schema.maximum) }));
      }
      return value;
    };
  } else {
    control = h("input", {
      id,
      name,
      type: "text",
      maxlength: schema.maxLength ?? null,
      required,
      value: schema.default ?? null,
    });
    read = () => {
      if (control.value === "") {
        if (required) throw new Error(t("commands.required", { name: label }));
        return undefined;
      }
      return control.value;
    };
  }
  const hint =
    schema.minimum !== undefined || schema.maximum !== undefined
      ? h("span", { class: "hint" }, `${fmtNumber(schema.minimum ?? -Infinity)} … ${fmtNumber(schema.maximum ?? Infinity)}`)
      : null;
  return { element: field(label, control, hint), read, control };
}

/**
 * The commands panel of a device: one form per command, and the outcome area.
 * `points()` gives the device's points (to show the feedback value with its unit).
 */
export function commandPanel(device, points) {
  const outcome = h("div", { class: "command-outcome", id: "command-outcome", role: "status", "aria-live": "polite" });
  const log = h("ol", { class: "command-log", id: "command-log", reversed: true });

  function show(kind, title, lines = [], dataset = {}) {
    replace(
      outcome,
      h(
        "div",
        { class: ["outcome", `outcome-${kind}`], dataset: { outcome: kind, ...dataset } },
        h("strong", { class: "outcome-title" }, title),
        lines.filter(Boolean).map((line) => h("div", { class: "outcome-line" }, line)),
      ),
    );
    log.prepend(h("li", { class: `outcome-${kind}` }, `${fmtDateTime(Date.now())} — ${title}`));
    while (log.children.length > 8) log.lastChild.remove();
  }

  function feedbackText(command, result) {
    if (result.feedback === null || result.feedback === undefined) return null;
    const name = command.feedback ? command.feedback.point : null;
    const point = points().find((p) => p.name === name && (p.member || null) === (result.member || null));
    return t("commands.feedback", { value: formatValue(point, result.feedback) });
  }

  function showResult(command, result) {
    const label = commandLabel(command);
    const target = result.member ? `${label} (${result.member})` : label;
    switch (result.outcome) {
      case "pending_approval":
        show("pending", t("commands.pending_approval", { command: target }), [
          t("commands.approval_hint", { s: Math.round(result.expires_in || 0) }),
        ]);
        break;
      case "succeeded":
        show("succeeded", `${target} — ${outcomeWord(result.outcome)}`, [
          feedbackText(command, result),
          t("commands.duration", { ms: result.duration_ms }),
          result.approver ? t("commands.approved_by", { user: result.approver }) : null,
        ], { command: command.name });
        break;
      case "cancelled":
        show("cancelled", `${target} — ${outcomeWord(result.outcome)}`);
        break;
      default:
        // What the equipment or its link said is kept as it came (a technical detail).
        show("failed", `${target} — ${outcomeWord(result.outcome)}`, [
          result.detail ? h("span", {}, t("commands.technical_detail"), h("code", { lang: "en" }, result.detail)) : null,
          feedbackText(command, result),
        ], { command: command.name });
    }
  }

  function showRefusal(command, error, member) {
    const label = commandLabel(command);
    const target = member ? `${label} (${member})` : label;
    const body = error.body || {};
    const kind = body.error === "interlocked" ? "interlocked" : "refused";
    const lines = [body.interlock ? refusalText(body, device) : errorText(error)];
    show(kind, t(`commands.${kind}`, { command: target }), lines, { code: body.error || "" });
  }

  async function confirmSelection(command, result, member, argumentsText) {
    const deadline = Date.now() + (result.expires_in || command.confirm_within_s || 30) * 1000;
    const total = Math.max(1, deadline - Date.now());
    const choice = await modal(t("confirm.title"), (dialog, close) => {
      const countdown = h("p", { class: "countdown", id: "confirm-countdown" });
      const bar = h("progress", { max: String(total), value: String(total), class: "countdown-bar" });
      const execute = h(
        "button",
        { type: "button", class: ["primary", "danger"], id: "confirm-execute", onclick: () => close("execute") },
        t("confirm.execute"),
      );
      const cancel = h(
        "button",
        { type: "button", id: "confirm-cancel", autofocus: true, onclick: () => close("cancel") },
        t("confirm.cancel"),
      );
      const tick = () => {
        const left = deadline - Date.now();
        if (left <= 0) {
          clearInterval(timer);
          close("expired");
          return;
        }
        bar.value = left;
        countdown.textContent = t("confirm.expires", { s: Math.ceil(left / 1000) });
      };
      const timer = setInterval(tick, 200);
      dialog.addEventListener("close", () => clearInterval(timer));
      tick();
      append(dialog, [
        h(
          "p",
          { class: "confirm-question" },
          t("confirm.question", {
            command: commandLabel(command),
            device: deviceName(device),
          }),
        ),
        member ? h("p", {}, t("confirm.member", { member })) : null,
        argumentsText ? h("p", { class: "mono" }, argumentsText) : null,
        countdown,
        bar,
        h("div", { class: "dialog-buttons" }, execute, cancel),
      ]);
    }, { className: "confirm-dialog" });
    if (choice === "execute") {
      try {
        showResult(command, await api.post(`/api/v1/commands/confirm/${encodeURIComponent(result.token)}`));
      } catch (error) {
        showRefusal(command, error, member);
      }
      return;
    }
    if (choice === "expired") {
      show("cancelled", t("confirm.expired", { command: commandLabel(command) }));
      return;
    }
    try {
      await api.post(`/api/v1/commands/pending/${encodeURIComponent(result.token)}/cancel`, {});
    } catch (_error) {
      // expired meanwhile: nothing left to withdraw
    }
    show("cancelled", t("confirm.cancelled", { command: commandLabel(command) }));
  }

  async function send(command, args, member, comment, button) {
    button.disabled = true;
    show("running", t("commands.running", { command: commandLabel(command) }));
    try {
      const body = { arguments: args, comment };
      if (member) body.member = member;
      const result = await api.post(
        `/api/v1/devices/${encodeURIComponent(device.id)}/commands/${encodeURIComponent(command.name)}`,
        body,
      );
      if (result.outcome === "pending_confirmation") {
        await confirmSelection(command, result, member, argumentsText(command, args));
      } else {
        showResult(command, result);
      }
    } catch (error) {
      showRefusal(command, error, member);
    } finally {
      button.disabled = !command.permitted;
    }
  }

  const forms = device.commands.map((command) => {
    const schema = command.parameters || { properties: {} };
    const required = new Set(schema.required || []);
    const inputs = Object.entries(schema.properties || {}).map(([name, s]) => [
      name,
      parameterInput(command, name, s, required.has(name)),
    ]);
    let memberSelect = null;
    if (command.per) {
      memberSelect = h(
        "select",
        { id: `cmd-${command.name}-member`, name: "member" },
        (command.members || []).map((m) => option(m, m)),
      );
    }
    const comment = h("input", {
      id: `cmd-${command.name}-comment`,
      name: "comment",
      maxlength: "500",
      placeholder: t("commands.comment_hint"),
    });
    const button = h(
      "button",
      {
        type: "submit",
        class: ["primary", command.confirm ? "danger" : ""],
        id: `cmd-${command.name}`,
        dataset: { command: command.name },
        disabled: !command.permitted,
      },
      commandLabel(command),
    );
    const badges = [
      command.confirm ? h("span", { class: "badge" }, t("commands.needs_confirmation")) : null,
      command.two_person ? h("span", { class: "badge" }, t("commands.needs_approval")) : null,
      command.role !== "operator" ? h("span", { class: "badge" }, t(`role.${command.role}`)) : null,
    ];
    const form = h(
      "form",
      { class: "command", dataset: { command: command.name } },
      h("div", { class: "command-head" }, h("h4", {}, commandLabel(command)), badges),
      tx(command.doc) && tx(command.doc) !== commandLabel(command)
        ? h("p", { class: "command-doc" }, tx(command.doc))
        : null,
      memberSelect ? field(tOr(`commands.member.${command.per}`, command.per), memberSelect) : null,
      inputs.map(([, input]) => input.element),
      h("details", { class: "command-comment" }, h("summary", {}, t("commands.comment")), comment),
      h("div", { class: "command-send" }, button),
      command.permitted ? null : h("p", { class: "hint" }, t("commands.not_permitted", { role: t(`role.${command.role}`) })),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const args = {};
      try {
        for (const [name, input] of inputs) {
          const value = input.read();
          if (value !== undefined) args[name] = value;
        }
      } catch (error) {
        show("refused", t("commands.invalid"), [error.message]);
        return;
      }
      // The outcome shows under the form that was used, where the operator is looking.
      form.after(outcome);
      send(command, args, memberSelect ? memberSelect.value : null, comment.value.trim(), button);
    });
    return form;
  });

  return h(
    "section",
    { class: "commands panel", "aria-label": t("equipment.commands") },
    h("h3", {}, t("equipment.commands")),
    forms.length ? h("div", { class: "command-forms" }, forms) : h("p", { class: "empty" }, t("equipment.no_commands")),
    outcome,
    h("details", { class: "command-history" }, h("summary", {}, t("commands.history")), log),
  );
}

/** Notify, for screens that act on pending commands (approvals). */
export function resultNotice(result) {
  notify(outcomeWord(result.outcome), result.outcome === "succeeded" ? "success" : "info");
}
