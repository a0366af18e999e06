// The HMI: login, the alarm banner, the navigation, and the screens behind hash routes.

import * as api from "./api.js";
import { clear, h, replace, setText } from "./dom.js";
import {
  fmtTime,
  initialLanguage,
  language,
  languages,
  loadDictionaries,
  onLanguageChange,
  setLanguage,
  setTimeZone,
  t,
  tx,
  zoneName,
} from "./i18n.js";
import { live } from "./live.js";
import { hasCameras, PRIORITIES, setDeviceOnline, setDevices, state, zoneLabel } from "./state.js";
import { notify } from "./ui.js";
import * as alarmsView from "./views/alarms.js";
import * as approvalsView from "./views/approvals.js";
import * as camerasView from "./views/cameras.js";
import * as equipmentView from "./views/equipment.js";
import * as journalView from "./views/journal.js";
import * as maintenanceView from "./views/maintenance.js";
import * as mapView from "./views/map.js";
import * as trendsView from "./views/trends.js";

/** The screens, in the navigation's order (keys 1... reach them). */
const VIEWS = [
  { name: "alarms", module: alarmsView },
  { name: "equipment", module: equipmentView },
  { name: "map", module: mapView },
  { name: "trends", module: trendsView },
  { name: "journal", module: journalView },
  { name: "cameras", module: camerasView, when: hasCameras },
  { name: "maintenance", module: maintenanceView },
  { name: "approvals", module: approvalsView },
];

const root = document.getElementById("app");
const siteName = root.dataset.site && !root.dataset.site.startsWith("%") ? root.dataset.site : "";
let current = null; // {name, view, element, route}
let timers = [];
let booted = false;
let onlineWatch = null;

// --------------------------------------------------------------------------- routes

/** "#/equipment/tank-a?x=1" -> {name: "equipment", path: ["tank-a"], query: URLSearchParams}. */
export function parseRoute(hash = window.location.hash) {
  const text = hash.replace(/^#\/?/, "");
  const [path, query = ""] = text.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "alarms", path: parts.slice(1), query: new URLSearchParams(query) };
}

/** Go to a route: navigate("trends", [pointId], {range: "1h"}). */
export function navigate(name, path = [], query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") params.set(key, value);
  }
  const suffix = params.toString() ? `?${params}` : "";
  window.location.hash = `#/${[name, ...path.map(encodeURIComponent)].join("/")}${suffix}`;
}

/** Change the current route's query without a new history entry or a re-render. */
export function replaceQuery(query) {
  const route = parseRoute();
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") params.set(key, value);
  }
  const path = [route.name, ...route.path.map(encodeURIComponent)].join("/");
  const suffix = params.toString() ? `?${params}` : "";
  window.history.replaceState(null, "", `#/${path}${suffix}`);
  if (current) current.route = parseRoute();
}

