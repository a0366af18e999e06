// Trends: the history of one or several points over a chosen range (uPlot). Gaps
// (the device did not answer) are gaps, steps are steps, axes fit their labels, and
// the data shown can be taken away as CSV.

import uPlot from "../../vendor/uplot-1.6.32/uPlot.esm.js";
import * as api from "../api.js";
import { h, option, replace } from "../dom.js";
import {
  fmtClock,
  fmtDateTime,
  fmtIso,
  fmtNumber,
  getTimeZone,
  t,
  tx,
  utcToZonedInput,
  zonedToUtc,
} from "../i18n.js";
import { deviceName, errorText, familyLabel, formatValue, pointLabel } from "../format.js";
import { state, zoneLabel } from "../state.js";
import { align, axisLabels, bucketSeries, csv, isStepped, rawSeries } from "../series.js";
import { empty, field } from "../ui.js";

const RANGES = { "15m": 900e3, "1h": 3600e3, "6h": 6 * 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 };
const BUCKETS = [500, 1e3, 2e3, 5e3, 10e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 21600e3, 86400e3];
const TARGET_BUCKETS = 400;
const RAW_LIMIT = 5000; // past this many changes in the range, min/avg/max per interval
const MAX_POINTS = 6;
const MAX_RESULTS = 60;
const LOOK_BACK_MS = 30 * 86400e3; // how far back the value in force at the start is looked for
const COLOURS = ["#4cc9f0", "#f4a261", "#90e0a0", "#e5989b", "#c77dff", "#ffd166"];

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

