// The alarm list: sort and filter, then one alarm: acknowledge with a comment, shelve,
// unshelve, its operating procedure as a checklist, its camera evidence, its history.

import * as api from "../api.js";
import { clear, h, option, replace } from "../dom.js";
import { fmtAge, fmtDateTime, fmtDuration, t, tOr, tx } from "../i18n.js";
import { deviceName, errorText, formatValue } from "../format.js";
import { hasCameras, PRIORITIES, state, userMay, zoneLabel } from "../state.js";
import { empty, field, notify, priorityBadge } from "../ui.js";

const SCOPES = ["annunciated", "active", "all"];
const STATES = [
  "unack_active",
  "ack_active",
  "rtn_unack",
  "normal",
  "shelved",
  "suppressed",
  "out_of_service",
  "maintenance",
];
const SORTS = ["priority", "newest", "oldest"];
const SHELVE_DURATIONS = [900, 3600, 4 * 3600, 8 * 3600, 86400];

export function mount(root, route, ctx) {
  const filters = { scope: "annunciated", priority: "", zone: "", state: "", sort: "priority" };
  let selectedId = route.path[0] || null;
  let fetched = null; // alarms from the REST API when the scope is not "annunciated"
  let refetchTimer = null;
  let detail = null;
  const stops = [];

  function readQuery(query) {
    filters.scope = SCOPES.includes(query.get("scope")) ? query.get("scope") : "annunciated";
    filters.priority = PRIORITIES.includes(query.get("priority")) ? query.get("priority") : "";
    filters.zone = query.get("zone") || "";
    filters.state = STATES.includes(query.get("state")) ? query.get("state") : "";
    filters.sort = SORTS.includes(query.get("sort")) ? query.get("sort") : "priority";
  }
  readQuery(route.query);

  // -- toolbar ----------------------------------------------------------------
  const controls = {};
  const filterSelect = (name, values, labelOf, withAll = true) => {
    const control = h(
      "select",
      { id: `alarm-filter-${name}`, name },
      withAll ? option("", t("filter.all")) : null,
      values.map((v) => option(v, labelOf(v), v === filters[name])),
    );
    control.value = filters[name];
    controls[name] = control;
    control.addEventListener("change", () => {
      filters[name] = control.value;
      saveQuery();
      if (name === "scope") refetch(true);
      else renderList();
    });
    return control;
  };
  const toolbar = h(
    "div",
    { class: "toolbar" },
    field(t("alarms.scope"), filterSelect("scope", SCOPES, (s) => t(`alarms.scope.${s}`), false)),
    field(t("alarms.priority"), filterSelect("priority", PRIORITIES, (p) => t(`priority.${p}`))),
    field(
      t("alarms.zone"),
      filterSelect("zone", state.site.zones.map((z) => z.id), (z) => zoneLabel(z, tx)),
    ),
    field(t("alarms.state"), filterSelect("state", STATES, (s) => t(`state.${s}`))),
    field(t("alarms.sort"), filterSelect("sort", SORTS, (s) => t(`alarms.sort.${s}`), false)),
  );
  const summary = h("p", { class: "list-summary", id: "alarm-summary", "aria-live": "polite" });
  const tbody = h("tbody", { id: "alarm-rows" });
  const list = h(
    "section",
    { class: "alarm-list panel", "aria-label": t("alarms.list") },
    toolbar,
    summary,
    h(
      "table",
      { class: "grid alarms-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          [
            "alarms.col.priority",
            "alarms.col.time",
            "alarms.col.zone",
            "alarms.col.device",
            "alarms.col.message",
            "alarms.col.value",
            "alarms.col.state",
          ].map((key) => h("th", { scope: "col" }, t(key))),
        ),
      ),
      tbody,
    ),
  );
  const aside = h("aside", { class: "alarm-detail panel", id: "alarm-detail", "aria-live": "polite" });
  replace(root, h("div", { class: "split split-alarms" }, list, aside));

  function saveQuery() {
    ctx.replaceQuery({
      scope: filters.scope === "annunciated" ? "" : filters.scope,
      priority: filters.priority,
      zone: filters.zone,
      state: filters.state,
      sort: filters.sort === "priority" ? "" : filters.sort,
    });
  }

  // -- the list -----------------------------------------------------------------
  function currentAlarms() {
    const source = filters.scope === "annunciated" ? [...state.alarms.values()] : fetched || [];
    const shown = source.filter(
      (a) =>
        (!filters.priority || a.priority === filters.priority) &&
        (!filters.zone || a.zone === filters.zone) &&
        (!filters.state || a.display_state === filters.state),
    );
    const time = (a) => a.raised_at || a.cleared_at || 0;
    if (filters.sort === "newest") shown.sort((a, b) => time(b) - time(a) || a.id.localeCompare(b.id));
    else if (filters.sort === "oldest") shown.sort((a, b) => time(a) - time(b) || a.id.localeCompare(b.id));
    else
      shown.sort(
        (a, b) =>
          b.priority_level - a.priority_level ||
          Number(a.acked) - Number(b.acked) ||
          time(b) - time(a) ||
          a.id.localeCompare(b.id),
      );
    return shown;
  }

  function renderList() {
    const shown = currentAlarms();
    const rows = shown.map((alarm) => {
      const device = state.devices.get(alarm.device_id);
      const row = h(
        "tr",
        {
          class: [
            "alarm-row",
            `priority-row-${alarm.priority}`,
            alarm.acked ? "acked" : "unacked",
            alarm.active ? "active" : "inactive",
            alarm.id === selectedId ? "selected" : "",
          ],
          tabindex: "0",
          dataset: { alarm: alarm.id, state: alarm.display_state },
          "aria-selected": String(alarm.id === selectedId),
          onclick: () => select(alarm.id),
          onkeydown: (event) => {
            if (event.key === "Enter" || event.key === " ") {
              event.preventDefault();
              select(alarm.id);
            } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
              event.preventDefault();
              const next =
                event.key === "ArrowDown" ? row.nextElementSibling : row.previousElementSibling;
              if (next) next.focus();
            }
          },
        },
        h("td", {}, priorityBadge(alarm.priority, alarm.acked)),
        h("td", { class: "time" }, fmtDateTime(alarm.raised_at)),
        h("td", {}, zoneLabel(alarm.zone, tx)),
        h(
          "td",
          { class: "device", title: `${deviceName(device, alarm.device_id)}${alarm.member ? ` · ${alarm.member}` : ""}` },
          deviceName(device, alarm.device_id),
          alarm.member ? ` · ${alarm.member}` : "",
        ),
        h("td", { class: "message" }, tx(alarm.message)),
        h("td", { class: "value" }, formatValue(null, alarm.value)),
        h("td", { class: "state" }, h("span", { class: ["state-tag", `state-${alarm.display_state}`] }, t(`state.${alarm.display_state}`))),
      );
      return row;
    });
    replace(tbody, rows.length ? rows : h("tr", {}, h("td", { colspan: "7", class: "empty" }, t("alarms.none"))));
    replace(summary, t("alarms.summary", { n: shown.length, u: shown.filter((a) => !a.acked).length }));
  }

  async function refetch(now = false) {
    if (filters.scope === "annunciated") {
      fetched = null;
      renderList();
      return;
    }
    clearTimeout(refetchTimer);
    refetchTimer = setTimeout(
      async () => {
        try {
          const answer = await api.get("/api/v1/alarms", { scope: filters.scope });
          fetched = answer.alarms;
          renderList();
        } catch (error) {
          notify(errorText(error), "error");
        }
      },
      now ? 0 : 300,
    );
  }

  function select(id) {
    if (id === selectedId) {
      detail?.focus();
      return;
    }
    selectedId = id;
    const query = {};
    for (const [key, value] of parseQuery()) query[key] = value;
    ctx.navigate("alarms", [id], query);
  }

  function parseQuery() {
    const hash = window.location.hash;
    const index = hash.indexOf("?");
    return new URLSearchParams(index >= 0 ? hash.slice(index + 1) : "");
  }

  function showDetail() {
    if (detail) detail.close();
    detail = null;
    clear(aside);
    if (!selectedId) {
      aside.append(empty(t("alarms.pick")));
      return;
    }
    detail = alarmDetail(aside, selectedId, ctx);
  }

  stops.push(
    state.events.on("alarms", (change) => {
      if (filters.scope === "annunciated") renderList();
      else refetch();
      if (detail && change && change.alarm && change.alarm.id === selectedId) detail.update(change.alarm);
      if (detail && change && change.event && change.event.alarm === selectedId) detail.history();
    }),
    state.events.on("devices", renderList),
  );
  const ticker = setInterval(() => detail?.tick(), 1000);

  renderList();
  refetch(true);
  showDetail();

  return {
    update(next) {
      const scope = filters.scope;
      readQuery(next.query);
      for (const [name, control] of Object.entries(controls)) control.value = filters[name];
      if (scope !== filters.scope) refetch(true);
      const id = next.path[0] || null;
      if (id !== selectedId || !detail) {
        selectedId = id;
        showDetail();
      }
      renderList();
    },
    unmount() {
      for (const stop of stops) stop();
      clearInterval(ticker);
      clearTimeout(refetchTimer);
      if (detail) detail.close();
    },
  };
}

