// The WebSocket (/api/v1/ws): live point values for what the screens watch, and the alarm feed.
//
// Screens call watch(patterns, callback); the client subscribes to the union of
// every screen's patterns (one subscription per connection, as the protocol
// wants), keeps the last value of each point, and hands each screen the values
// its patterns match. It reconnects with backoff and starts again from a
// snapshot; a "resync" replaces everything.

import { applyAlarmEvent, Emitter, resetAlarms } from "./state.js";

/**
 * A pattern of point ids as the server reads it (cityvisor/core/patterns.py):
 * `*` and `?` within a level; `**` as a whole level, any number of levels
 * (`a/**` matches `a` too); `**` inside a level is a `*`. Test it on `id + "/"`.
 */
export function globToRegExp(pattern) {
  let source = "";
  for (const level of pattern.split("/")) {
    if (level === "**") {
      source += "(?:[^/]*/)*";
      continue;
    }
    for (const c of level.replace(/\*+/g, "*")) {
      if (c === "*") source += "[^/]*";
      else if (c === "?") source += "[^/]";
      else source += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
    source += "/";
  }
  return new RegExp(`^${source}$`);
}

class Watch {
  constructor(live, patterns, callback) {
    this.live = live;
    this.patterns = patterns.slice();
    this.regexps = patterns.map(globToRegExp);
    this.callback = callback;
  }

  matches(id) {
    const level = `${id}/`;
    return this.regexps.some((r) => r.test(level));
  }

  /** Stop receiving values. */
  close() {
    this.live.unwatch(this);
  }
}

export class LiveClient {
  constructor() {
    this.ws = null;
    this.watches = new Set();
    this.values = new Map();
    this.sub = null;
    this.sentPatterns = null;
    this.pendingSubscribe = null;
    this.retry = 0;
    this.timer = null;
    this.pinger = null;
    this.stopped = true;
    this.status = "offline";
    this.events = new Emitter();
  }

  /** Connect (after login). */
  start() {
    this.stopped = false;
    this.connect();
  }

  /** Disconnect for good (logout). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.values.clear();
    this.setStatus("offline");
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.events.emit("status", status);
  }

  connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${window.location.host}/api/v1/ws`);
    this.ws = ws;
    this.setStatus("connecting");
    ws.addEventListener("open", () => {
      this.retry = 0;
      this.sub = null;
      this.sentPatterns = null;
      this.send({ type: "subscribe", points: this.patterns(), alarms: true });
      this.sentPatterns = this.patternKey();
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: "ping" }), 25000);
    });
    ws.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (_error) {
        return;
      }
      this.receive(message);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      clearInterval(this.pinger);
      this.ws = null;
      if (event.code === 4401) {
        this.setStatus("offline");
        this.events.emit("session_ended");
        return;
      }
      if (this.stopped) return;
      this.setStatus("reconnecting");
      const delay = Math.min(15000, 500 * 2 ** this.retry) * (0.8 + Math.random() * 0.2);
      this.retry += 1;
      this.timer = setTimeout(() => this.connect(), delay);
    });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  patterns() {
    const all = new Set();
    for (const watch of this.watches) for (const p of watch.patterns) all.add(p);
    return [...all].sort();
  }

  patternKey() {
    return JSON.stringify(this.patterns());
  }

  /** Receive the values of the points matching `patterns`: callback(values, {snapshot}). */
  watch(patterns, callback) {
    const watch = new Watch(this, patterns, callback);
    this.watches.add(watch);
    if (this.patternKey() === this.sentPatterns) {
      // Already subscribed to all of it: hand over what is known at once.
      const known = [...this.values.values()].filter((v) => watch.matches(v.id));
      if (known.length) queueMicrotask(() => watch.callback(known, { snapshot: true }));
    } else {
      this.resubscribe();
    }
    return watch;
  }

  unwatch(watch) {
    if (this.watches.delete(watch)) this.resubscribe();
  }

  /** The last known value of a point (null if none). */
  value(id) {
    return this.values.get(id) || null;
  }

  resubscribe() {
    if (this.pendingSubscribe) return;
    // Gathered for a moment: screens add and remove watches together, and the
    // server allows ten messages a second.
    this.pendingSubscribe = setTimeout(() => {
      this.pendingSubscribe = null;
      const key = this.patternKey();
      if (key === this.sentPatterns) return;
      this.sentPatterns = key;
      this.send({ type: "subscribe", points: this.patterns() });
    }, 60);
  }

  receive(message) {
    switch (message.type) {
      case "hello":
        this.setStatus("live");
        break;
      case "subscribed":
        this.sub = message.sub;
        break;
      case "snapshot":
      case "resync":
        if (message.sub !== this.sub) return;
        // A large snapshot comes in parts: replace at the first, show after the last.
        if (!message.continued) this.values = new Map();
        for (const value of message.points) this.values.set(value.id, value);
        if (!message.more) this.dispatch([...this.values.values()], true);
        break;
      case "changes":
        if (message.sub !== this.sub) return;
        for (const value of message.points) this.values.set(value.id, value);
        this.dispatch(message.points, false);
        break;
      case "alarms":
        resetAlarms(message.alarms, message.counts);
        break;
      case "alarm":
        applyAlarmEvent(message.event, message.alarm, message.counts);
        this.events.emit("alarm_event", message.event);
        break;
      case "session_ended":
        this.events.emit("session_ended");
        break;
      case "error":
        console.warn("WebSocket error message", message);
        break;
      default:
        break;
    }
  }

  dispatch(values, snapshot) {
    for (const watch of this.watches) {
      const mine = values.filter((v) => watch.matches(v.id));
      if (mine.length || snapshot) {
        try {
          watch.callback(mine, { snapshot });
        } catch (error) {
          console.error("a live view failed", error);
        }
      }
    }
  }
}

export const live = new LiveClient();
