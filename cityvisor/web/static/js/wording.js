// What happened, told in the screen's language: journal entries, command outcomes and
// interlock refusals are worded here from their data and the devices' declared fr/en
// labels (points, commands, alarms), never from the server's English summary. What
// the HMI cannot word (a plugin's own journal kind) is shown as written, marked
// lang="en" so that a screen reader says it in English.

import * as api from "./api.js";
import { fmtDuration, t, tOr, tx } from "./i18n.js";
import { commandLabel, formatValue, pointLabel, qualityText } from "./format.js";
import { state, zoneLabel } from "./state.js";

const details = new Map(); // device id -> Promise of its detail (points, commands, alarms)

/** A device's detail (points, commands, alarms with their labels), fetched once per page. */
export function deviceDetail(deviceId) {
  if (!deviceId) return Promise.resolve(null);
  let found = details.get(deviceId);
  if (!found) {
    found = api.get(`/api/v1/devices/${encodeURIComponent(deviceId)}`).catch(() => {
      details.delete(deviceId); // gone or not permitted: try again next time
      return null;
    });
    details.set(deviceId, found);
  }
  return found;
}

/** The details of every device in `ids`, as a Map (missing ones left out). */
export async function deviceDetails(ids) {
  const unique = [...new Set(ids.filter(Boolean))];
  const answers = await Promise.all(unique.map(deviceDetail));
  const map = new Map();
  unique.forEach((id, i) => {
    if (answers[i]) map.set(id, answers[i]);
  });
  return map;
}

/** A command outcome as a word: "exécutée", "refusée"... */
export function outcomeWord(outcome) {
  return tOr(`outcome.${outcome}`, outcome);
}

/** "bad(comm_failure)" (as the journal keeps it) -> {status, reason}. */
function parseQuality(text) {
  if (!text || typeof text !== "string") return null;
  const match = /^(\w+)(?:\((\w*)\))?$/.exec(text);
  return match ? { status: match[1], reason: match[2] || "" } : null;
}

function findPoint(detail, pointId) {
  if (!detail || !pointId) return null;
  return (detail.points || []).find((p) => p.id === pointId || p.name === pointId) || null;
}

/** Why an interlock refused: "Réservoir en maintenance (Maintenance = Oui)". */
export function interlockText(interlock, detail) {
  if (!interlock) return "";
  const reason = tx(interlock.reason) || t("wording.interlock");
  const point = findPoint(detail, interlock.point);
  const name = point ? pointLabel(point) : interlock.point;
  let value = interlock.value === null || interlock.value === undefined ? t("wording.unknown_value") : formatValue(point, interlock.value);
  const quality = parseQuality(interlock.quality);
  if (quality && quality.status !== "good") value += ` (${qualityText(quality)})`;
  return t("wording.interlock_reason", { reason, point: name, value });
}

/** A command's arguments with their labels and units: "Niveau visé = 30 %". */
export function argumentsText(command, args) {
  if (!args || !Object.keys(args).length) return "";
  const properties = (command && command.parameters && command.parameters.properties) || {};
  return Object.entries(args)
    .map(([name, value]) => {
      const schema = properties[name] || {};
      const label = tx(schema["x-doc"]) || name;
      let shown;
      if (typeof value === "boolean") shown = value ? t("value.true") : t("value.false");
      else if (typeof value === "number") shown = formatValue({ type: schema.type === "integer" ? "int" : "float", unit: schema["x-unit"] || "" }, value);
      else shown = String(value);
      return `${label} = ${shown}`;
    })
    .join(", ");
}

/** The reason a command did not run, in words (interlock, the refusal's own fr/en text). */
export function refusalText(body, detail) {
  if (!body) return "";
  if (body.interlock) return t("wording.interlocked", { reason: interlockText(body.interlock, detail) });
  const code = body.code || body.error;
  return tx(body.reason || body.text) || (code ? tOr(`error.${code}`, code) : "");
}

function commandIn(detail, name) {
  return detail ? (detail.commands || []).find((c) => c.name === name) || null : null;
}

