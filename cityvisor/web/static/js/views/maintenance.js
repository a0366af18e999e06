// Planned maintenance: windows during which a device's or a zone's alarms are not annunciated.

import * as api from "../api.js";
import { h, option, replace } from "../dom.js";
import { fmtDateTime, t, tx, utcToZonedInput, zonedToUtc } from "../i18n.js";
import { deviceName, errorText } from "../format.js";
import { state, userMay, zoneLabel } from "../state.js";
import { empty, field, notify, table } from "../ui.js";

export function mount(root, route, ctx) {
  let closed = false;
  const mayPlan = userMay("supervisor", null);
  const listBox = h("div", { id: "maintenance-list" });

  const target = h(
    "select",
    { id: "maintenance-target", name: "target", required: true },
    h(
      "optgroup",
      { label: t("maintenance.devices") },
      [...state.devices.values()]
        .sort((a, b) => deviceName(a).localeCompare(deviceName(b)))
        .map((d) => option(`device:${d.id}`, `${deviceName(d)} (${d.id})`)),
    ),
    h(
      "optgroup",
      { label: t("maintenance.zones") },
      state.site.zones.map((z) => option(`zone:${z.id}`, zoneLabel(z.id, tx))),
    ),
  );
  const now = Date.now();
  const start = h("input", { type: "datetime-local", id: "maintenance-start", name: "start", value: utcToZonedInput(now) });
  const end = h("input", { type: "datetime-local", id: "maintenance-end", name: "end", required: true, value: utcToZonedInput(now + 2 * 3600e3) });
  const reason = h("input", { id: "maintenance-reason", name: "reason", required: true, maxlength: "1000" });
  const submit = h("button", { type: "submit", class: "primary", id: "maintenance-add", disabled: !mayPlan }, t("maintenance.add"));
  const form = h(
    "form",
    { class: "toolbar", id: "maintenance-form" },
    field(t("maintenance.target"), target),
    field(t("maintenance.start"), start),
    field(t("maintenance.end"), end),
    field(t("maintenance.reason"), reason),
    h("div", { class: "toolbar-buttons" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const [kind, id] = target.value.split(/:(.*)/s);
    const body = {
      start: zonedToUtc(start.value) ?? Date.now(),
      end: zonedToUtc(end.value),
      reason: reason.value.trim(),
    };
    body[kind === "zone" ? "zone" : "device_id"] = id;
    if (!body.reason || body.end === null) {
      notify(t("maintenance.incomplete"), "error");
      return;
    }
    submit.disabled = true;
    try {
      await api.post("/api/v1/maintenance", body);
      reason.value = "";
      notify(t("maintenance.added"), "success");
      load();
    } catch (error) {
      notify(errorText(error), "error");
    } finally {
      submit.disabled = !mayPlan;
    }
  });

  replace(
    root,
    h(
      "section",
      { class: "panel maintenance" },
      h("h2", {}, t("maintenance.title")),
      h("p", { class: "hint" }, t("maintenance.explain")),
      listBox,
      h("h3", {}, t("maintenance.plan")),
      mayPlan ? null : h("p", { class: "hint" }, t("maintenance.supervisor_only")),
      form,
    ),
  );

  async function load() {
    let answer;
    try {
      answer = await api.get("/api/v1/maintenance");
    } catch (error) {
      replace(listBox, empty(errorText(error)));
      return;
    }
    if (closed) return;
    if (!answer.windows.length) {
      replace(listBox, empty(t("maintenance.none")));
      return;
    }
    const nowMs = Date.now();
    replace(
      listBox,
      table(
        [t("maintenance.target"), t("maintenance.start"), t("maintenance.end"), t("maintenance.reason"), t("maintenance.by"), ""],
        answer.windows.map((w) => [
          w.device_id ? deviceName(state.devices.get(w.device_id), w.device_id) : `${t("maintenance.zone")} ${zoneLabel(w.zone, tx)}`,
          [fmtDateTime(w.start_ms), w.start_ms <= nowMs && nowMs < w.end_ms ? h("span", { class: "badge badge-on" }, t("maintenance.current")) : null],
          fmtDateTime(w.end_ms),
          w.reason,
          w.created_by,
          h(
            "button",
            {
              type: "button",
              class: "danger",
              disabled: !mayPlan,
              dataset: { window: w.id },
              onclick: async (event) => {
                event.target.disabled = true;
                try {
                  await api.del(`/api/v1/maintenance/${encodeURIComponent(w.id)}`);
                  notify(t("maintenance.removed"), "success");
                } catch (error) {
                  notify(errorText(error), "error");
                }
                load();
              },
            },
            w.start_ms <= nowMs ? t("maintenance.end_now") : t("maintenance.cancel"),
          ),
        ]),
        { className: "maintenance-table" },
      ),
    );
  }

  load();
  const stop = state.events.on("alarms", (change) => {
    if (change?.event?.kind?.startsWith("maintenance")) load();
  });
  return {
    unmount() {
      closed = true;
      stop();
    },
  };
}
