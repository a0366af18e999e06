// What the two automation screens share: the session, the API calls, the texts (fr, en).

let csrf = null;
let texts = {};
let timeZone; // the deployment's (GET /api/v1/site): every time is shown in it
export let session = null;

/** "en" when the browser asks for English (or ?lang=en), French otherwise. */
export const language = (() => {
  const wanted = new URLSearchParams(window.location.search).get("lang") || navigator.language || "fr";
  return wanted.toLowerCase().startsWith("en") ? "en" : "fr";
})();

/** The text of `key` with its {placeholders} filled in. */
export function t(key, values = {}) {
  const text = texts[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (values[name] ?? whole).toString());
}

export function fmtTime(ms) {
  if (ms == null) return "";
  return new Date(ms).toLocaleString(language === "en" ? "en-GB" : "fr-FR", { timeZone });
}

/** One call to the API; a refusal throws an Error with the server's message and status. */
export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) {
    const error = new Error(data.message || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

/** An element: el("td", {class: "x", dataset: {a: 1}}, "text", child...). */
export function el(name, attributes = {}, ...children) {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function say(message, kind = "info") {
  const status = document.getElementById("message");
  status.textContent = message || "";
  status.dataset.kind = kind;
}

export function sayError(error) {
  say(t("error", { message: error.message || String(error) }), "error");
}

export function isSupervisor() {
  return ["supervisor", "admin"].includes(session?.user?.role);
}

/** Load the texts and the session, translate the page's fixed texts, show who is signed in. */
export async function start() {
  const response = await fetch(`/plugins/automation/i18n/${language}.json`, { credentials: "same-origin" });
  texts = await response.json();
  document.documentElement.lang = language;
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
  document.title = `cityvisor: ${t(document.body.dataset.title)}`;
  session = await call("GET", "/api/v1/session");
  csrf = session.csrf_token;
  const site = await call("GET", "/api/v1/site");
  try {
    new Intl.DateTimeFormat("en", { timeZone: site.timezone });
    timeZone = site.timezone;
  } catch (_error) {
    timeZone = undefined; // an unknown zone: the browser's own
  }
  document.getElementById("who").textContent = t("user", { name: session.user.name, role: t(`role.${session.user.role}`) });
}
