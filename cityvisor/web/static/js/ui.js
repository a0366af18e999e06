// Small shared pieces: notices, modal dialogs, tables, the priority badge.

import { h } from "./dom.js";
import { t } from "./i18n.js";

/** A short notice in the corner (read out by screen readers), gone after a while. */
export function notify(text, kind = "info", seconds = 6) {
  const area = document.getElementById("notices");
  if (!area) return;
  const notice = h("div", { class: ["notice", `notice-${kind}`], role: "status" }, text);
  area.append(notice);
  setTimeout(() => notice.remove(), seconds * 1000);
}

/**
 * A modal dialog (native <dialog>: focus kept inside, Escape cancels).
 * `build(dialog, close)` fills it; resolves with what close(value) was given
 * (undefined when cancelled with Escape).
 */
export function modal(title, build, { className = "" } = {}) {
  return new Promise((resolve) => {
    const heading = h("h2", { class: "dialog-title" }, title);
    const dialog = h("dialog", { class: ["dialog", className], "aria-label": title }, heading);
    let result;
    const close = (value) => {
      result = value;
      if (dialog.open) dialog.close();
    };
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(result);
    });
    build(dialog, close);
    document.body.append(dialog);
    dialog.showModal();
    const first = dialog.querySelector("[autofocus], input, textarea, select, button");
    if (first) first.focus();
  });
}

/** A table: headers (strings) and rows (arrays of cells, or <tr>s). */
export function table(headers, rows, { className = "" } = {}) {
  return h(
    "table",
    { class: ["grid", className] },
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
    h(
      "tbody",
      {},
      rows.map((row) => (row instanceof Node ? row : h("tr", {}, row.map((cell) => h("td", {}, cell))))),
    ),
  );
}

/** The coloured priority badge: "CRITIQUE", "HAUTE"... */
export function priorityBadge(priority, acked = true) {
  return h(
    "span",
    { class: ["priority", `priority-${priority}`, acked ? "acked" : "unacked"] },
    t(`priority.${priority}`),
  );
}

/** A labelled form field. */
export function field(label, control, hint = null) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), control, hint);
}

/** An empty-state line. */
export function empty(text) {
  return h("p", { class: "empty" }, text);
}
