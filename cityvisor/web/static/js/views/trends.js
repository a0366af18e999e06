// Trends: a point's history over a chosen range, min/avg/max per bucket (uPlot).

import uPlot from "../../vendor/uplot-1.6.32/uPlot.esm.js";
import * as api from "../api.js";
import { h, option, replace } from "../dom.js";
import {
  fmtClock,
  fmtDateTime,
  fmtNumber,
  getTimeZone,
  t,
  utcToZonedInput,
  zonedToUtc,
} from "../i18n.js";
import { deviceName, errorText, pointLabel } from "../format.js";
import { state } from "../state.js";
import { empty, field } from "../ui.js";

const RANGES = { "15m": 900e3, "1h": 3600e3, "6h": 6 * 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 };
const BUCKETS = [500, 1e3, 2e3, 5e3, 10e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 21600e3, 86400e3];
const TARGET_BUCKETS = 400;

/** The bucket width (ms) that gives about TARGET_BUCKETS buckets over the range. */
export function bucketFor(spanMs) {
  return BUCKETS.find((b) => spanMs / b <= TARGET_BUCKETS) || BUCKETS[BUCKETS.length - 1];
}

/** Labels of the time axis in the site's zone: "14:05", with the day when the range is long. */
function timeLabels(splits, spanMs) {
  const seconds = spanMs <= 15 * 60e3;
  const days = spanMs > 36 * 3600e3;
  return splits.map((s) => fmtClock(s * 1000, { seconds, days }));
}

