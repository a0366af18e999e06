// The map: devices at their configured coordinates, grouped by zone and proximity into
// clusters that show their count and their worst state; names only where they fit;
// filters by family and state. Everything is drawn on one canvas, so that tens of
// thousands of devices stay smooth. Tiles come from the configured tile server
// (/api/v1/site tile_url) when there is one; without them the map still works.

import * as L from "../../vendor/leaflet-1.9.4/leaflet-src.esm.js";
import * as api from "../api.js";
import { h, option, replace } from "../dom.js";
import { t, tx } from "../i18n.js";
import { deviceName, familyLabel } from "../format.js";
import { deviceAlarmCount, deviceStatus, state, zoneLabel } from "../state.js";
import { empty, field } from "../ui.js";

const STATUSES = ["online", "alarm", "offline"];
const WORST = { alarm: 3, offline: 2, online: 1 }; // a cluster takes the worst of its devices
const COLOURS = { alarm: "#ff3b3b", offline: "#8b95a5", online: "#3ddc84" };
// A signal junction's own state, drawn as a lamp inside its marker: cycling (some phase
// on green), in flash, or dark (no phase lit, or nothing known yet).
const SIGNAL_FAMILY = "signals";
const SIGNAL_COLOURS = { cycle: "#3ddc84", flash: "#ffb020", dark: "#0b0e13" };
const SIGNAL_POINTS = ["flashing", "greens"];
const REACH = 64; // px: devices of one zone closer than this on screen to a cluster's seed join it
const LIST_LIMIT = 100; // devices listed beside the map (those in view, worst first)
const LABEL_FONT = "13px system-ui, sans-serif";
const COUNT_FONT = "bold 12px system-ui, sans-serif";

/**
 * The clusters of `devices` at `zoom`: [{x, y (world px), count, status, zone, devices}].
 * Greedy, per zone: the first device not yet taken seeds a cluster and takes every
 * free device of its zone within `reach` screen pixels. Seeds are at least `reach`
 * apart, so two clusters of a zone never overlap (radius() stays under reach / 2);
 * a cluster is drawn where its seed device stands.
 */
export function cluster(devices, zoom, reach = REACH) {
  const scale = 2 ** zoom;
  const cellOf = (v) => Math.floor(v / reach);
  const byZone = new Map(); // zone -> Map(cell number -> [device index])
  const xs = new Float64Array(devices.length);
  const ys = new Float64Array(devices.length);
  devices.forEach((d, i) => {
    xs[i] = d.wx * scale;
    ys[i] = d.wy * scale;
    let cells = byZone.get(d.zone);
    if (!cells) {
      cells = new Map();
      byZone.set(d.zone, cells);
    }
    const key = cellOf(xs[i]) * 1e8 + cellOf(ys[i]);
    const list = cells.get(key);
    if (list) list.push(i);
    else cells.set(key, [i]);
  });
  const taken = new Uint8Array(devices.length);
  const clusters = [];
  const reach2 = reach * reach;
  devices.forEach((d, i) => {
    if (taken[i]) return;
    const cells = byZone.get(d.zone);
    const cx = cellOf(xs[i]);
    const cy = cellOf(ys[i]);
    const c = { x: xs[i], y: ys[i], count: 0, status: "online", zone: d.zone, devices: [] };
    for (let gx = cx - 1; gx <= cx + 1; gx++) {
      for (let gy = cy - 1; gy <= cy + 1; gy++) {
        const list = cells.get(gx * 1e8 + gy);
        if (!list) continue;
        for (const k of list) {
          if (taken[k]) continue;
          const dx = xs[k] - c.x;
          const dy = ys[k] - c.y;
          if (dx * dx + dy * dy > reach2) continue;
          taken[k] = 1;
          const member = devices[k];
          c.count += 1;
          if (WORST[member.status] > WORST[c.status]) c.status = member.status;
          c.devices.push(member);
        }
      }
    }
    clusters.push(c);
  });
  return clusters;
}

/** A radius that grows slowly with the count (1: a dot; 50,000: still a button). */
function radius(count) {
  return count === 1 ? 7 : Math.min(30, 11 + 4 * Math.log10(count));
}

/** Boxes [x0, y0, x1, y1] already taken on screen, on a coarse grid for quick tests. */
class Occupancy {
  constructor(size = 64) {
    this.size = size;
    this.grid = new Map();
  }

  keys(box) {
    const s = this.size;
    const keys = [];
    for (let gx = Math.floor(box[0] / s); gx <= Math.floor(box[2] / s); gx++) {
      for (let gy = Math.floor(box[1] / s); gy <= Math.floor(box[3] / s); gy++) keys.push(`${gx},${gy}`);
    }
    return keys;
  }

