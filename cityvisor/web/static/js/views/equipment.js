// Equipment: a tree by zone and family; one device's points live (value, unit, quality,
// age), its alarms, and its commands.

import * as api from "../api.js";
import { commandPanel } from "../commands.js";
import { h, replace, setClass, setText } from "../dom.js";
import { fmtAge, fmtDateTime, t, tx } from "../i18n.js";
import { deviceName, errorText, familyLabel, formatValue, pointLabel, qualityText } from "../format.js";
import { deviceAlarmCount, deviceStatus, state, zoneLabel } from "../state.js";
import { empty, priorityBadge } from "../ui.js";

const QUALITY_CLASSES = ["q-good", "q-uncertain", "q-bad"];


export function mount(root, route, ctx) {
  let selectedId = route.path[0] || null;
  let detail = null;
  let filterText = "";
  const stops = [];

  const filter = h("input", {
    type: "search",
    id: "equipment-filter",
    placeholder: t("equipment.filter"),
    "aria-label": t("equipment.filter"),
  });
  filter.addEventListener("input", () => {
    filterText = filter.value.trim().toLowerCase();
    renderTree();
  });
  const tree = h("div", { class: "tree", id: "equipment-tree" });
  const side = h("nav", { class: "equipment-tree panel", "aria-label": t("equipment.tree") }, filter, tree);
  const main = h("section", { class: "device-detail", id: "device-detail" });
  replace(root, h("div", { class: "split split-tree" }, side, main));

  function renderTree() {
    const open = new Set([...tree.querySelectorAll("details[open]")].map((d) => d.dataset.key));
    const first = !tree.childElementCount;
    const byZone = new Map();
    for (const device of state.devices.values()) {
      const text = `${device.id} ${device.name} ${device.type} ${device.tags.join(" ")}`.toLowerCase();
      if (filterText && !text.includes(filterText)) continue;
      if (!byZone.has(device.zone)) byZone.set(device.zone, new Map());
      const families = byZone.get(device.zone);
      if (!families.has(device.family)) families.set(device.family, []);
      families.get(device.family).push(device);
    }
    const zones = state.site.zones.map((z) => z.id).filter((z) => byZone.has(z));
    for (const zone of byZone.keys()) if (!zones.includes(zone)) zones.push(zone);
    const groups = zones.map((zone) => {
      const families = byZone.get(zone);
      const zoneKey = `zone:${zone}`;
      const count = [...families.values()].reduce((n, list) => n + list.length, 0);
      return h(
        "details",
        { dataset: { key: zoneKey }, open: first || filterText || open.has(zoneKey) },
        h("summary", {}, zoneLabel(zone, tx), h("span", { class: "muted" }, ` (${count})`)),
        [...families.keys()].sort().map((family) => {
          const familyKey = `${zone}/${family}`;
          return h(
            "details",
            { class: "family", dataset: { key: familyKey }, open: first || filterText || open.has(familyKey) },
            h("summary", {}, familyLabel(family)),
            h(
              "ul",
              {},
              families
                .get(family)
                .sort((a, b) => deviceName(a).localeCompare(deviceName(b)))
                .map((device) => {
                  const status = deviceStatus(device);
                  return h(
                    "li",
                    {},
                    h(
                      "a",
                      {
                        href: `#/equipment/${encodeURIComponent(device.id)}`,
                        class: ["device-link", `status-${status}`, device.id === selectedId ? "selected" : ""],
                        dataset: { device: device.id, status },
                        "aria-current": device.id === selectedId ? "true" : null,
                      },
                      h("span", { class: "dot", "aria-hidden": "true" }),
                      h("span", { class: "device-name" }, deviceName(device)),
                      deviceAlarmCount(device.id)
                        ? h("span", { class: "count", title: t("equipment.alarm_count") }, String(deviceAlarmCount(device.id)))
                        : null,
                      h("span", { class: "sr-only" }, ` ${t(`status.${status}`)}`),
                    ),
                  );
                }),
            ),
          );
        }),
      );
    });
    replace(tree, groups.length ? groups : empty(t("equipment.none")));
  }

  function showDevice() {
    if (detail) detail.close();
    detail = null;
    if (!selectedId) {
      replace(main, h("div", { class: "panel" }, empty(t("equipment.pick"))));
      return;
    }
    detail = deviceDetail(main, selectedId, ctx);
  }

  stops.push(
    state.events.on("devices", () => {
      renderTree();
      detail?.refreshDevice();
    }),
    state.events.on("alarms", (change) => {
      if (!change || !change.alarm || change.event?.kind === "raised" || !change.alarm.annunciated) renderTree();
      if (detail && (!change || !change.alarm || change.alarm.device_id === selectedId)) detail.refreshAlarms();
    }),
  );
  const ticker = setInterval(() => detail?.tick(), 1000);
  renderTree();
  showDevice();

  return {
    update(next) {
      const id = next.path[0] || null;
      if (id !== selectedId) {
        selectedId = id;
        renderTree();
        showDevice();
      }
    },
    unmount() {
      for (const stop of stops) stop();
      clearInterval(ticker);
      if (detail) detail.close();
    },
  };
}