/** A group order's selector in words: "Centre-ville, Éclairage public". */
export function selectorText(selector) {
  return Object.entries(selector || {})
    .map(([key, value]) => (key === "zone" ? zoneLabel(value, tx) : key === "family" ? tOr(`family.${value}`, value) : `${key} ${value}`))
    .join(", ");
}

function commandEntry(entry, detail) {
  const data = entry.data || {};
  const command = commandIn(detail, data.command);
  const label = command ? commandLabel(command) : data.command || "?";
  // An order journaled before it is sent has no outcome yet.
  const outcome = entry.kind === "command_sent" ? t("wording.sending") : outcomeWord(data.outcome);
  if (data.selector) {
    const criteria = selectorText(data.selector);
    return t("wording.group_command", { command: label, criteria, n: data.targets ?? 0, outcome });
  }
  const target = data.member ? `${label} (${data.member})` : label;
  const parts = [t("wording.command", { command: target, outcome })];
  const args = argumentsText(command, data.arguments);
  if (args) parts.push(args);
  if (data.interlock || (data.reason && data.outcome === "refused")) {
    parts.push(refusalText({ ...data, error: data.code }, detail));
  }
  if (data.approver) parts.push(t("commands.approved_by", { user: data.approver }));
  return parts.join(" — ");
}

const ALARM_TRANSITIONS = new Set([
  "raised",
  "cleared",
  "acknowledged",
  "shelved",
  "unshelved",
  "suppressed",
  "unsuppressed",
  "out_of_service",
  "in_service",
  "maintenance_started",
  "maintenance_ended",
  "procedure_step",
]);

function alarmName(entry, detail) {
  const alarm = detail ? (detail.alarms || []).find((a) => a.id === entry.alarm) : null;
  if (alarm) return tx(alarm.message) || alarm.name;
  return entry.alarm ? entry.alarm.split(":").pop() : "";
}

function transitionEntry(entry, detail) {
  const data = entry.data || {};
  const kind = data.kind;
  const inner = data.data || {};
  if (kind === "flood_started" || kind === "flood_ended") {
    const zone = zoneLabel(inner.zone, tx);
    return t(`wording.${kind}`, { zone, n: inner.raised ?? data.value ?? 0, duration: fmtDuration(inner.window_s ?? 600) });
  }
  if (kind === "maintenance_added" || kind === "maintenance_removed") {
    const where = inner.device_id
      ? state.devices.get(inner.device_id)?.name || inner.device_id
      : zoneLabel(inner.zone, tx);
    return t(`wording.${kind}`, { target: where });
  }
  if (!ALARM_TRANSITIONS.has(kind)) return null;
  const key = kind === "procedure_step" && inner.done === false ? "procedure_step_undone" : kind;
  let text = t(`wording.alarm.${key}`, { alarm: alarmName(entry, detail), n: (inner.step ?? 0) + 1 });
  if (kind === "raised" && data.annunciated === false) text += ` (${t("wording.not_annunciated")})`;
  return text;
}

function configEntry(entry) {
  const data = entry.data || {};
  if (data.event === "started" || /^hub started\b/.test(entry.message)) {
    const counts = /(\d+) devices, (\d+) points/.exec(entry.message) || [];
    return t("wording.hub_started", { devices: data.devices ?? counts[1] ?? "?", points: data.points ?? counts[2] ?? "?" });
  }
  if (data.event === "stopped" || entry.message === "hub stopped") return t("wording.hub_stopped");
  return null;
}

function notificationEntry(entry) {
  const data = entry.data || {};
  if (!data.channel) return null;
  return t(data.outcome === "sent" ? "wording.notification_sent" : "wording.notification_failed", {
    alert: data.alert || "?",
    channel: tOr(`wording.channel.${data.channel}`, data.channel),
    stage: tOr(`wording.stage.${data.stage}`, data.stage || "?"),
    n: data.attempts ?? 1,
  });
}