export function mount(root, route, ctx) {
  let pointId = route.path[0] || "";
  let rangeName = RANGES[route.query.get("range")] ? route.query.get("range") : "1h";
  let custom = null; // {from, to} when the range is custom
  if (route.query.get("from") && route.query.get("to")) {
    custom = { from: Number(route.query.get("from")), to: Number(route.query.get("to")) };
    rangeName = "custom";
  }
  let plot = null;
  let points = [];
  let refreshTimer = null;
  let closed = false;
  let resizeObserver = null;

  const pointSelect = h("select", { id: "trend-point", name: "point" }, option("", t("trends.pick_point")));
  const rangeSelect = h(
    "select",
    { id: "trend-range", name: "range" },
    [...Object.keys(RANGES), "custom"].map((r) => option(r, t(`trends.range.${r}`), r === rangeName)),
  );
  const fromInput = h("input", { type: "datetime-local", id: "trend-from", name: "from" });
  const toInput = h("input", { type: "datetime-local", id: "trend-to", name: "to" });
  const customBox = h("div", { class: "custom-range" }, field(t("trends.from"), fromInput), field(t("trends.to"), toInput));
  const liveBox = h("input", { type: "checkbox", id: "trend-live", checked: true });
  const apply = h("button", { type: "submit", class: "primary", id: "trend-apply" }, t("trends.show"));
  const form = h(
    "form",
    { class: "toolbar", id: "trend-form" },
    field(t("trends.point"), pointSelect),
    field(t("trends.range"), rangeSelect),
    customBox,
    h("label", { class: "check" }, liveBox, " ", t("trends.live")),
    apply,
  );
  const title = h("h2", { id: "trend-title" }, t("trends.title"));
  const info = h("p", { class: "hint", id: "trend-info", "aria-live": "polite" });
  const chartBox = h("div", { class: "chart", id: "trend-chart" });
  replace(root, h("section", { class: "panel trends" }, title, form, info, chartBox));

  function showCustom() {
    customBox.hidden = rangeSelect.value !== "custom";
    if (rangeSelect.value === "custom" && !fromInput.value) {
      const to = Date.now();
      fromInput.value = utcToZonedInput(to - RANGES["1h"]);
      toInput.value = utcToZonedInput(to);
    }
  }
  if (custom) {
    fromInput.value = utcToZonedInput(custom.from);
    toInput.value = utcToZonedInput(custom.to);
  }
  showCustom();
  rangeSelect.addEventListener("change", () => {
    showCustom();
    if (rangeSelect.value !== "custom") form.requestSubmit();
  });
  pointSelect.addEventListener("change", () => form.requestSubmit());
  liveBox.addEventListener("change", schedule);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    pointId = pointSelect.value;
    rangeName = rangeSelect.value;
    custom = null;
    if (rangeName === "custom") {
      const from = zonedToUtc(fromInput.value);
      const to = zonedToUtc(toInput.value);
      if (from === null || to === null || to <= from) {
        info.textContent = t("trends.bad_range");
        return;
      }
      custom = { from, to };
    }
    const path = pointId ? [pointId] : [];
    const query = custom ? { range: "custom", from: custom.from, to: custom.to } : { range: rangeName };
    ctx.navigate("trends", path, query);
  });

  async function loadPoints() {
    try {
      const answer = await api.get("/api/v1/points", { pattern: "**" });
      points = answer.points.filter((p) => p.type === "float" || p.type === "int");
    } catch (error) {
      info.textContent = errorText(error);
      return;
    }
    if (closed) return;
    const byDevice = new Map();
    for (const point of points) {
      if (!byDevice.has(point.device_id)) byDevice.set(point.device_id, []);
      byDevice.get(point.device_id).push(point);
    }
    replace(
      pointSelect,
      option("", t("trends.pick_point")),
      [...byDevice.entries()].map(([deviceId, list]) =>
        h(
          "optgroup",
          { label: deviceName(state.devices.get(deviceId), deviceId) },
          list.map((p) => option(p.id, `${pointLabel(p)}${p.unit ? ` (${p.unit})` : ""}`, p.id === pointId)),
        ),
      ),
    );
    pointSelect.value = pointId;
  }

  function range() {
    if (custom) return custom;
    const to = Date.now();
    return { from: to - RANGES[rangeName], to };
  }

  async function draw() {
    clearTimeout(refreshTimer);
    if (!pointId) {
      replace(chartBox, empty(t("trends.pick_point")));
      title.textContent = t("trends.title");
      return;
    }
    const point = points.find((p) => p.id === pointId);
    title.textContent = point ? `${deviceName(state.devices.get(point.device_id), point.device_id)} — ${pointLabel(point)}` : pointId;
    const { from, to } = range();
    const bucket = bucketFor(to - from);
    let answer;
    try {
      answer = await api.get(`/api/v1/points/${api.pointPath(pointId)}/history`, { from, to, bucket: `${bucket}` });
    } catch (error) {
      info.textContent = errorText(error);
      replace(chartBox, empty(errorText(error)));
      return;
    }
    if (closed) return;
    const buckets = answer.buckets || [];
    const xs = [];
    const avg = [];
    const min = [];
    const max = [];
    for (const b of buckets) {
      xs.push((b.start + bucket / 2) / 1000);
      avg.push(b.avg);
      min.push(b.min);
      max.push(b.max);
    }
    info.textContent = t("trends.info", {
      n: buckets.length,
      bucket: bucket >= 1000 ? `${fmtNumber(bucket / 1000, 1)} s` : `${bucket} ms`,
      from: fmtDateTime(from),
      to: fmtDateTime(to),
      zone: getTimeZone(),
    });
    chartBox.dataset.buckets = String(buckets.length);
    chartBox.dataset.point = pointId;
    const unit = point?.unit || "";
    const data = [xs, min, avg, max];
    const width = Math.max(300, chartBox.clientWidth || 800);
    const height = Math.max(240, Math.min(560, Math.round(window.innerHeight - chartBox.getBoundingClientRect().top - 40)));
    if (plot && plot.series.length === 4 && plot.__point === pointId) {
      plot.setData(data);
      plot.setScale("x", { min: from / 1000, max: to / 1000 });
    } else {
      if (plot) plot.destroy();
      replace(chartBox);
      if (!buckets.length) chartBox.append(empty(t("trends.no_data")));
      const zone = getTimeZone();
      const value = (u, v) => (v === null || v === undefined ? "—" : `${fmtNumber(v)}${unit ? ` ${unit}` : ""}`);
      plot = new uPlot(
        {
          width,
          height,
          tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), zone),
          scales: { x: { time: true, min: from / 1000, max: to / 1000 } },
          axes: [
            {
              stroke: "#c9d1d9",
              grid: { stroke: "#2d333b" },
              ticks: { stroke: "#2d333b" },
              size: 54,
              values: (u, splits) => timeLabels(splits, to - from),
            },
            {
              stroke: "#c9d1d9",
              grid: { stroke: "#2d333b" },
              ticks: { stroke: "#2d333b" },
              size: 70,
              values: (u, splits) => splits.map((v) => `${fmtNumber(v)}${unit ? ` ${unit}` : ""}`),
            },
          ],
          series: [
            { label: t("trends.time"), value: (u, v) => (v === null ? "—" : fmtDateTime(v * 1000)) },
            { label: t("trends.min"), stroke: "#5b8bd9", width: 1, dash: [4, 4], value },
            { label: t("trends.avg"), stroke: "#4cc9f0", width: 2, fill: "rgba(76, 201, 240, 0.08)", value },
            { label: t("trends.max"), stroke: "#f4a261", width: 1, dash: [4, 4], value },
          ],
          legend: { live: true },
          cursor: { drag: { x: true, y: false } },
        },
        data,
        chartBox,
      );
      plot.__point = pointId;
      plot.root.classList.add("uplot-dark");
    }
    schedule();
  }

  function schedule() {
    clearTimeout(refreshTimer);
    if (!closed && liveBox.checked && !custom && pointId) refreshTimer = setTimeout(draw, 5000);
  }

  if (typeof ResizeObserver !== "undefined") {
    resizeObserver = new ResizeObserver(() => {
      if (plot && chartBox.clientWidth) plot.setSize({ width: chartBox.clientWidth, height: plot.height });
    });
    resizeObserver.observe(chartBox);
  }

  (async () => {
    await loadPoints();
    await draw();
  })();

  return {
    update(next) {
      pointId = next.path[0] || "";
      rangeName = RANGES[next.query.get("range")] ? next.query.get("range") : next.query.get("range") === "custom" ? "custom" : "1h";
      custom = rangeName === "custom" && next.query.get("from") ? { from: Number(next.query.get("from")), to: Number(next.query.get("to")) } : null;
      if (rangeName === "custom" && !custom) rangeName = "1h";
      pointSelect.value = pointId;
      rangeSelect.value = rangeName;
      showCustom();
      draw();
    },
    unmount() {
      closed = true;
      clearTimeout(refreshTimer);
      if (resizeObserver) resizeObserver.disconnect();
      if (plot) plot.destroy();
    },
  };
}