function route() {
  if (!state.session) return;
  const wanted = parseRoute();
  let entry = VIEWS.find((v) => v.name === wanted.name && (!v.when || v.when()));
  if (!entry) {
    entry = VIEWS[0];
    wanted.name = entry.name;
  }
  for (const link of document.querySelectorAll(".nav a[data-view]")) {
    const active = link.dataset.view === entry.name;
    link.classList.toggle("active", active);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (current && current.name === entry.name && current.view.update) {
    current.route = wanted;
    current.view.update(wanted);
    return;
  }
  unmountView();
  const element = document.getElementById("view");
  clear(element);
  element.className = `view view-${entry.name}`;
  const ctx = { navigate, replaceQuery, api, live };
  current = { name: entry.name, route: wanted, element, view: entry.module.mount(element, wanted, ctx) || {} };
}

function unmountView() {
  if (current && current.view.unmount) {
    try {
      current.view.unmount();
    } catch (error) {
      console.error("unmount failed", error);
    }
  }
  current = null;
}

function remountView() {
  unmountView();
  route();
}

// --------------------------------------------------------------------------- login

function languageSwitch() {
  return h(
    "div",
    { class: "language-switch", role: "group", "aria-label": t("language.choose") },
    languages().map((code) =>
      h(
        "button",
        {
          type: "button",
          class: ["lang", code === language() ? "active" : ""],
          "aria-pressed": String(code === language()),
          lang: code,
          dataset: { lang: code },
          onclick: () => setLanguage(code),
        },
        code.toUpperCase(),
      ),
    ),
  );
}

function showLogin(message = "") {
  state.session = null;
  onlineWatch?.close();
  onlineWatch = null;
  live.stop();
  unmountView();
  for (const timer of timers) clearInterval(timer);
  timers = [];
  const username = h("input", {
    id: "login-username",
    name: "username",
    autocomplete: "username",
    required: true,
  });
  const password = h("input", {
    id: "login-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const status = h("p", { class: "login-error", role: "alert", id: "login-error" }, message);
  const submit = h("button", { type: "submit", class: "primary", id: "login-submit" }, t("login.submit"));
  const form = h(
    "form",
    { class: "login-form", id: "login-form", novalidate: false },
    h("h1", {}, siteName || "cityvisor"),
    h("p", { class: "login-subtitle" }, t("login.title")),
    h("label", { class: "field", for: "login-username" }, h("span", { class: "field-label" }, t("login.username")), username),
    h("label", { class: "field", for: "login-password" }, h("span", { class: "field-label" }, t("login.password")), password),
    status,
    submit,
    languageSwitch(),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    setText(status, "");
    try {
      const session = await api.request("POST", "/api/v1/session", {
        username: username.value.trim(),
        password: password.value,
      });
      await startSession(session);
    } catch (error) {
      submit.disabled = false;
      if (error.status === 429) {
        setText(status, t("login.limited"));
      } else if (error.status === 401) {
        setText(status, t("login.bad"));
      } else {
        setText(status, t("login.failed", { message: error.message }));
      }
      password.value = "";
      password.focus();
    }
  });
  replace(root, h("main", { class: "login" }, form));
  root.className = "app app-login";
  username.focus();
}

// --------------------------------------------------------------------------- session

async function startSession(session) {
  api.setCsrfToken(session.csrf_token);
  state.session = session;
  const [site, devices] = await Promise.all([api.get("/api/v1/site"), api.get("/api/v1/devices")]);
  state.site = site;
  setTimeZone(site.timezone);
  setDevices(devices.devices);
  renderShell();
  live.start();
  onlineWatch?.close();
  onlineWatch = live.watch(["*/*/*/online"], (values) => {
    for (const value of values) {
      const deviceId = value.id.split("/")[2];
      setDeviceOnline(deviceId, value.value === true && value.quality.status !== "bad");
    }
  });
  refreshApprovals();
  refreshFlood();
  timers.push(setInterval(refreshApprovals, 5000));
  timers.push(setInterval(refreshFlood, 30000));
  timers.push(setInterval(refreshDevices, 10000));
  timers.push(setInterval(tickClock, 1000));
  route();
}

async function logout() {
  try {
    await api.request("DELETE", "/api/v1/session");
  } catch (_error) {
    // already gone: the login form is what is left either way
  }
  api.setCsrfToken(null);
  showLogin();
}

async function refreshDevices() {
  try {
    const devices = await api.get("/api/v1/devices");
    setDevices(devices.devices);
  } catch (_error) {
    // shown by the connection indicator; tried again shortly
  }
}

async function refreshApprovals() {
  try {
    const found = await api.get("/api/v1/commands/approvals");
    state.pendingApprovals = found.approvals.length;
    state.events.emit("approvals", found);
    const badge = document.getElementById("approvals-count");
    if (badge) {
      setText(badge, found.approvals.length ? String(found.approvals.length) : "");
      badge.hidden = !found.approvals.length;
    }
  } catch (_error) {
    // next time
  }
}

async function refreshFlood() {
  try {
    const kpis = await api.get("/api/v1/alarms/kpis", { period: 3600 });
    state.floodZones = kpis.in_flood || [];
    renderCounts();
  } catch (_error) {
    // next time
  }
}

// --------------------------------------------------------------------------- shell

function renderShell() {
  root.className = "app";
  const user = state.session.user;
  const banner = h(
    "header",
    { class: "banner", id: "banner" },
    h("div", { class: "brand" }, h("span", { class: "brand-name" }, state.site.name || siteName)),
    h("div", { class: "alarm-counts", id: "alarm-counts", role: "group", "aria-label": t("banner.counts") }),
    h("span", { class: "connection", id: "connection", role: "status" }),
    h("span", { class: "clock", id: "clock" }),
    h(
      "div",
      { class: "user" },
      h("span", { class: "user-name", id: "user-name" }, user.name),
      h("span", { class: "user-role" }, t(`role.${user.role}`)),
      languageSwitch(),
      h("button", { type: "button", class: "logout", id: "logout", onclick: logout }, t("login.logout")),
    ),
  );
  const nav = h(
    "nav",
    { class: "nav", "aria-label": t("nav.label") },
    VIEWS.filter((v) => !v.when || v.when()).map((v, index) =>
      h(
        "a",
        {
          href: `#/${v.name}`,
          dataset: { view: v.name },
          title: `${t(`nav.${v.name}`)} (${index + 1})`,
        },
        t(`nav.${v.name}`),
        v.name === "approvals" ? h("span", { class: "count", id: "approvals-count", hidden: true }) : null,
      ),
    ),
    // The plugins' own screens (hook cityvisor_web_pages): pages of their own, not views.
    (state.site.pages || []).map((page) =>
      h("a", { href: page.path, class: "nav-page", dataset: { page: page.name } }, tx(page.label)),
    ),
  );
  replace(
    root,
    banner,
    nav,
    h("main", { class: "view", id: "view", tabindex: "-1" }),
    h("div", { class: "notices", id: "notices", "aria-live": "polite" }),
  );
  renderCounts();
  renderConnection(live.status);
  tickClock();
  refreshApprovals();
}

function renderCounts() {
  const element = document.getElementById("alarm-counts");
  if (!element) return;
  const boxes = PRIORITIES.map((priority) => {
    const count = state.counts[priority] || { annunciated: 0, unacked: 0 };
    return h(
      "a",
      {
        href: `#/alarms?priority=${priority}`,
        class: [
          "count-box",
          `priority-${priority}`,
          count.annunciated ? "has-alarms" : "no-alarms",
          count.unacked ? "unacked" : "",
        ],
        dataset: { priority, annunciated: count.annunciated, unacked: count.unacked },
        title: t("banner.count_title", {
          priority: t(`priority.${priority}`),
          n: count.annunciated,
          u: count.unacked,
        }),
      },
      h("span", { class: "count-label" }, t(`priority.${priority}`)),
      h("span", { class: "count-value" }, String(count.annunciated)),
      count.unacked ? h("span", { class: "count-unacked" }, t("banner.unacked", { n: count.unacked })) : null,
    );
  });
  // The zones by name, on one line: the full list is in the title when it does not fit.
  const zones = state.floodZones.map((zone) => zoneLabel(zone, tx)).join(", ");
  const flood = state.floodZones.length
    ? h("span", { class: "flood", id: "flood", title: zones, dataset: { zones: state.floodZones.join(",") } }, t("banner.flood", { zones }))
    : null;
  replace(element, boxes, flood);
}

function renderConnection(status) {
  const element = document.getElementById("connection");
  if (!element) return;
  element.className = `connection connection-${status}`;
  element.dataset.status = status;
  setText(element, t(`connection.${status}`));
}

function tickClock() {
  const element = document.getElementById("clock");
  if (element) setText(element, `${fmtTime(Date.now())} ${zoneName()}`);
}

// --------------------------------------------------------------------------- start

state.events.on("counts", renderCounts);
state.events.on("alarms", (change) => {
  const kind = change?.event?.kind;
  if (kind === "flood_started" || kind === "flood_ended") refreshFlood();
});
live.events.on("status", renderConnection);
live.events.on("session_ended", () => showLogin(t("login.ended")));
api.setUnauthenticatedHandler(() => {
  if (state.session) showLogin(t("login.ended"));
});

onLanguageChange(() => {
  if (!booted) return;
  if (state.session) {
    renderShell();
    remountView();
  } else {
    const typed = document.getElementById("login-username")?.value || "";
    showLogin();
    document.getElementById("login-username").value = typed;
  }
});

window.addEventListener("hashchange", route);
window.addEventListener("keydown", (event) => {
  // 1...8 reach the screens (Alt+1...8 too, where the browser leaves them to the page),
  // unless the key is typed into a field or a dialog is open.
  if (!state.session || event.ctrlKey || event.metaKey || event.shiftKey) return;
  const target = event.target;
  const typing =
    target instanceof HTMLElement &&
    (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
  if ((typing && !event.altKey) || document.querySelector("dialog[open]")) return;
  if (!/^[1-9]$/.test(event.key)) return;
  const index = Number(event.key) - 1;
  const links = [...document.querySelectorAll(".nav a[data-view]")];
  if (index >= 0 && index < links.length) {
    event.preventDefault();
    window.location.hash = links[index].getAttribute("href");
  }
});

async function boot() {
  await loadDictionaries();
  setLanguage(initialLanguage(), false);
  booted = true;
  let session = null;
  try {
    session = await api.request("GET", "/api/v1/session", undefined, { quiet401: true });
  } catch (_error) {
    session = null;
  }
  if (session) {
    try {
      await startSession(session);
      return;
    } catch (error) {
      console.error(error);
    }
  }
  showLogin();
}

boot().catch((error) => {
  console.error(error);
  notify(String(error), "error");
});