function ruleEntry(entry) {
  const data = entry.data || {};
  if (!data.rule) return null;
  if (data.enabled !== undefined) {
    return t(data.enabled ? "wording.rule_enabled" : "wording.rule_disabled", { rule: data.rule, user: entry.user || "?" });
  }
  if (data.failures) return t("wording.rule_failed", { rule: data.rule, n: data.failures.length });
  if (data.values) return t("wording.rule_fired", { rule: data.rule });
  return null;
}

function playbookEntry(entry) {
  const data = entry.data || {};
  const values = { playbook: data.playbook || "?", run: data.run ?? "?", user: entry.user || "?" };
  switch (data.event) {
    case "started":
      return t("wording.playbook_started", values);
    case "step":
      return t("wording.playbook_step", {
        ...values,
        step: (data.step ?? 0) + 1,
        result: tOr(`wording.playbook_result.${data.result}`, data.result || "?"),
      });
    case "stopped":
      return t("wording.playbook_stopped", { ...values, state: tOr(`wording.playbook_result.${data.state}`, data.state || "?") });
    case "undo_started":
      return t("wording.playbook_undo_started", values);
    case "undone":
      return t("wording.playbook_undone", values);
    case "action":
      return t("wording.playbook_action", { ...values, action: tOr(`wording.playbook_action.${data.action}`, data.action || "?") });
    default:
      return null;
  }
}

function opendataEntry(entry) {
  const data = entry.data || {};
  switch (data.via) {
    case "startup":
      return t("wording.opendata_started", { datasets: Object.keys(data.datasets || {}).join(", ") || "—" });
    case "http":
      return t("wording.opendata_served", { file: `${data.dataset || "?"}/${data.file || "?"}` });
    case "export":
      return t("wording.opendata_exported", { n: (data.files || []).length });
    case "broker":
      return data.errors ? t("wording.opendata_push_failed") : t("wording.opendata_pushed", { n: (data.entities || []).length });
    default:
      return null;
  }
}

function accessEntry(entry) {
  const data = entry.data || {};
  if (data.granted === undefined) return null;
  const reason = tOr(`wording.access_reason.${String(data.reason || "").replace(/ /g, "_")}`, data.reason || "");
  return t(data.granted ? "wording.access_granted" : "wording.access_denied", { badge: data.badge || "?", reason });
}

/**
 * The text of a journal entry in the current language; `detail` is its device's detail
 * (for the labels of its points, commands and alarms). Returns {text, worded}: `worded`
 * false when the entry's own (English) message had to be used.
 */
export function journalText(entry, detail) {
  const data = entry.data || {};
  let text = null;
  switch (entry.kind) {
    case "command":
    case "command_sent":
      text = data.command || data.selector ? commandEntry(entry, detail) : null;
      break;
    case "opendata":
      text = opendataEntry(entry);
      break;
    case "notification":
      text = notificationEntry(entry);
      break;
    case "rule":
      text = ruleEntry(entry);
      break;
    case "playbook":
      text = playbookEntry(entry);
      break;
    case "note":
      // A rule's note, in the words its author wrote: shown as written, in the site's language.
      text = entry.message;
      break;
    case "login":
      text = t("wording.login", { user: entry.user || "?" });
      break;
    case "logout":
      text = t("wording.logout", { user: entry.user || "?" });
      break;
    case "login_failed":
      text = t("wording.login_failed", { reason: tOr(`wording.login_reason.${data.reason}`, data.reason || "") });
      break;
    case "config":
      text = configEntry(entry);
      break;
    case "evidence":
      text = data.evidence !== undefined ? t("wording.evidence", { reason: tOr(`wording.evidence_reason.${data.reason}`, data.reason || "") }) : null;
      break;
    case "access":
      text = accessEntry(entry);
      break;
    default:
      text = data.kind ? transitionEntry(entry, detail) : null;
  }
  if (text === null) return { text: entry.message, worded: false };
  if (data.comment && !text.includes(data.comment)) return { text, worded: true, comment: data.comment };
  return { text, worded: true };
}