  collides(box) {
    for (const key of this.keys(box)) {
      for (const other of this.grid.get(key) || []) {
        if (box[0] < other[2] && box[2] > other[0] && box[1] < other[3] && box[3] > other[1]) return true;
      }
    }
    return false;
  }

  add(box) {
    for (const key of this.keys(box)) {
      if (!this.grid.has(key)) this.grid.set(key, []);
      this.grid.get(key).push(box);
    }
  }
}

export function mount(root, route, ctx) {
  const mapBox = h("div", { class: "map", id: "map", role: "application", "aria-label": t("map.label") });
  const legend = h(
    "ul",
    { class: "legend", "aria-label": t("map.legend") },
    STATUSES.map((s) => h("li", {}, h("span", { class: ["dot", `status-${s}`], "aria-hidden": "true" }), t(`status.${s}`))),
    h("li", {}, h("span", { class: "cluster-sample", "aria-hidden": "true" }, "12"), t("map.cluster_legend")),
  );
  const hasSignals = [...state.devices.values()].some((d) => d.family === SIGNAL_FAMILY);
  if (hasSignals) {
    for (const s of Object.keys(SIGNAL_COLOURS)) {
      legend.append(h("li", {}, h("span", { class: ["lamp", `signal-${s}`], "aria-hidden": "true" }), t(`map.signal_${s}`)));
    }
  }
  const families = [...new Set([...state.devices.values()].map((d) => d.family))].sort();
  const familySelect = h(
    "select",
    { id: "map-family", name: "family" },
    option("", t("filter.all")),
    families.map((f) => option(f, familyLabel(f), route.query.get("family") === f)),
  );
  const statusSelect = h(
    "select",
    { id: "map-status", name: "status" },
    option("", t("filter.all")),
    STATUSES.map((s) => option(s, t(`status.${s}`), route.query.get("status") === s)),
  );
  const filters = h("div", { class: "map-filters" }, field(t("map.family"), familySelect), field(t("map.status"), statusSelect));
  const list = h("ul", { class: "map-devices", id: "map-devices" });
  const counts = h("p", { class: "hint", id: "map-counts", "aria-live": "polite" });
  const notice = h("p", { class: "hint", id: "map-tiles" });
  replace(
    root,
    h(
      "div",
      { class: "split split-map" },
      h("div", { class: "map-wrap panel" }, mapBox),
      h(
        "aside",
        { class: "panel map-side" },
        h("h2", {}, t("map.title")),
        legend,
        filters,
        notice,
        h("h3", {}, t("map.devices")),
        counts,
        list,
      ),
    ),
  );

  const site = state.site;
  const center = [site.latitude ?? 46.6, site.longitude ?? 2.4];
  const map = L.map(mapBox, {
    center,
    zoom: site.latitude === null || site.latitude === undefined ? 6 : 14,
    attributionControl: Boolean(site.tile_url),
    zoomControl: true,
    keyboard: true,
    maxZoom: 19,
    zoomAnimation: false, // the canvas is redrawn for the new zoom at once
  });
  if (site.tile_url) {
    map.attributionControl.setPrefix(false);
    const tiles = L.tileLayer(site.tile_url, { maxZoom: 19, crossOrigin: false });
    tiles.addTo(map);
    notice.textContent = t("map.tiles_on");
    tiles.on("tileerror", () => {
      notice.textContent = t("map.tiles_error");
      mapBox.classList.add("no-tiles");
    });
  } else {
    notice.textContent = t("map.no_tiles");
    mapBox.classList.add("no-tiles");
  }

  // The offline background of [web] basemap: outlines (communes...) drawn by the hub's own
  // GeoJSON, under the equipment. It needs no tile server and no Internet.
  let closed = false;
  if (site.basemap) {
    api
      .get("/api/v1/basemap")
      .then((geojson) => {
        if (closed) return;
        const layer = L.geoJSON(geojson, {
          interactive: false,
          style: () => ({ className: "basemap", weight: 2, fillOpacity: 0.05 }),
          onEachFeature: (feature, shape) => {
            const name = feature.properties && (feature.properties.label ? tx(feature.properties.label) : feature.properties.name);
            if (name) shape.bindTooltip(String(name), { permanent: true, direction: "center", className: "basemap-label", interactive: false });
          },
        }).addTo(map);
        mapBox.dataset.basemap = String(layer.getLayers().length);
        mapBox.classList.add("with-basemap");
        if (!site.tile_url) notice.textContent = t("map.basemap_on");
      })
      .catch(() => {
        notice.textContent = t("map.basemap_error");
      });
  }

  // One canvas over the map, in the map's own pane stack (above tiles, below controls).
  const canvas = h("canvas", { class: "map-canvas", id: "map-canvas" });
  map.getContainer().append(canvas);
  const context = canvas.getContext("2d");

  let located = []; // [{id, device, wx, wy, zone, family, status}] (wx, wy: world px at zoom 0)
  const signals = new Map(); // junction id -> {flashing, greens}: its live state

  /** A junction's state for the map: "cycle", "flash" or "dark"; null for other devices. */
  function signalState(device) {
    if (device.family !== SIGNAL_FAMILY) return null;
    const known = signals.get(device.id);
    if (!known) return "dark";
    if (known.flashing === true) return "flash";
    return typeof known.greens === "string" && known.greens.trim() ? "cycle" : "dark";
  }

  /** The words that go with a junction's state (the hint and the list). */
  function signalText(device) {
    const s = signalState(device);
    if (s === null) return "";
    const greens = signals.get(device.id)?.greens;
    return s === "cycle" ? t("map.signal_greens", { phases: greens }) : t(`map.signal_${s}`);
  }
  let shown = []; // the located devices that pass the filters
  let clusters = null; // clusters at clusterZoom
  let clusterZoom = null;
  let drawn = []; // what is on screen now: [{x, y, r, cluster}] for clicks and tests
  let frame = null;
  const timing = { cluster_ms: 0, draw_ms: 0 };
  let fitted = false;

  function project(latlng) {
    const p = map.project(latlng, 0);
    return [p.x, p.y];
  }

  function refreshDevices() {
    const previous = new Map(located.map((d) => [d.id, d]));
    located = [];
    for (const device of state.devices.values()) {
      if (!Array.isArray(device.location)) continue;
      const known = previous.get(device.id);
      let wx;
      let wy;
      if (known && known.device.location === device.location) ({ wx, wy } = known);
      else [wx, wy] = project(device.location);
      located.push({ id: device.id, device, wx, wy, zone: device.zone, family: device.family, status: deviceStatus(device) });
    }
    applyFilters();
  }

  function applyFilters() {
    const family = familySelect.value;
    const status = statusSelect.value;
    shown = located.filter((d) => (!family || d.family === family) && (!status || d.status === status));
    // Worst first: a device in alarm seeds its cluster, which then stands where it is.
    shown.sort((a, b) => WORST[b.status] - WORST[a.status]);
    clusters = null;
    mapBox.dataset.markers = String(shown.length);
    fit();
    schedule();
    scheduleList();
  }

  function fit() {
    if (fitted || !located.length) return;
    fitted = true;
    const focus = route.query.get("focus");
    const target = focus && state.devices.get(focus);
    if (target && target.location) map.setView(target.location, 17, { animate: false });
    else if (located.length > 1) {
      const bounds = L.latLngBounds(located.map((d) => d.device.location));
      map.fitBounds(bounds, { padding: [60, 60], maxZoom: 16, animate: false });
    } else map.setView(located[0].device.location, 16, { animate: false });
  }

  function schedule() {
    if (frame === null) frame = requestAnimationFrame(draw);
  }

  function resize() {
    const size = map.getSize();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(size.x * ratio);
    canvas.height = Math.round(size.y * ratio);
    canvas.style.width = `${size.x}px`;
    canvas.style.height = `${size.y}px`;
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
  }

  /** Redraw: clusters for the zoom (recomputed only when the zoom or the data changed). */
  function draw() {
    frame = null;
    const size = map.getSize();
    if (canvas.width !== Math.round(size.x * (window.devicePixelRatio || 1))) resize();
    const zoom = map.getZoom();
    if (clusters === null || clusterZoom !== zoom) {
      const started = performance.now();
      // At the deepest zoom devices only share a spot if they share coordinates.
      clusters = cluster(shown, zoom, zoom >= map.getMaxZoom() ? 1 : REACH);
      clusterZoom = zoom;
      timing.cluster_ms = performance.now() - started;
    }
    const started = performance.now();
    const origin = map.getPixelBounds().min; // the view's top-left in world px at this zoom
    context.clearRect(0, 0, size.x, size.y);
    drawn = [];
    const margin = 40;
    const visible = [];
    for (const c of clusters) {
      const x = c.x - origin.x;
      const y = c.y - origin.y;
      if (x < -margin || y < -margin || x > size.x + margin || y > size.y + margin) continue;
      visible.push({ x, y, r: radius(c.count), cluster: c });
    }
    // Worst first: an alarm is drawn on top and its name gets a place first.
    visible.sort((a, b) => WORST[a.cluster.status] - WORST[b.cluster.status]);
    for (const item of visible) {
      const { x, y, r, cluster: c } = item;
      context.beginPath();
      context.arc(x, y, r, 0, 2 * Math.PI);
      context.fillStyle = COLOURS[c.status];
      context.globalAlpha = c.count === 1 ? 0.95 : 0.85;
      context.fill();
      context.globalAlpha = 1;
      context.lineWidth = c.count === 1 ? 2 : 3;
      context.strokeStyle = "#0b0e13";
      context.stroke();
      const lamp = c.count === 1 ? signalState(c.devices[0].device) : null;
      if (lamp !== null && r >= 5) {
        context.beginPath();
        context.arc(x, y, r * 0.5, 0, 2 * Math.PI);
        context.fillStyle = SIGNAL_COLOURS[lamp];
        context.fill();
        context.lineWidth = 1.5;
        context.strokeStyle = "#0b0e13";
        context.stroke();
      }
      item.signal = lamp;
      if (c.count > 1) {
        context.font = COUNT_FONT;
        context.fillStyle = "#0b0e13";
        context.textAlign = "center";
        context.textBaseline = "middle";
        context.fillText(c.count >= 10000 ? `${Math.round(c.count / 1000)}k` : String(c.count), x, y);
      }
      drawn.push(item);
    }
    // Names, worst first, only where they collide with no other name nor marker.
    const taken = new Occupancy();
    for (const item of drawn) taken.add([item.x - item.r, item.y - item.r, item.x + item.r, item.y + item.r]);
    context.font = LABEL_FONT;
    context.textAlign = "left";
    context.textBaseline = "middle";
    let labels = 0;
    for (let i = drawn.length - 1; i >= 0; i--) {
      const item = drawn[i];
      const c = item.cluster;
      const text = c.count === 1 ? deviceName(c.devices[0].device) : `${zoneLabel(c.zone, tx)} · ${c.count}`;
      const width = context.measureText(text).width;
      const box = [item.x + item.r + 3, item.y - 9, item.x + item.r + 9 + width, item.y + 9];
      if (box[0] < 0 || box[2] > size.x || box[1] < 0 || box[3] > size.y || taken.collides(box)) {
        item.label = null;
        item.box = null;
        continue;
      }
      taken.add(box);
      context.fillStyle = "rgb(11 14 19 / 78%)";
      context.fillRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
      context.fillStyle = "#e8edf3";
      context.fillText(text, box[0] + 3, item.y);
      item.label = text;
      item.box = box;
      labels += 1;
    }
    timing.draw_ms = performance.now() - started;
    mapBox.dataset.clusters = String(drawn.filter((d) => d.cluster.count > 1).length);
    mapBox.dataset.singles = String(drawn.filter((d) => d.cluster.count === 1).length);
    mapBox.dataset.labels = String(labels);
    mapBox.dataset.zoom = String(zoom);
  }

  /** The drawn marker under a point of the map (the smallest one on top wins). */
  function hit(x, y) {
    let found = null;
    for (const item of drawn) {
      const d = Math.hypot(item.x - x, item.y - y);
      if (d <= item.r + 3 && (!found || item.r < found.r)) found = item;
    }
    return found;
  }

  function open(item) {
    const c = item.cluster;
    if (c.count === 1) {
      ctx.navigate("equipment", [c.devices[0].id]);
      return;
    }
    const bounds = L.latLngBounds(c.devices.map((d) => d.device.location));
    if (map.getZoom() >= map.getMaxZoom() || bounds.getNorthEast().equals(bounds.getSouthWest())) {
      listed = c.devices; // the same spot: list them
      scheduleList();
    } else {
      map.fitBounds(bounds, { padding: [50, 50], maxZoom: map.getMaxZoom(), animate: false });
    }
  }

  let listed = null; // the devices of a cluster that was clicked at the deepest zoom
  function renderList() {
    const bounds = map.getBounds();
    const pool = listed || shown.filter((d) => bounds.contains(d.device.location));
    const sorted = pool
      .slice()
      .sort((a, b) => WORST[b.status] - WORST[a.status] || a.zone.localeCompare(b.zone) || deviceName(a.device).localeCompare(deviceName(b.device)));
    const items = sorted.slice(0, LIST_LIMIT).map(({ device, status }) => {
      const alarms = deviceAlarmCount(device.id);
      return h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: ["link", `status-${status}`],
            dataset: { device: device.id, status },
            onclick: () => map.setView(device.location, Math.max(map.getZoom(), 17), { animate: false }),
            ondblclick: () => ctx.navigate("equipment", [device.id]),
            title: t("map.center_hint"),
          },
          h("span", { class: ["dot", `status-${status}`], "aria-hidden": "true" }),
          deviceName(device),
        ),
        h("span", { class: "muted" }, ` ${zoneLabel(device.zone, tx)} · ${familyLabel(device.family)}`),
        device.family === SIGNAL_FAMILY
          ? h("span", { class: ["signal-state", `signal-${signalState(device)}`], dataset: { signal: signalState(device) } }, ` · ${signalText(device)}`)
          : null,
        alarms ? h("span", { class: "count" }, String(alarms)) : null,
        " ",
        h("a", { href: `#/equipment/${encodeURIComponent(device.id)}`, class: "open-device" }, t("map.open")),
      );
    });
    const unlocated = state.devices.size - located.length;
    counts.textContent = t("map.in_view", { n: pool.length, total: shown.length });
    replace(
      list,
      items.length ? items : empty(t("map.none")),
      sorted.length > LIST_LIMIT ? h("li", { class: "muted" }, t("map.more", { n: sorted.length - LIST_LIMIT })) : null,
      unlocated ? h("li", { class: "muted" }, t("map.unlocated", { n: unlocated })) : null,
    );
  }

  map.on("move", schedule);
  map.on("movestart", () => {
    listed = null;
  });
  // The list beside the map follows the view once it settles (not on every frame of a pan).
  let listTimer = null;
  function scheduleList() {
    clearTimeout(listTimer);
    listTimer = setTimeout(renderList, 120);
  }
  map.on("zoomend moveend", () => {
    schedule();
    scheduleList();
  });
  map.on("resize", () => {
    resize();
    schedule();
  });
  map.on("click", (event) => {
    const item = hit(event.containerPoint.x, event.containerPoint.y);
    if (item) open(item);
  });
  map.on("mousemove", (event) => {
    const item = hit(event.containerPoint.x, event.containerPoint.y);
    mapBox.classList.toggle("over-marker", Boolean(item));
    mapBox.title = item
      ? item.cluster.count === 1
        ? [deviceName(item.cluster.devices[0].device), signalText(item.cluster.devices[0].device)].filter(Boolean).join(" · ")
        : t("map.cluster_hint", { n: item.cluster.count, zone: zoneLabel(item.cluster.zone, tx), status: t(`status.${item.cluster.status}`) })
      : "";
  });
  for (const select of [familySelect, statusSelect]) {
    select.addEventListener("change", () => {
      ctx.replaceQuery({ family: familySelect.value, status: statusSelect.value });
      applyFilters();
    });
  }

  // For the tests and the benchmark: what is drawn, and how long it took.
  mapBox.view = {
    get items() {
      return drawn.map((d) => ({ x: d.x, y: d.y, r: d.r, count: d.cluster.count, status: d.cluster.status, zone: d.cluster.zone, label: d.label || null, box: d.box || null, device: d.cluster.count === 1 ? d.cluster.devices[0].id : null, signal: d.signal ?? null }));
    },
    timing,
    map,
    redraw: () => {
      clusters = null;
      draw();
    },
  };

  const stops = [state.events.on("devices", refreshDevices), state.events.on("alarms", refreshDevices)];
  // Junctions show their live state: two points each, through the page's one subscription.
  let signalWatch = null;
  if (hasSignals) {
    let pending = null;
    signalWatch = ctx.live.watch(
      SIGNAL_POINTS.map((name) => `*/${SIGNAL_FAMILY}/*/${name}`),
      (values) => {
        for (const value of values) {
          const parts = value.id.split("/");
          const name = parts.pop();
          const id = parts.pop();
          if (!SIGNAL_POINTS.includes(name) || !state.devices.has(id)) continue;
          const known = signals.get(id) || {};
          known[name] = value.quality?.status === "bad" ? null : value.value;
          signals.set(id, known);
        }
        // A junction changes phase every few seconds: redraw once per frame at most,
        // and the list once it settles.
        if (pending === null) {
          pending = requestAnimationFrame(() => {
            pending = null;
            schedule();
            scheduleList();
          });
        }
      },
    );
    stops.push(() => {
      if (pending !== null) cancelAnimationFrame(pending);
    });
  }
  // The container got its size from CSS after Leaflet measured it.
  requestAnimationFrame(() => {
    map.invalidateSize({ animate: false });
    resize();
    refreshDevices();
    draw();
    mapBox.dataset.ready = "true";
  });

  return {
    unmount() {
      closed = true;
      for (const stop of stops) stop();
      signalWatch?.close();
      if (frame !== null) cancelAnimationFrame(frame);
      clearTimeout(listTimer);
      map.remove();
    },
  };
}
