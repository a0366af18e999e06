// The journal: who did what and what happened, searchable and paged (newest first).

import * as api from "../api.js";
import { h, option, replace } from "../dom.js";
import { fmtDateTime, t, tOr, utcToZonedInput, zonedToUtc } from "../i18n.js";
import { deviceName, errorText } from "../format.js";
import { state } from "../state.js";
import { empty, field } from "../ui.js";
import { deviceDetails, journalText } from "../wording.js";

export const KINDS = [
  "alarm",
  "ack",
  "shelve",
  "procedure_step",
  "maintenance",
  "out_of_service",
  "suppression",
  "flood",
  "command_sent",
  "command",
  "login",
  "logout",
  "login_failed",
  "user",
  "config",
  "evidence",
  "access",
  "badges",
  "opendata",
  "notification",
  "rule",
  "playbook",
  "note",
  "link",
];
const PAGE = 50;

export function mount(root, route, ctx) {
  const filters = {};
  const pages = []; // before_id of each page shown so far (null: the newest)
  let next = null;
  let closed = false;

  const kind = h("select", { id: "journal-kind", name: "kind" }, option("", t("filter.all")), KINDS.map((k) => option(k, t(`journal.kind.${k}`))));
  const device = h(
    "select",
    { id: "journal-device", name: "device" },
    option("", t("filter.all")),
    [...state.devices.values()]
      .sort((a, b) => deviceName(a).localeCompare(deviceName(b)))
      .map((d) => option(d.id, `${deviceName(d)} (${d.id})`)),
  );
  const user = h("input", { id: "journal-user", name: "user", autocomplete: "off", maxlength: "64" });
  const search = h("input", { id: "journal-search", name: "search", type: "search", maxlength: "200" });
  const from = h("input", { id: "journal-from", name: "from", type: "datetime-local" });
  const to = h("input", { id: "journal-to", name: "to", type: "datetime-local" });
  const submit = h("button", { type: "submit", class: "primary", id: "journal-apply" }, t("journal.search"));
  const reset = h("button", { type: "reset", id: "journal-reset" }, t("journal.reset"));
  const form = h(
    "form",
    { class: "toolbar", id: "journal-form", role: "search" },
    field(t("journal.kind"), kind),
    field(t("journal.device"), device),
    field(t("journal.user"), user),
    field(t("journal.text"), search),
    field(t("journal.from"), from),
    field(t("journal.to"), to),
    h("div", { class: "toolbar-buttons" }, submit, reset),
  );
  const tbody = h("tbody", { id: "journal-rows" });
  const newer = h("button", { type: "button", id: "journal-newer", onclick: () => go(-1) }, t("journal.newer"));
  const older = h("button", { type: "button", id: "journal-older", onclick: () => go(1) }, t("journal.older"));
  const pageInfo = h("span", { class: "muted", id: "journal-page" });
  const chain = h("p", { class: "muted", id: "journal-chain" });
  replace(
    root,
    h(
      "section",
      { class: "panel journal" },
      h("h2", {}, t("journal.title")),
      chain,
      form,
      h(
        "table",
        { class: "grid journal-table" },
        h(
          "thead",
          {},
          h("tr", {}, ["journal.col.time", "journal.col.kind", "journal.col.user", "journal.col.device", "journal.col.message"].map((k) => h("th", { scope: "col" }, t(k)))),
        ),
        tbody,
      ),
      h("div", { class: "pager" }, newer, pageInfo, older),
    ),
  );

  function readForm() {
    filters.kind = kind.value;
    filters.device = device.value;
    filters.user = user.value.trim();
    filters.search = search.value.trim();
    filters.from = from.value ? zonedToUtc(from.value) : null;
    filters.to = to.value ? zonedToUtc(to.value) : null;
  }

  function fillForm(query) {
    kind.value = query.get("kind") || "";
    device.value = query.get("device") || "";
    user.value = query.get("user") || "";
    search.value = query.get("search") || "";
    from.value = query.get("from") ? utcToZonedInput(Number(query.get("from"))) : "";
    to.value = query.get("to") ? utcToZonedInput(Number(query.get("to"))) : "";
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    readForm();
    ctx.replaceQuery(filters);
    pages.length = 0;
    load(null);
  });
  form.addEventListener("reset", () => {
    setTimeout(() => {
      readForm();
      ctx.replaceQuery({});
      pages.length = 0;
      load(null);
    });
  });

  function go(direction) {
    if (direction > 0 && next !== null) {
      load(next);
    } else if (direction < 0 && pages.length > 1) {
      pages.pop();
      const before = pages.pop();
      load(before);
    }
  }

  async function load(beforeId) {
    let answer;
    try {
      answer = await api.get("/api/v1/journal", {
        kind: filters.kind,
        device: filters.device,
        user: filters.user,
        search: filters.search,
        from: filters.from,
        to: filters.to,
        limit: PAGE,
        before_id: beforeId,
      });
    } catch (error) {
      replace(tbody, h("tr", {}, h("td", { colspan: "5", class: "error-text" }, errorText(error))));
      return;
    }
    // Labels of the entries' points, commands and alarms, so that every line is worded
    // in the screen's language.
    const detailsById = await deviceDetails(answer.entries.map((entry) => entry.device));
    if (closed) return;
    pages.push(beforeId);
    next = answer.next_before_id;
    const rows = answer.entries.map((entry) =>
      h(
        "tr",
        { dataset: { entry: entry.id, kind: entry.kind } },
        h("td", { class: "time" }, fmtDateTime(entry.ts)),
        h("td", {}, h("span", { class: ["kind-tag", `kind-${entry.kind}`] }, tOr(`journal.kind.${entry.kind}`, entry.kind))),
        h("td", { class: "journal-user" }, entry.user || "—"),
        h(
          "td",
          {},
          entry.device
            ? h("a", { href: `#/equipment/${encodeURIComponent(entry.device)}` }, deviceName(state.devices.get(entry.device), entry.device))
            : "—",
        ),
        messageCell(entry, detailsById.get(entry.device)),
      ),
    );
    replace(tbody, rows.length ? rows : h("tr", {}, h("td", { colspan: "5" }, empty(t("journal.none")))));
    newer.disabled = pages.length <= 1;
    older.disabled = next === null;
    pageInfo.textContent = t("journal.page", { n: pages.length });
  }

  function messageCell(entry, detail) {
    const worded = journalText(entry, detail);
    const comment = worded.comment || (entry.data && entry.data.comment);
    return h(
      "td",
      { class: "journal-message" },
      worded.worded ? worded.text : h("span", { lang: "en" }, worded.text),
      comment && !worded.text.includes(comment) ? [" ", h("q", { class: "comment" }, comment)] : null,
      entry.alarm ? [" ", h("a", { href: `#/alarms/${encodeURIComponent(entry.alarm)}`, class: "muted" }, t("journal.to_alarm"))] : null,
    );
  }

  fillForm(route.query);
  // Whether the journal's hash chain holds: one line, read-only.
  async function showChain() {
    let answer;
    try {
      answer = await api.get("/api/v1/journal/chain");
    } catch (error) {
      chain.textContent = errorText(error);
      return;
    }
    if (closed) return;
    chain.className = answer.ok ? "muted" : "error-text";
    chain.textContent = answer.ok
      ? t("journal.chain.ok", { rows: answer.rows })
      : t("journal.chain.broken", { id: answer.broken.id, rows: answer.rows });
  }

  readForm();
  load(null);
  showChain();

  return {
    unmount() {
      closed = true;
    },
  };
}
