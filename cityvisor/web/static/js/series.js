// What a trend draws, from what history keeps: only changes are stored (on change,
// past the deadband), so a value holds until the next row; a row of bad quality
// starts a gap that the next good row ends. Numbers on the axes get SI prefixes.

import { fmtNumber } from "./i18n.js";

/** True if the point's value moves in steps (bool, enum, integer counts): drawn stepped. */
export function isStepped(point) {
  return Boolean(point) && (point.type !== "float" || Boolean(point.labels));
}

/** A point's value as a number for the chart (booleans 0/1; null if it has none). */
export function chartValue(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "boolean") return value ? 1 : 0;
  const number = Number(value);
  return Number.isFinite(number) ? number : null;
}

/**
 * One point's samples over [from, to] from its raw history (ascending).
 * `before` is the last good value before `from` (null if unknown), `current` the
 * point's live value (holds the line up to now when good). Returns
 * {xs (ms), ys (number, or null for a gap)}. An analog value that held for longer
 * than `holdMs` is drawn flat, then moving: never a slope across hours.
 */
export function rawSeries(rows, { from, to, before = null, current = null, stepped = false, holdMs = 5000 }) {
  const xs = [];
  const ys = [];
  let last = before; // the value in force (null: none, or a gap)
  let lastTs = from;
  const push = (ts, value) => {
    xs.push(ts);
    ys.push(value);
  };
  if (last !== null) push(from, last);
  for (const row of rows) {
    const good = !row.quality || row.quality.status === "good";
    const value = good ? chartValue(row.value) : null;
    const ts = Math.max(from, Math.min(to, row.source_ts));
    if (last !== null && value === null) {
      // The value held until the device stopped answering; the gap starts there.
      if (ts > lastTs) push(ts - 1, last);
      push(ts, null);
    } else if (value !== null) {
      if (last !== null && !stepped && ts - lastTs > holdMs) push(ts - 1, last);
      push(ts, value);
    }
    last = value;
    lastTs = ts;
  }
  const now = Math.min(to, Date.now());
  const live = current && (!current.quality || current.quality.status === "good") ? chartValue(current.value) : null;
  if (last !== null && live !== null && now > lastTs) push(now, last);
  return { xs, ys };
}

/**
 * One point's series from min/avg/max buckets (a range with too many changes for raw
 * values): an empty bucket holds the previous bucket's last value.
 */
export function bucketSeries(buckets, { from, to, bucketMs, before = null }) {
  const byStart = new Map(buckets.map((b) => [b.start, b]));
  const xs = [];
  const avg = [];
  const min = [];
  const max = [];
  let last = before;
  for (let start = from; start < to; start += bucketMs) {
    const b = byStart.get(start);
    xs.push(start + bucketMs / 2);
    if (b) {
      avg.push(b.avg);
      min.push(b.min);
      max.push(b.max);
      last = b.last;
    } else {
      avg.push(last);
      min.push(last);
      max.push(last);
    }
  }
  return { xs, ys: avg, min, max };
}

/**
 * Several series on one time axis: the union of their times; a stepped series holds
 * its value at the others' times, an analog one is left undefined there (uPlot joins
 * across undefined and breaks at null, so gaps stay gaps).
 */
export function align(seriesList) {
  const times = [...new Set(seriesList.flatMap((s) => s.xs))].sort((a, b) => a - b);
  const columns = seriesList.map((s) => {
    const at = new Map();
    s.xs.forEach((x, i) => at.set(x, s.ys[i]));
    const column = new Array(times.length);
    let held;
    for (let i = 0; i < times.length; i++) {
      if (at.has(times[i])) {
        held = at.get(times[i]);
        column[i] = held;
      } else {
        column[i] = s.stepped && held !== undefined && times[i] <= s.xs[s.xs.length - 1] ? held : undefined;
      }
    }
    return column;
  });
  return { times, columns };
}

const PREFIXES = [
  [1e12, "T"],
  [1e9, "G"],
  [1e6, "M"],
  [1e3, "k"],
];
const SI_BASES = ["W", "Wh", "VA", "var", "V", "A", "Hz", "bit/s", "bit", "B/s", "B", "o", "o/s", "m", "lm", "lx"];

/** "kWh" -> {base: "Wh", factor: 1000}; a unit SI prefixes apply to, or null. */
function siUnit(unit) {
  if (!unit) return null;
  if (SI_BASES.includes(unit)) return { base: unit, factor: 1 };
  const found = PREFIXES.find(([, p]) => unit.startsWith(p) && SI_BASES.includes(unit.slice(p.length)));
  return found ? { base: unit.slice(found[1].length), factor: found[0] } : null;
}

/**
 * Axis labels for `values` in `unit`, all with one prefix chosen from the largest:
 * 12 500 000 bit/s -> "12,5 Mbit/s". Units that take no prefix (%, °C) keep theirs.
 */
export function axisLabels(values, unit) {
  const finite = values.filter((v) => Number.isFinite(v));
  const largest = finite.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const si = siUnit(unit);
  let divisor = 1;
  let shown = unit || "";
  if (si) {
    const magnitude = largest * si.factor;
    const prefix = PREFIXES.find(([f]) => magnitude >= f);
    divisor = (prefix ? prefix[0] : 1) / si.factor;
    shown = `${prefix ? prefix[1] : ""}${si.base}`;
  }
  const scaled = finite.map((v) => v / divisor);
  const steps = scaled.slice(1).map((v, i) => Math.abs(v - scaled[i])).filter((d) => d > 0);
  const step = steps.length ? Math.min(...steps) : Math.abs(scaled[0] || 1);
  const digits = Math.max(0, Math.min(6, Math.ceil(-Math.log10(step) + 0.0001)));
  return values.map((v) => (Number.isFinite(v) ? `${fmtNumber(v / divisor, digits)}${shown ? ` ${shown}` : ""}` : ""));
}

/** A CSV document (RFC 4180, comma-separated) from a header and rows. */
export function csv(header, rows) {
  const cell = (value) => {
    const text = value === null || value === undefined ? "" : String(value);
    return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  return [header, ...rows].map((row) => row.map(cell).join(",")).join("\r\n") + "\r\n";
}
