// The camera wall: every camera's snapshot, refreshed every couple of seconds while shown.

import * as api from "../api.js";
import { h, replace, setText } from "../dom.js";
import { fmtAge, fmtTime, t, tx } from "../i18n.js";
import { deviceName, errorText } from "../format.js";
import { deviceStatus, state, zoneLabel } from "../state.js";
import { empty } from "../ui.js";

const PERIOD_MS = 2000;

export function mount(root, route, ctx) {
  const tiles = new Map(); // camera id -> {img, caption, url, busy, taken}
  let closed = false;
  let timer = null;
  const wall = h("div", { class: "camera-wall", id: "camera-wall" });
  const paused = h("input", { type: "checkbox", id: "cameras-pause" });
  replace(
    root,
    h(
      "section",
      { class: "panel cameras" },
      h(
        "div",
        { class: "toolbar" },
        h("h2", {}, t("cameras.title")),
        h("label", { class: "check" }, paused, " ", t("cameras.pause")),
      ),
      wall,
    ),
  );

  function build() {
    const cameras = [...state.devices.values()]
      .filter((d) => d.family === "cameras")
      .sort((a, b) => a.zone.localeCompare(b.zone) || deviceName(a).localeCompare(deviceName(b)));
    if (!cameras.length) {
      replace(wall, empty(t("cameras.none")));
      return;
    }
    replace(
      wall,
      cameras.map((camera) => {
        const img = h("img", { class: "snapshot", alt: t("cameras.alt", { camera: deviceName(camera) }) });
        const status = h("span", { class: "snapshot-status" });
        const caption = h(
          "figcaption",
          {},
          h("a", { href: `#/equipment/${encodeURIComponent(camera.id)}` }, deviceName(camera)),
          h("span", { class: "muted" }, ` · ${zoneLabel(camera.zone, tx)} `),
          status,
        );
        const figure = h(
          "figure",
          { class: ["camera-tile", `status-${deviceStatus(camera)}`], dataset: { camera: camera.id } },
          h("div", { class: "snapshot-box" }, img),
          caption,
        );
        tiles.set(camera.id, { img, status, figure, url: null, busy: false, taken: null });
        return figure;
      }),
    );
  }

  async function refresh(id, tile) {
    if (tile.busy) return;
    tile.busy = true;
    try {
      const { url, taken } = await api.imageUrl(`/api/v1/cameras/${encodeURIComponent(id)}/snapshot`);
      if (closed) {
        URL.revokeObjectURL(url);
        return;
      }
      const old = tile.url;
      tile.url = url;
      tile.taken = taken || Date.now();
      tile.img.src = url;
      tile.figure.classList.remove("unavailable");
      tile.figure.dataset.loaded = "true";
      if (old) URL.revokeObjectURL(old);
      setText(tile.status, fmtTime(tile.taken));
    } catch (error) {
      tile.figure.classList.add("unavailable");
      setText(tile.status, errorText(error));
    } finally {
      tile.busy = false;
    }
  }

  function tick() {
    if (closed) return;
    if (!paused.checked && !document.hidden) {
      for (const [id, tile] of tiles) refresh(id, tile);
    } else {
      for (const tile of tiles.values()) {
        if (tile.taken) setText(tile.status, `${fmtTime(tile.taken)} (${fmtAge(tile.taken)})`);
      }
    }
    timer = setTimeout(tick, PERIOD_MS);
  }

  build();
  tick();

  return {
    unmount() {
      closed = true;
      clearTimeout(timer);
      for (const tile of tiles.values()) if (tile.url) URL.revokeObjectURL(tile.url);
    },
  };
}
