// The REST API: JSON in and out, the session cookie, the CSRF token on every change.

let csrfToken = null;
let onUnauthenticated = () => {};

/** An answer with a 4xx/5xx status: `status`, `code` and the decoded `body`. */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.code = this.body.error || `http_${status}`;
  }
}

/** The session's CSRF token (from the login answer or GET /api/v1/session). */
export function setCsrfToken(token) {
  csrfToken = token;
}

/** What to do when the server says the session is gone (401 on a route that needs one). */
export function setUnauthenticatedHandler(handler) {
  onUnauthenticated = handler;
}

/** `/api/v1/journal?kind=ack&user=sam` from a path and parameters (empty ones left out). */
export function url(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** Send a request; resolve with the decoded body (and `status`), or reject with ApiError. */
export async function request(method, path, body = undefined, { quiet401 = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (_error) {
    throw new ApiError(0, { error: "network", message: "network error" });
  }
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/json")) {
    data = await response.json();
  } else if (response.status !== 204) {
    data = { message: await response.text() };
  }
  if (!response.ok) {
    if (response.status === 401 && !quiet401 && path !== "/api/v1/session") onUnauthenticated();
    throw new ApiError(response.status, data);
  }
  if (data && typeof data === "object" && !Array.isArray(data)) {
    Object.defineProperty(data, "status", { value: response.status, enumerable: false });
  }
  return data;
}

export const get = (path, params) => request("GET", url(path, params));
export const post = (path, body = {}) => request("POST", path, body);
export const del = (path) => request("DELETE", path);

/** Fetch an image (snapshot, evidence) as an object URL; the caller revokes it. */
export async function imageUrl(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) {
    let body = {};
    try {
      body = await response.json();
    } catch (_error) {
      body = {};
    }
    throw new ApiError(response.status, body);
  }
  const taken = Number(response.headers.get("X-Snapshot-Time")) || null;
  return { url: URL.createObjectURL(await response.blob()), taken };
}

/** Point ids hold slashes: the history route takes them as they are, each part encoded. */
export function pointPath(pointId) {
  return pointId.split("/").map(encodeURIComponent).join("/");
}