// --------------------------------------------------------------------------- one alarm

function alarmDetail(root, alarmId, ctx) {
  let alarm = null;
  let procedure = null;
  let closed = false;
  const objectUrls = [];
  const facts = h("div", { class: "alarm-facts" });
  const checklist = h("div", { class: "checklist", id: "procedure" });
  const actions = h("div", { class: "alarm-actions" });
  const evidence = h("div", { class: "evidence", id: "evidence" });
  const historyBox = h("div", { class: "alarm-history" });
  const heading = h("h2", { class: "detail-title", id: "alarm-title", tabindex: "-1" }, t("loading"));
  root.append(heading, facts, actions, checklist, evidence, historyBox);

  // -- actions: acknowledge, shelve, unshelve ----------------------------------
  const comment = h("textarea", {
    id: "ack-comment",
    name: "comment",
    rows: "2",
    maxlength: "1000",
    placeholder: t("alarms.ack.comment_hint"),
  });
  const ackButton = h("button", { type: "submit", class: "primary", id: "ack-button" }, t("alarms.ack"));
  const ackForm = h(
    "form",
    { class: "ack-form", id: "ack-form" },
    field(t("alarms.ack.comment"), comment),
    ackButton,
  );
  ackForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    ackButton.disabled = true;
    try {
      const answer = await api.post(`/api/v1/alarms/${encodeURIComponent(alarmId)}/ack`, {
        comment: comment.value.trim(),
      });
      comment.value = "";
      update(answer.alarm);
      notify(t("alarms.ack.done"), "success");
    } catch (error) {
      notify(errorText(error), "error");
    } finally {
      ackButton.disabled = false;
      renderActions();
    }
  });

  const duration = h(
    "select",
    { id: "shelve-duration", name: "duration" },
    SHELVE_DURATIONS.map((s) => option(String(s), fmtDuration(s), s === 3600)),
  );
  const reason = h("input", { id: "shelve-reason", name: "reason", maxlength: "1000", required: true });
  const shelveButton = h("button", { type: "submit", id: "shelve-button" }, t("alarms.shelve"));
  const shelveForm = h(
    "form",
    { class: "shelve-form", id: "shelve-form" },
    field(t("alarms.shelve.duration"), duration),
    field(t("alarms.shelve.reason"), reason),
    shelveButton,
  );
  shelveForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!reason.value.trim()) {
      reason.focus();
      return;
    }
    shelveButton.disabled = true;
    try {
      const answer = await api.post(`/api/v1/alarms/${encodeURIComponent(alarmId)}/shelve`, {
        duration: Number(duration.value),
        reason: reason.value.trim(),
      });
      reason.value = "";
      update(answer.alarm);
      notify(t("alarms.shelve.done"), "success");
    } catch (error) {
      notify(errorText(error), "error");
    } finally {
      shelveButton.disabled = false;
      renderActions();
    }
  });
  const unshelveButton = h(
    "button",
    {
      type: "button",
      id: "unshelve-button",
      onclick: async () => {
        unshelveButton.disabled = true;
        try {
          const answer = await api.post(`/api/v1/alarms/${encodeURIComponent(alarmId)}/unshelve`);
          update(answer.alarm);
          notify(t("alarms.unshelve.done"), "success");
        } catch (error) {
          notify(errorText(error), "error");
        } finally {
          unshelveButton.disabled = false;
          renderActions();
        }
      },
    },
    t("alarms.unshelve"),
  );

  function renderActions() {
    if (!alarm) return;
    const mayAck = userMay("operator", alarm.zone);
    const mayShelve = userMay("supervisor", alarm.zone);
    const parts = [];
    if (!alarm.acked) {
      ackButton.disabled = !mayAck;
      parts.push(ackForm);
      if (!mayAck) parts.push(h("p", { class: "hint" }, t("alarms.not_permitted")));
    }
    if (alarm.shelved) {
      unshelveButton.disabled = !mayAck;
      parts.push(
        h(
          "p",
          { class: "shelved-info" },
          t("alarms.shelved_until", {
            time: fmtDateTime(alarm.shelved_until),
            user: alarm.shelved_by || "—",
            reason: alarm.shelve_reason || "—",
          }),
        ),
        unshelveButton,
      );
    } else if (mayShelve && (alarm.active || !alarm.acked)) {
      parts.push(shelveForm);
    }
    replace(actions, parts);
  }

  // -- facts --------------------------------------------------------------------
  function renderFacts() {
    const device = state.devices.get(alarm.device_id);
    heading.textContent = tx(alarm.message);
    heading.dataset.alarm = alarm.id;
    const rows = [
      [t("alarms.col.priority"), priorityBadge(alarm.priority, alarm.acked)],
      [t("alarms.col.state"), h("span", { class: ["state-tag", `state-${alarm.display_state}`], id: "alarm-state", dataset: { state: alarm.display_state } }, t(`state.${alarm.display_state}`))],
      [
        t("alarms.col.device"),
        h("a", { href: `#/equipment/${encodeURIComponent(alarm.device_id)}` }, deviceName(device, alarm.device_id)),
        alarm.member ? ` · ${alarm.member}` : "",
      ],
      [t("alarms.col.zone"), zoneLabel(alarm.zone, tx)],
      [
        t("alarms.point"),
        h("a", { href: `#/trends/${encodeURIComponent(alarm.point_id)}`, title: t("trends.open") }, alarm.point_id),
      ],
      [t("alarms.condition"), alarm.condition],
      [t("alarms.col.value"), formatValue(null, alarm.value)],
      [t("alarms.raised"), fmtDateTime(alarm.raised_at), alarm.raised_at ? h("span", { class: "age", dataset: { since: alarm.raised_at } }, ` (${fmtAge(alarm.raised_at)})`) : ""],
      [t("alarms.cleared"), fmtDateTime(alarm.cleared_at)],
      [t("alarms.acked"), alarm.acked_at ? t("alarms.acked_by", { time: fmtDateTime(alarm.acked_at), user: alarm.acked_by || "—" }) : "—"],
    ];
    if (alarm.maintenance) rows.push([t("state.maintenance"), t("value.true")]);
    if (alarm.out_of_service) rows.push([t("state.out_of_service"), alarm.out_of_service_reason || "—"]);
    replace(
      facts,
      h(
        "dl",
        { class: "facts" },
        rows.map(([label, ...value]) => [h("dt", {}, label), h("dd", {}, ...value)]),
      ),
    );
  }

  // -- procedure checklist -----------------------------------------------------------
  function renderChecklist() {
    if (!alarm.procedure) {
      replace(checklist);
      return;
    }
    if (!procedure) {
      replace(checklist, h("h3", {}, t("alarms.procedure")), h("p", { class: "hint" }, t("alarms.procedure_missing", { id: alarm.procedure })));
      return;
    }
    const done = alarm.checklist?.steps || {};
    const mayTick = userMay("operator", alarm.zone);
    const items = procedure.steps.map((step, index) => {
      const state_ = done[String(index)];
      const box = h("input", {
        type: "checkbox",
        id: `step-${index}`,
        checked: Boolean(state_ && state_.done),
        disabled: !mayTick,
        dataset: { step: index },
      });
      box.addEventListener("change", async () => {
        box.disabled = true;
        try {
          const answer = await api.post(
            `/api/v1/alarms/${encodeURIComponent(alarmId)}/steps/${index}`,
            { done: box.checked },
          );
          update(answer.alarm);
        } catch (error) {
          box.checked = !box.checked;
          notify(errorText(error), "error");
        } finally {
          box.disabled = !mayTick;
        }
      });
      return h(
        "li",
        { class: ["step", state_ && state_.done ? "done" : ""] },
        h(
          "label",
          { for: `step-${index}` },
          box,
          h("span", { class: "step-text" }, tx(step)),
        ),
        state_ && state_.by
          ? h("span", { class: "step-by" }, t("alarms.step_by", { user: state_.by, time: fmtDateTime(state_.ts) }))
          : null,
      );
    });
    replace(
      checklist,
      h("h3", {}, t("alarms.procedure"), " ", h("span", { class: "muted" }, `${procedure.id} v${procedure.version}`)),
      h("p", { class: "procedure-title" }, tx(procedure.title)),
      h("ol", { class: "steps" }, items),
    );
  }

  // -- camera evidence ---------------------------------------------------------------
  async function loadEvidence() {
    if (!hasCameras()) return;
    try {
      const answer = await api.get("/api/v1/cameras/evidence", { alarm: alarmId });
      if (closed) return;
      if (!answer.evidence.length) {
        replace(evidence);
        return;
      }
      const figures = answer.evidence.slice(0, 6).map((row) => {
        const img = h("img", { alt: t("alarms.evidence_alt", { camera: row.camera }), class: "thumbnail" });
        const figure = h(
          "figure",
          { class: "evidence-item", dataset: { evidence: row.id } },
          img,
          h("figcaption", {}, `${deviceName(state.devices.get(row.camera), row.camera)} · ${fmtDateTime(row.taken_at || row.ts)}`),
        );
        if (row.error) {
          img.remove();
          figure.prepend(h("p", { class: "hint" }, row.error));
        } else {
          api
            .imageUrl(row.url)
            .then(({ url }) => {
              if (closed) {
                URL.revokeObjectURL(url);
                return;
              }
              objectUrls.push(url);
              img.src = url;
            })
            .catch(() => figure.classList.add("broken"));
        }
        return figure;
      });
      replace(evidence, h("h3", {}, t("alarms.evidence")), h("div", { class: "thumbnails" }, figures));
    } catch (_error) {
      replace(evidence);
    }
  }

  // -- history of this alarm -------------------------------------------------------
  let historyTimer = null;
  function history() {
    clearTimeout(historyTimer);
    historyTimer = setTimeout(async () => {
      try {
        const answer = await api.get("/api/v1/journal", { alarm: alarmId, limit: 15 });
        if (closed) return;
        replace(
          historyBox,
          h("h3", {}, t("alarms.history")),
          h(
            "ul",
            { class: "history", id: "alarm-history" },
            answer.entries.map((entry) =>
              h(
                "li",
                {},
                h("span", { class: "time" }, fmtDateTime(entry.ts)),
                " ",
                h(
                  "span",
                  { class: "kind", dataset: { transition: (entry.data && entry.data.kind) || entry.kind } },
                  entry.data && entry.data.kind
                    ? tOr(`wording.transition.${entry.data.kind}`, t(`journal.kind.${entry.kind}`))
                    : t(`journal.kind.${entry.kind}`),
                ),
                entry.user ? h("span", { class: "user" }, ` ${entry.user}`) : "",
                entry.data && entry.data.comment ? h("q", { class: "comment" }, entry.data.comment) : "",
              ),
            ),
          ),
        );
      } catch (_error) {
        // the list stays as it was
      }
    }, 200);
  }

  function update(next) {
    if (closed || !next || next.id !== alarmId) return;
    alarm = next;
    renderFacts();
    renderChecklist();
    renderActions();
  }

  (async () => {
    try {
      const answer = await api.get(`/api/v1/alarms/${encodeURIComponent(alarmId)}`);
      if (closed) return;
      procedure = answer.procedure;
      update(answer.alarm);
      loadEvidence();
      history();
    } catch (error) {
      heading.textContent = errorText(error);
    }
  })();

  return {
    update,
    history,
    focus() {
      heading.focus();
    },
    tick() {
      for (const element of root.querySelectorAll(".age[data-since]")) {
        element.textContent = ` (${fmtAge(Number(element.dataset.since))})`;
      }
    },
    close() {
      closed = true;
      clearTimeout(historyTimer);
      for (const url of objectUrls) URL.revokeObjectURL(url);
    },
  };
}
