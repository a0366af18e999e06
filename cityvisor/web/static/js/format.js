// How values, qualities and outcomes read on screen.

import { fmtNumber, t, tOr, tx } from "./i18n.js";

/** A point's value with its unit and enum labels: "42,5 %", "filling", "Oui". */
export function formatValue(point, value) {
  if (value === null || value === undefined) return "—";
  if (point && point.labels && (typeof value === "number" || typeof value === "string")) {
    const label = point.labels[String(value)];
    if (label !== undefined) return tOr(`enum.${label}`, label);
  }
  if (typeof value === "boolean") return value ? t("value.true") : t("value.false");
  if (typeof value === "number") {
    const digits = point && point.type === "int" ? 0 : Math.abs(value) >= 1000 ? 1 : 2;
    const text = fmtNumber(value, digits);
    return point && point.unit ? `${text} ${point.unit}` : text;
  }
  const text = String(value);
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

/** "bad" / "uncertain" / "good" and its reason, in words. */
export function qualityText(quality) {
  if (!quality || quality.status === "good") return t("quality.good");
  const reason = quality.reason ? tOr(`reason.${quality.reason}`, quality.reason) : "";
  const status = t(`quality.${quality.status}`);
  return reason ? `${status}${t("punct.colon")}${reason}` : status;
}

/** A point's label: its description in the current language, else its name (and member). */
export function pointLabel(point) {
  const label = tx(point.doc) || point.name;
  return point.member ? `${point.member} · ${label}` : label;
}

/** A command's label in the current language, else its name. */
export function commandLabel(command) {
  return tx(command.label) || command.name;
}

/** A family's name: known families are translated, others shown as they are. */
export function familyLabel(family) {
  return tOr(`family.${family}`, family);
}

/** A device's display name. */
export function deviceName(device, fallbackId = "") {
  if (!device) return fallbackId;
  return device.name || device.id;
}

/** The text of a command refusal or error answer (the API's fr/en text when it has one). */
export function errorText(error) {
  const body = error && error.body ? error.body : {};
  if (body.text && (body.text.fr || body.text.en)) return tx(body.text);
  if (error && error.status === 0) return t("error.network");
  const known = tOr(`error.${body.error}`, "");
  let text = known || body.message || (error && error.message) || t("error.unknown");
  if (Array.isArray(body.problems) && body.problems.length) {
    text += t("punct.colon") + body.problems.join(" ; ");
  }
  return text;
}