const HINTS = { "equipment.col.read": "equipment.col.read_hint", "equipment.col.age": "equipment.col.age_hint" };

function deviceDetail(root, deviceId, ctx) {
  let device = null;
  let closed = false;
  let watch = null;
  let answeredMs = null; // when the equipment last answered (refreshed every few seconds)
  let ticks = 0;
  const cells = new Map(); // point id -> {point, row, value, quality, read, age, current}
  const answered = h("dd", { id: "device-answered" });
  const header = h("header", { class: "device-header panel" }, h("h2", {}, t("loading")));
  const alarmsBox = h("div", { class: "device-alarms" });
  const pointsBox = h("section", { class: "points panel", "aria-label": t("equipment.points") });
  const commandsBox = h("div", { class: "commands-box" });
  replace(root, header, alarmsBox, h("div", { class: "device-body" }, pointsBox, commandsBox));

  function renderHeader() {
    const summary = state.devices.get(deviceId) || device;
    const status = deviceStatus(summary);
    const communication = summary.communication;
    replace(
      header,
      h(
        "div",
        { class: "device-title" },
        h("span", { class: ["dot", `status-${status}`], "aria-hidden": "true" }),
        h("h2", { id: "device-name" }, deviceName(summary)),
        h("span", { class: ["status-tag", `status-${status}`], id: "device-status", dataset: { status } }, t(`status.${status}`)),
      ),
      h(
        "dl",
        { class: "facts facts-inline" },
        h("dt", {}, t("equipment.type")),
        h("dd", {}, tx(summary.label) || summary.type, h("span", { class: "muted" }, ` (${summary.type})`)),
        h("dt", {}, t("equipment.id")),
        h("dd", { class: "mono" }, summary.id),
        h("dt", {}, t("alarms.col.zone")),
        h("dd", {}, zoneLabel(summary.zone, tx)),
        summary.tags.length ? [h("dt", {}, t("equipment.tags")), h("dd", {}, summary.tags.join(", "))] : null,
        summary.location
          ? [
              h("dt", {}, t("equipment.location")),
              h("dd", {}, h("a", { href: `#/map?focus=${encodeURIComponent(summary.id)}` }, summary.location.map((c) => c.toFixed(5)).join(", "))),
            ]
          : null,
        h("dt", { title: t("equipment.col.read_hint") }, t("equipment.answered")),
        answered,
        device && device.pages && device.pages.length
          ? [
              h("dt", {}, t("equipment.pages")),
              h(
                "dd",
                { id: "device-pages" },
                device.pages.map((page, i) => [i ? " · " : null, h("a", { href: page.url, target: "_blank", rel: "noopener" }, tx(page.label) || page.url)]),
              ),
            ]
          : null,
        communication.restarts ? [h("dt", {}, t("equipment.restarts")), h("dd", {}, String(communication.restarts))] : null,
        !communication.online && communication.last_error
          ? [h("dt", {}, t("equipment.last_error")), h("dd", { class: "error-text" }, communication.last_error)]
          : null,
      ),
    );
  }

  function renderAlarms() {
    const mine = [...state.alarms.values()].filter((a) => a.device_id === deviceId);
    if (!mine.length) {
      replace(alarmsBox);
      return;
    }
    replace(
      alarmsBox,
      h(
        "ul",
        { class: "device-alarm-list panel", "aria-label": t("nav.alarms") },
        mine.map((alarm) =>
          h(
            "li",
            {},
            priorityBadge(alarm.priority, alarm.acked),
            " ",
            h("a", { href: `#/alarms/${encodeURIComponent(alarm.id)}` }, tx(alarm.message)),
            alarm.member ? ` · ${alarm.member}` : "",
            h("span", { class: "muted" }, ` — ${t(`state.${alarm.display_state}`)} ${fmtDateTime(alarm.raised_at)}`),
          ),
        ),
      ),
    );
  }

  function renderPoints() {
    cells.clear();
    const groups = new Map();
    for (const point of device.points) {
      const key = point.member || "";
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(point);
    }
    const body = [];
    for (const [member, points] of groups) {
      if (member) {
        body.push(h("tr", { class: "group-row" }, h("th", { colspan: "6", scope: "rowgroup" }, member)));
      }
      for (const point of points) {
        const value = h("td", { class: "value", dataset: { point: point.id } });
        const quality = h("td", { class: "quality" });
        const read = h("td", { class: "read" });
        const age = h("td", { class: "age" });
        const numeric = point.type === "float" || point.type === "int";
        const row = h(
          "tr",
          { class: "point-row", dataset: { pointRow: point.id } },
          h("th", { scope: "row", title: point.id }, tx(point.doc) || point.name, h("span", { class: "muted point-name" }, ` ${point.name}`)),
          value,
          quality,
          read,
          age,
          h(
            "td",
            { class: "actions" },
            numeric
              ? h(
                  "a",
                  {
                    href: `#/trends/${encodeURIComponent(point.id)}`,
                    class: "trend-link",
                    title: t("trends.open"),
                    "aria-label": `${t("trends.open")} — ${pointLabel(point)}`,
                  },
                  t("equipment.trend"),
                )
              : null,
          ),
        );
        body.push(row);
        const cell = { point, row, value, quality, read, age, current: point.current };
        cells.set(point.id, cell);
        showValue(cell);
      }
    }
    replace(
      pointsBox,
      h("h3", {}, t("equipment.points")),
      h(
        "table",
        { class: "grid points-table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["equipment.col.point", "equipment.col.value", "equipment.col.quality", "equipment.col.read", "equipment.col.age", ""].map((k) =>
              h("th", { scope: "col", title: HINTS[k] ? t(HINTS[k]) : null }, k ? t(k) : ""),
            ),
          ),
        ),
        h("tbody", {}, body),
      ),
    );
  }

  function showValue(cell) {
    const current = cell.current;
    const status = current?.quality?.status || "bad";
    setText(cell.value, formatValue(cell.point, current ? current.value : null));
    setClass(cell.row, QUALITY_CLASSES, `q-${status}`);
    cell.value.dataset.quality = status;
    cell.value.dataset.raw = current && current.value !== null ? String(current.value) : "";
    setText(cell.quality, status === "good" ? "" : qualityText(current.quality));
    cell.quality.dataset.quality = status;
    showAges(cell, Date.now());
  }

  // Two ages, said apart: since the equipment last answered (a steady value is fresh)
  // and since the value last changed (a frozen one shows here, with its quality).
  function showAges(cell, now) {
    const current = cell.current;
    const good = current && current.quality && current.quality.status === "good";
    const readAt = good && answeredMs ? Math.max(answeredMs, current.received_ts || 0) : null;
    setText(cell.read, readAt ? fmtAge(readAt, now) : good ? "—" : t("equipment.not_read"));
    cell.read.dataset.ms = readAt ? String(readAt) : "";
    setText(cell.age, current ? fmtAge(current.source_ts, now) : "—");
    cell.age.dataset.ms = current ? String(current.source_ts) : "";
  }

  function showAnswered(now) {
    setText(answered, answeredMs ? t("equipment.answered_ago", { age: fmtAge(answeredMs, now) }) : "—");
    answered.dataset.ms = answeredMs ? String(answeredMs) : "";
  }

  async function refreshAnswered() {
    try {
      const fresh = await api.get(`/api/v1/devices/${encodeURIComponent(deviceId)}`);
      if (!closed) answeredMs = fresh.communication.answered_ms;
    } catch (_error) {
      // the next refresh tries again; the ages shown keep growing meanwhile
    }
  }

  async function load() {
    try {
      device = await api.get(`/api/v1/devices/${encodeURIComponent(deviceId)}`);
    } catch (error) {
      replace(header, h("h2", {}, errorText(error)));
      return;
    }
    if (closed) return;
    answeredMs = device.communication.answered_ms;
    renderHeader();
    showAnswered(Date.now());
    renderAlarms();
    renderPoints();
    replace(commandsBox, commandPanel(device, () => device.points));
    const pattern = device.points.length
      ? `${device.zone}/${device.family}/${device.id}/**`
      : `${device.zone}/${device.family}/${device.id}`;
    watch = ctx.live.watch([pattern], (values) => {
      for (const value of values) {
        const cell = cells.get(value.id);
        if (!cell) continue;
        cell.current = value;
        showValue(cell);
      }
    });
  }
  load();

  return {
    refreshDevice() {
      if (device && !closed) renderHeader();
    },
    refreshAlarms() {
      if (device && !closed) renderAlarms();
    },
    tick() {
      ticks += 1;
      if (device && ticks % 3 === 0) refreshAnswered();
      const now = Date.now();
      showAnswered(now);
      for (const cell of cells.values()) showAges(cell, now);
    },
    close() {
      closed = true;
      if (watch) watch.close();
    },
  };
}
