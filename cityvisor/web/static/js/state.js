// What every screen shares: the site, the user, the annunciated alarms and their counts.

/** A minimal event emitter: on(name, fn) returns a function that stops listening. */
export class Emitter {
  constructor() {
    this.listeners = new Map();
  }

  on(name, listener) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(listener);
    return () => this.listeners.get(name)?.delete(listener);
  }

  emit(name, ...args) {
    for (const listener of this.listeners.get(name) || []) {
      try {
        listener(...args);
      } catch (error) {
        console.error(`listener of ${name} failed`, error);
      }
    }
  }
}

export const PRIORITIES = ["critical", "high", "medium", "low"];

/** The shared state; `events` says what changed ("alarms", "counts", "flood", "session"...). */
export const state = {
  site: null,
  session: null,
  devices: new Map(),
  alarms: new Map(),
  counts: Object.fromEntries(PRIORITIES.map((p) => [p, { annunciated: 0, unacked: 0 }])),
  floodZones: [],
  pendingApprovals: 0,
  events: new Emitter(),
};

/** The logged-in user's role rank: viewer 0 < operator 1 < supervisor 2 < admin 3. */
export function roleRank(role) {
  return ["viewer", "operator", "supervisor", "admin"].indexOf(role);
}

/** True if the user may act (with `role` at least) in `zone`: the server decides anyway. */
export function userMay(role, zone) {
  const user = state.session?.user;
  if (!user) return false;
  if (roleRank(user.role) < roleRank(role)) return false;
  return user.zones.includes("*") || zone === null || zone === undefined || user.zones.includes(zone);
}

/** The annunciated alarms, as the WebSocket's alarm feed keeps them. */
export function resetAlarms(list, counts) {
  state.alarms = new Map(list.map((a) => [a.id, a]));
  if (counts) state.counts = counts;
  state.events.emit("alarms", null);
  state.events.emit("counts", state.counts);
}

/** One journaled alarm transition: keep the alarm if still annunciated, else drop it. */
export function applyAlarmEvent(event, alarm, counts) {
  if (alarm && alarm.annunciated) {
    state.alarms.set(alarm.id, alarm);
  } else if (alarm) {
    state.alarms.delete(alarm.id);
  }
  if (counts) state.counts = counts;
  state.events.emit("alarms", { event, alarm });
  state.events.emit("counts", state.counts);
}

/** The devices by id (from /api/v1/devices). */
export function setDevices(list) {
  state.devices = new Map(list.map((d) => [d.id, d]));
  state.events.emit("devices", state.devices);
}

/** A zone's label in the current language, from the site's zones. */
export function zoneLabel(zoneId, tx) {
  const zone = state.site?.zones.find((z) => z.id === zoneId);
  if (!zone) return zoneId;
  return (zone.label && tx(zone.label)) || zone.name || zoneId;
}

/** True if the cameras plugin is there (its routes and a camera device). */
export function hasCameras() {
  return Boolean(state.site?.families.includes("cameras"));
}

/** How many annunciated alarms a device has (live, from the alarm feed). */
export function deviceAlarmCount(deviceId) {
  let count = 0;
  for (const alarm of state.alarms.values()) if (alarm.device_id === deviceId) count += 1;
  return count;
}

/** A device's state for colours: "alarm", "offline" or "online" (live). */
export function deviceStatus(device) {
  if (!device) return "offline";
  if (!device.communication.online) return "offline";
  if (deviceAlarmCount(device.id)) return "alarm";
  return "online";
}

/** The `online` point of a device changed (every device has one): keep the list live. */
export function setDeviceOnline(deviceId, online) {
  const device = state.devices.get(deviceId);
  if (!device || device.communication.online === online) return;
  device.communication = { ...device.communication, online };
  state.events.emit("devices", state.devices);
}
