// An independent Sparkplug B codec for the link's tests: Eclipse Tahu's sparkplug-payload.
// Reads one JSON request per line on stdin, answers one JSON line on stdout:
//   {"decode": "<base64 payload>"}  ->  the payload as sparkplug-payload decodes it
//   {"encode": {...payload...}}     ->  {"base64": "<payload bytes>"}
"use strict";
const readline = require("readline");
const sparkplug = require("sparkplug-payload").get("spBv1.0");

function plain(value) {
  if (value === null || value === undefined) return value;
  if (typeof value === "object" && typeof value.toNumber === "function") return value.toNumber();
  if (Buffer.isBuffer(value)) return value.toString("base64");
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const request = JSON.parse(line);
  let answer;
  try {
    if (request.decode !== undefined) {
      answer = plain(sparkplug.decodePayload(Buffer.from(request.decode, "base64")));
    } else {
      answer = { base64: Buffer.from(sparkplug.encodePayload(request.encode)).toString("base64") };
    }
  } catch (error) {
    answer = { error: String(error) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
