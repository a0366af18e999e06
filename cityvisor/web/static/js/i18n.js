// French and English: keyed strings (i18n/fr.json, i18n/en.json), the API's own fr/en
// texts, and times shown in the deployment's time zone (the API speaks UTC).

const LANGUAGES = ["fr", "en"];
const STORAGE_KEY = "cityvisor.language";

const dictionaries = { fr: {}, en: {} };
let current = "fr";
let timeZone = "UTC";
const listeners = new Set();
const formatters = new Map();
const missing = new Set();

/** Load both dictionaries (switching language is then instant). */
export async function loadDictionaries() {
  await Promise.all(
    LANGUAGES.map(async (language) => {
      const response = await fetch(`/static/i18n/${language}.json`, { credentials: "same-origin" });
      dictionaries[language] = await response.json();
    }),
  );
}

/** The language: the user's last choice on this browser, else the page's (the site's). */
export function initialLanguage() {
  let stored = null;
  try {
    stored = window.localStorage.getItem(STORAGE_KEY);
  } catch (_error) {
    stored = null;
  }
  if (LANGUAGES.includes(stored)) return stored;
  const page = document.documentElement.dataset.language;
  return LANGUAGES.includes(page) ? page : "fr";
}

export function languages() {
  return LANGUAGES.slice();
}

export function language() {
  return current;
}

/** Switch language; `remember` keeps the choice for this browser. */
export function setLanguage(language, remember = true) {
  if (!LANGUAGES.includes(language)) return;
  current = language;
  document.documentElement.lang = language;
  formatters.clear();
  if (remember) {
    try {
      window.localStorage.setItem(STORAGE_KEY, language);
    } catch (_error) {
      // private mode: the choice lasts for this page only
    }
  }
  for (const listener of listeners) listener(language);
}

/** Call `listener(language)` on every switch; returns a function that stops it. */
export function onLanguageChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** A keyed string in the current language, with {name} placeholders filled in. */
export function t(key, values = {}) {
  let text = dictionaries[current][key];
  if (text === undefined) text = dictionaries.fr[key] ?? dictionaries.en[key];
  if (text === undefined) {
    if (!missing.has(key)) {
      missing.add(key);
      console.warn(`i18n: no text for ${key}`);
    }
    return key;
  }
  return text.replace(/\{(\w+)\}/g, (whole, name) =>
    values[name] === undefined || values[name] === null ? whole : String(values[name]),
  );
}

/** A keyed string if the key exists, else `fallback` (for codes the API may extend). */
export function tOr(key, fallback) {
  const text = dictionaries[current][key] ?? dictionaries.fr[key];
  return text === undefined ? fallback : t(key);
}

/** An API text ({fr, en} or a plain string) in the current language (``code`` marks dropped). */
export function tx(text) {
  if (text === null || text === undefined) return "";
  const found =
    typeof text === "string" ? text : text[current] || text.fr || text.en || Object.values(text)[0] || "";
  return found.replace(/``/g, "");
}

// --------------------------------------------------------------------------- time

/** The deployment's time zone (from /api/v1/site): every time shown is in it. */
export function setTimeZone(zone) {
  try {
    new Intl.DateTimeFormat("en", { timeZone: zone });
    timeZone = zone;
  } catch (_error) {
    timeZone = "UTC";
  }
  formatters.clear();
}

export function getTimeZone() {
  return timeZone;
}

function formatter(kind, options) {
  const key = `${current}|${kind}`;
  let found = formatters.get(key);
  if (!found) {
    const locale = current === "fr" ? "fr-FR" : "en-GB";
    found = new Intl.DateTimeFormat(locale, { timeZone, ...options });
    formatters.set(key, found);
  }
  return found;
}

/** 22/11/2026 08:05:03 (date and time in the site's zone). */
export function fmtDateTime(ms) {
  if (ms === null || ms === undefined) return "—";
  return formatter("datetime", {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  }).format(new Date(ms));
}

