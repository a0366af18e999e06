// The map: devices at their configured coordinates, coloured by state; click to the device.
// Tiles come from the configured tile server (/api/v1/site tile_url) when there is one;
// without tiles the equipment is drawn on a plain background, and the map still works.

import * as L from "../../vendor/leaflet-1.9.4/leaflet-src.esm.js";
import { h, replace } from "../dom.js";
import { t, tx } from "../i18n.js";
import { deviceName, familyLabel } from "../format.js";
import { deviceAlarmCount, deviceStatus, state, zoneLabel } from "../state.js";
import { empty } from "../ui.js";

const STATUSES = ["online", "alarm", "offline"];

export function mount(root, route, ctx) {
  const mapBox = h("div", { class: "map", id: "map", role: "application", "aria-label": t("map.label") });
  const legend = h(
    "ul",
    { class: "legend", "aria-label": t("map.legend") },
    STATUSES.map((s) => h("li", {}, h("span", { class: ["dot", `status-${s}`], "aria-hidden": "true" }), t(`status.${s}`))),
  );
  const list = h("ul", { class: "map-devices", id: "map-devices" });
  const notice = h("p", { class: "hint", id: "map-tiles" });
  replace(
    root,
    h(
      "div",
      { class: "split split-map" },
      h("div", { class: "map-wrap panel" }, mapBox),
      h("aside", { class: "panel map-side" }, h("h2", {}, t("map.title")), legend, notice, h("h3", {}, t("map.devices")), list),
    ),
  );

  const site = state.site;
  const center = [site.latitude ?? 46.6, site.longitude ?? 2.4];
  const map = L.map(mapBox, {
    center,
    zoom: site.latitude === null || site.latitude === undefined ? 6 : 14,
    attributionControl: Boolean(site.tile_url),
    zoomControl: true,
    preferCanvas: false,
    keyboard: true,
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

  const markers = new Map(); // device id -> {marker, status}
  let fitted = false;

  function render() {
    const located = [...state.devices.values()].filter((d) => Array.isArray(d.location));
    const seen = new Set();
    for (const device of located) {
      seen.add(device.id);
      const status = deviceStatus(device);
      let entry = markers.get(device.id);
      const style = { radius: 10, weight: 3, className: `marker status-${status}`, fillOpacity: 0.9 };
      if (!entry) {
        const marker = L.circleMarker(device.location, style);
        marker.bindTooltip(deviceName(device), { permanent: true, direction: "right", offset: [12, 0], className: "map-label" });
        marker.on("click", () => ctx.navigate("equipment", [device.id]));
        marker.addTo(map);
        entry = { marker, status: null };
        markers.set(device.id, entry);
      }
      if (entry.status !== status) {
        const path = entry.marker.getElement();
        if (path) {
          for (const s of STATUSES) path.classList.toggle(`status-${s}`, s === status);
          path.dataset.device = device.id;
          path.dataset.status = status;
        }
        entry.status = status;
      }
    }
    for (const [id, entry] of markers) {
      if (!seen.has(id)) {
        entry.marker.remove();
        markers.delete(id);
      }
    }
    if (!fitted && located.length) {
      fitted = true;
      const focus = route.query.get("focus");
      const target = focus && state.devices.get(focus);
      // No animation for the first view: the map is still the moment it appears.
      if (target && target.location) map.setView(target.location, 17, { animate: false });
      else if (located.length > 1)
        map.fitBounds(located.map((d) => d.location), { padding: [60, 60], maxZoom: 16, animate: false });
      else map.setView(located[0].location, 16, { animate: false });
    }
    const items = located
      .sort((a, b) => a.zone.localeCompare(b.zone) || deviceName(a).localeCompare(deviceName(b)))
      .map((device) => {
        const status = deviceStatus(device);
        const alarms = deviceAlarmCount(device.id);
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: ["link", `status-${status}`],
              dataset: { device: device.id },
              onclick: () => map.setView(device.location, Math.max(map.getZoom(), 16)),
              ondblclick: () => ctx.navigate("equipment", [device.id]),
              title: t("map.center_hint"),
            },
            h("span", { class: ["dot", `status-${status}`], "aria-hidden": "true" }),
            deviceName(device),
          ),
          h("span", { class: "muted" }, ` ${zoneLabel(device.zone, tx)} · ${familyLabel(device.family)}`),
          alarms ? h("span", { class: "count" }, String(alarms)) : null,
          " ",
          h("a", { href: `#/equipment/${encodeURIComponent(device.id)}`, class: "open-device" }, t("map.open")),
        );
      });
    const unlocated = state.devices.size - located.length;
    replace(
      list,
      items.length ? items : empty(t("map.none")),
      unlocated ? h("li", { class: "muted" }, t("map.unlocated", { n: unlocated })) : null,
    );
    mapBox.dataset.markers = String(markers.size);
  }

  const stops = [state.events.on("devices", render), state.events.on("alarms", render)];
  render();
  // The container got its size from CSS after Leaflet measured it.
  requestAnimationFrame(() => {
    map.invalidateSize({ animate: false });
    mapBox.dataset.ready = "true";
  });

  return {
    unmount() {
      for (const stop of stops) stop();
      map.remove();
    },
  };
}