/** Lower case, accents gone: "Armoire Élysée" and "armoire elysee" match. */
function fold(text) {
  return String(text || "")
    .normalize("NFD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase();
}

/** An axis as wide as its longest label (uPlot calls it with the labels it will draw). */
function fitAxis(self, values, axisIndex, cycle) {
  const axis = self.axes[axisIndex];
  if (cycle > 1 && axis._size) return axis._size;
  const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
  self.ctx.font = axis.font[0];
  const width = longest ? self.ctx.measureText(longest).width / (window.devicePixelRatio || 1) : 0;
  return Math.ceil(width + axis.ticks.size + axis.gap + 8);
}

export function mount(root, route, ctx) {
  let selected = (route.path[0] || "").split(",").filter(Boolean).slice(0, MAX_POINTS);
  let rangeName = RANGES[route.query.get("range")] ? route.query.get("range") : "1h";
  let custom = null; // {from, to} when the range is custom
  if (route.query.get("from") && route.query.get("to")) {
    custom = { from: Number(route.query.get("from")), to: Number(route.query.get("to")) };
    rangeName = "custom";
  }
  let plot = null;
  let points = new Map(); // id -> point (every point that can be drawn)
  let haystacks = []; // [point, folded text] for the search
  let shown = null; // what the chart shows now, for the CSV: {times, columns, series}
  let refreshTimer = null;
  let closed = false;
  let resizeObserver = null;

  const search = h("input", {
    type: "search",
    id: "trend-search",
    name: "search",
    autocomplete: "off",
    placeholder: t("trends.search_hint"),
    "aria-controls": "trend-results",
  });
  const results = h("ul", { class: "trend-results", id: "trend-results", role: "listbox", "aria-label": t("trends.results") });
  const chips = h("ul", { class: "trend-selected", id: "trend-selected", "aria-label": t("trends.selected") });
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
  const exportButton = h("button", { type: "button", id: "trend-csv", disabled: true, onclick: exportCsv }, t("trends.csv"));
  const form = h(
    "form",
    { class: "toolbar", id: "trend-form" },
    field(t("trends.range"), rangeSelect),
    customBox,
    h("label", { class: "check" }, liveBox, " ", t("trends.live")),
    apply,
    exportButton,
  );
  const picker = h(
    "div",
    { class: "trend-picker" },
    field(t("trends.point"), search),
    results,
    chips,
  );
  const title = h("h2", { id: "trend-title" }, t("trends.title"));
  const info = h("p", { class: "hint", id: "trend-info", "aria-live": "polite" });
  const chartBox = h("div", { class: "chart", id: "trend-chart" });
  replace(root, h("section", { class: "panel trends" }, title, picker, form, info, chartBox));

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
  liveBox.addEventListener("change", schedule);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go();
  });

  /** Put the selection and the range in the address (one history entry per change). */
  function go() {
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
    const path = selected.length ? [selected.join(",")] : [];
    const query = custom ? { range: "custom", from: custom.from, to: custom.to } : { range: rangeName };
    ctx.navigate("trends", path, query);
  }

  function describe(point) {
    const device = state.devices.get(point.device_id);
    return `${deviceName(device, point.device_id)} — ${pointLabel(point)}${point.unit ? ` (${point.unit})` : ""}`;
  }

  // ------------------------------------------------------------- the picker

  function renderResults() {
    const words = fold(search.value).split(/\s+/).filter(Boolean);
    if (!words.length) {
      replace(results);
      results.hidden = true;
      return;
    }
    const found = [];
    for (const [point, text] of haystacks) {
      if (words.every((w) => text.includes(w))) found.push(point);
      if (found.length > MAX_RESULTS) break;
    }
    results.hidden = false;
    replace(
      results,
      found.length
        ? found.slice(0, MAX_RESULTS).map((point) => {
            const device = state.devices.get(point.device_id);
            return h(
              "li",
              { role: "option", "aria-selected": selected.includes(point.id) ? "true" : "false" },
              h(
                "button",
                { type: "button", class: "trend-result", dataset: { point: point.id }, onclick: () => add(point.id) },
                h("span", {}, pointLabel(point)),
                h(
                  "span",
                  { class: "muted" },
                  ` — ${deviceName(device, point.device_id)} · ${zoneLabel(point.zone, tx)} · ${familyLabel(point.family)}`,
                ),
              ),
            );
          })
        : h("li", { class: "muted" }, t("trends.no_match")),
      found.length > MAX_RESULTS ? h("li", { class: "muted" }, t("trends.more_matches", { n: MAX_RESULTS })) : null,
    );
  }
  search.addEventListener("input", renderResults);
  search.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      const first = results.querySelector("button.trend-result");
      if (first) first.click();
    } else if (event.key === "Escape") {
      search.value = "";
      renderResults();
    }
  });

  function add(pointId) {
    if (!selected.includes(pointId)) selected = [...selected, pointId].slice(-MAX_POINTS);
    search.value = "";
    renderResults();
    go();
  }

  function remove(pointId) {
    selected = selected.filter((id) => id !== pointId);
    go();
  }

  function renderChips() {
    replace(
      chips,
      selected.map((id, i) => {
        const point = points.get(id);
        return h(
          "li",
          { class: "trend-chip", dataset: { point: id } },
          h("span", { class: "swatch", dataset: { colour: String(i) }, "aria-hidden": "true" }),
          point ? describe(point) : id,
          h(
            "button",
            { type: "button", class: "chip-remove", "aria-label": t("trends.remove", { point: point ? pointLabel(point) : id }), onclick: () => remove(id) },
            "×",
          ),
        );
      }),
    );
  }

  async function loadPoints() {
    try {
      const answer = await api.get("/api/v1/points", { pattern: "**", limit: 100000 });
      points = new Map(answer.points.filter((p) => p.type !== "str").map((p) => [p.id, p]));
    } catch (error) {
      info.textContent = errorText(error);
      return;
    }
    if (closed) return;
    haystacks = [...points.values()].map((point) => {
      const device = state.devices.get(point.device_id);
      const text = [
        point.id,
        point.name,
        point.member,
        pointLabel(point),
        device ? device.name : point.device_id,
        point.device_id,
        zoneLabel(point.zone, tx),
        point.zone,
        familyLabel(point.family),
        point.family,
      ].join(" ");
      return [point, fold(text)];
    });
    renderChips();
  }

  // ------------------------------------------------------------- the data

  function range() {
    if (custom) return custom;
    const to = Date.now();
    return { from: to - RANGES[rangeName], to };
  }

  /** The last good value before `from` (what is in force when the range opens). */
  async function valueBefore(point, from, rows) {
    const current = point.current;
    if (!rows.length && current && current.source_ts <= from) {
      return current.quality && current.quality.status === "good" ? current.value : null;
    }
    try {
      const answer = await api.get(`/api/v1/points/${api.pointPath(point.id)}/history`, {
        from: from - LOOK_BACK_MS,
        to: from,
        bucket: `${LOOK_BACK_MS}`,
      });
      const last = (answer.buckets || [])[0];
      return last ? last.last : null;
    } catch (_error) {
      return null;
    }
  }

  async function seriesOf(point, from, to, bucket) {
    const path = `/api/v1/points/${api.pointPath(point.id)}/history`;
    const live = await api.get(`/api/v1/points`, { pattern: point.id }).catch(() => null);
    const current = live && live.points[0] ? live.points[0].current : point.current;
    const stepped = isStepped(point);
    const raw = await api.get(path, { from, to, limit: RAW_LIMIT });
    const rows = raw.values || [];
    const before = await valueBefore({ ...point, current }, from, rows);
    if (rows.length < RAW_LIMIT) {
      const holdMs = Math.max(5000, (to - from) / 200);
      return { point, stepped, mode: "raw", ...rawSeries(rows, { from, to, before, current, stepped, holdMs }) };
    }
    const answer = await api.get(path, { from, to, bucket: `${bucket}` });
    return { point, stepped, mode: "buckets", ...bucketSeries(answer.buckets || [], { from, to, bucketMs: bucket, before }) };
  }

  async function draw() {
    clearTimeout(refreshTimer);
    renderChips();
    const chosen = selected.map((id) => points.get(id)).filter(Boolean);
    if (!chosen.length) {
      if (plot) plot.destroy();
      plot = null;
      shown = null;
      exportButton.disabled = true;
      replace(chartBox, empty(t("trends.pick_point")));
      title.textContent = t("trends.title");
      delete chartBox.dataset.series;
      return;
    }
    title.textContent = chosen.length === 1 ? describe(chosen[0]) : t("trends.several", { n: chosen.length });
    const { from, to } = range();
    const bucket = bucketFor(to - from);
    let list;
    try {
      list = await Promise.all(chosen.map((point) => seriesOf(point, from, to, bucket)));
    } catch (error) {
      info.textContent = errorText(error);
      replace(chartBox, empty(errorText(error)));
      return;
    }
    if (closed) return;
    const { times, columns } = align(list);
    const bucketed = list.some((s) => s.mode === "buckets");
    info.textContent = bucketed
      ? t("trends.info", {
          n: Math.round((to - from) / bucket),
          bucket: bucket >= 1000 ? `${fmtNumber(bucket / 1000, 1)} s` : `${bucket} ms`,
          from: fmtDateTime(from),
          to: fmtDateTime(to),
          zone: getTimeZone(),
        })
      : t("trends.info_raw", { from: fmtDateTime(from), to: fmtDateTime(to), zone: getTimeZone() });
    shown = { times, columns, list };
    exportButton.disabled = !times.length;
    chartBox.dataset.series = String(list.length);
    chartBox.dataset.samples = String(times.length);
    chartBox.dataset.gaps = String(columns.reduce((n, c) => n + c.filter((v) => v === null).length, 0));
    chartBox.dataset.stepped = list.filter((s) => s.stepped).map((s) => s.point.id).join(",");
    chartBox.dataset.mode = bucketed ? "buckets" : "raw";
    build(list, times, columns, from, to);
    schedule();
  }

  function build(list, times, columns, from, to) {
    if (plot) plot.destroy();
    replace(chartBox);
    if (!times.length) chartBox.append(empty(t("trends.no_data")));
    const zone = getTimeZone();
    // One y scale per unit (points with the same unit share it), two axes at most.
    const units = [...new Set(list.map((s) => s.point.unit || ""))];
    const scaleOf = (s) => `y${units.indexOf(s.point.unit || "")}`;
    const scales = { x: { time: true, min: from / 1000, max: to / 1000 } };
    const axes = [
      {
        stroke: "#c9d1d9",
        grid: { stroke: "#2d333b" },
        ticks: { stroke: "#2d333b" },
        size: 54,
        values: (u, splits) => timeLabels(splits, to - from),
      },
    ];
    chartBox.yLabels = {};
    units.slice(0, 2).forEach((unit, i) => {
      const owner = list.find((s) => (s.point.unit || "") === unit);
      const enumLabels = list.length === 1 && owner.point.labels ? owner.point : null;
      const boolean = list.every((s) => s.point.type === "bool");
      scales[`y${i}`] = boolean ? { range: [-0.1, 1.1] } : { auto: true };
      axes.push({
        scale: `y${i}`,
        side: i === 0 ? 3 : 1,
        stroke: "#c9d1d9",
        grid: { stroke: i === 0 ? "#2d333b" : "transparent" },
        ticks: { stroke: "#2d333b" },
        size: fitAxis,
        splits: boolean ? () => [0, 1] : undefined,
        values: (u, splits) => {
          const labels = boolean
            ? splits.map((v) => formatValue({ type: "bool" }, v === 1))
            : enumLabels
              ? splits.map((v) => (Number.isInteger(v) ? formatValue(enumLabels, v) : ""))
              : axisLabels(splits, unit);
          chartBox.yLabels[unit] = labels;
          chartBox.dataset.yLabels = JSON.stringify(chartBox.yLabels);
          return labels;
        },
      });
    });
    for (const unit of units.slice(2)) scales[`y${units.indexOf(unit)}`] = { auto: true };
    const series = [{ label: t("trends.time"), value: (u, v) => (v === null ? "—" : fmtDateTime(v * 1000)) }];
    list.forEach((s, i) => {
      const value = (u, v) => (v === null || v === undefined ? "—" : formatValue(s.point, s.point.type === "bool" ? v === 1 : v));
      series.push({
        label: list.length === 1 ? pointLabel(s.point) : describe(s.point),
        scale: scaleOf(s),
        stroke: COLOURS[i % COLOURS.length],
        width: 2,
        value,
        paths: s.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
        points: { show: false },
      });
    });
    const data = [times.map((ms) => ms / 1000), ...columns];
    // One analog point alone: its min and max per interval too, dashed.
    if (list.length === 1 && list[0].mode === "buckets") {
      const s = list[0];
      const value = (u, v) => (v === null || v === undefined ? "—" : formatValue(s.point, v));
      series.push({ label: t("trends.min"), scale: "y0", stroke: "#5b8bd9", width: 1, dash: [4, 4], value });
      series.push({ label: t("trends.max"), scale: "y0", stroke: "#f4a261", width: 1, dash: [4, 4], value });
      const at = new Map(s.xs.map((x, i) => [x, i]));
      data.push(times.map((x) => (at.has(x) ? s.min[at.get(x)] : undefined)));
      data.push(times.map((x) => (at.has(x) ? s.max[at.get(x)] : undefined)));
    }
    const width = Math.max(300, chartBox.clientWidth || 800);
    const height = Math.max(240, Math.min(560, Math.round(window.innerHeight - chartBox.getBoundingClientRect().top - 40)));
    plot = new uPlot(
      {
        width,
        height,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), zone),
        scales,
        axes,
        series,
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
      },
      data,
      chartBox,
    );
    plot.root.classList.add("uplot-dark");
    chartBox.plot = plot; // for the browser tests: the data as drawn
  }

  /** The data shown, as CSV: the site's time with its offset, one column per point. */
  function exportCsv() {
    if (!shown) return;
    const header = [t("trends.csv_time", { zone: getTimeZone() }), ...shown.list.map((s) => describe(s.point))];
    const rows = shown.times.map((ms, i) => [
      fmtIso(ms),
      ...shown.columns.map((column) => (column[i] === null || column[i] === undefined ? "" : String(column[i]))),
    ]);
    const blob = new Blob([csv(header, rows)], { type: "text/csv;charset=utf-8" });
    const link = h("a", { href: URL.createObjectURL(blob), download: `trend-${fmtIso(Date.now()).slice(0, 16).replace(/[:T]/g, "")}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  function schedule() {
    clearTimeout(refreshTimer);
    if (!closed && liveBox.checked && !custom && selected.length) refreshTimer = setTimeout(draw, 5000);
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
      selected = (next.path[0] || "").split(",").filter(Boolean).slice(0, MAX_POINTS);
      rangeName = RANGES[next.query.get("range")] ? next.query.get("range") : next.query.get("range") === "custom" ? "custom" : "1h";
      custom = rangeName === "custom" && next.query.get("from") ? { from: Number(next.query.get("from")), to: Number(next.query.get("to")) } : null;
      if (rangeName === "custom" && !custom) rangeName = "1h";
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