/** 08:05:03 (time in the site's zone). */
export function fmtTime(ms) {
  if (ms === null || ms === undefined) return "—";
  return formatter("time", { hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(
    new Date(ms),
  );
}

/** A short clock time for chart axes: "14:05", "14:05:30" or "23/11 14:05". */
export function fmtClock(ms, { seconds = false, days = false } = {}) {
  const options = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  if (seconds) options.second = "2-digit";
  if (days) {
    options.day = "2-digit";
    options.month = "2-digit";
  }
  return formatter(`clock${seconds ? "s" : ""}${days ? "d" : ""}`, options).format(new Date(ms));
}

/** The time zone's short name now (CET, CEST...). */
export function zoneName(ms = Date.now()) {
  const parts = formatter("zone", { timeZoneName: "short" }).formatToParts(new Date(ms));
  const part = parts.find((p) => p.type === "timeZoneName");
  return part ? part.value : timeZone;
}

/** How long ago: "4 s", "12 min", "3 h", "2 j". */
export function fmtAge(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "—";
  return fmtDuration(Math.max(0, (now - ms) / 1000));
}

/** A duration in seconds, short: "45 s", "12 min", "3 h 05", "2 j". */
export function fmtDuration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return t("unit.seconds", { n: s });
  if (s < 3600) return t("unit.minutes", { n: Math.floor(s / 60) });
  if (s < 86400) {
    const minutes = Math.floor((s % 3600) / 60);
    return t("unit.hours", { n: Math.floor(s / 3600), m: String(minutes).padStart(2, "0") });
  }
  return t("unit.days", { n: Math.floor(s / 86400) });
}

/** A number in the current language (at most `digits` decimals). */
export function fmtNumber(value, digits = 2) {
  const key = `number${digits}`;
  let found = formatters.get(`${current}|${key}`);
  if (!found) {
    found = new Intl.NumberFormat(current === "fr" ? "fr-FR" : "en-GB", {
      maximumFractionDigits: digits,
    });
    formatters.set(`${current}|${key}`, found);
  }
  return found.format(value);
}

function wallClockParts(ms) {
  const parts = {};
  for (const part of formatter("parts", {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
  }).formatToParts(new Date(ms))) {
    parts[part.type] = part.value;
  }
  return parts;
}

function zoneOffset(ms) {
  const p = wallClockParts(ms);
  const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour % 24, +p.minute, +p.second);
  return asUtc - Math.floor(ms / 1000) * 1000;
}

/** The UTC epoch ms of a `datetime-local` value read as the site's wall clock. */
export function zonedToUtc(text) {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(text || "");
  if (!match) return null;
  const [, y, mo, d, hh, mm, ss] = match;
  const guess = Date.UTC(+y, +mo - 1, +d, +hh, +mm, +(ss || 0));
  let utc = guess - zoneOffset(guess);
  utc = guess - zoneOffset(utc);
  return utc;
}

/** A `datetime-local` value (site wall clock) for a UTC epoch ms. */
export function utcToZonedInput(ms) {
  const p = wallClockParts(ms);
  return `${p.year}-${p.month}-${p.day}T${String(+p.hour % 24).padStart(2, "0")}:${p.minute}`;
}

/** ISO 8601 in the site's zone with its offset: "2026-11-22T08:05:03+01:00". */
export function fmtIso(ms) {
  const p = wallClockParts(ms);
  const offset = Math.round(zoneOffset(ms) / 60000);
  const sign = offset < 0 ? "-" : "+";
  const hours = String(Math.floor(Math.abs(offset) / 60)).padStart(2, "0");
  const minutes = String(Math.abs(offset) % 60).padStart(2, "0");
  return `${p.year}-${p.month}-${p.day}T${String(+p.hour % 24).padStart(2, "0")}:${p.minute}:${p.second}${sign}${hours}:${minutes}`;
}
