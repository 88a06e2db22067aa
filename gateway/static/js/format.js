// Time display and conversion in a site's IANA time zone, with Intl only.

const formatters = new Map();

function formatter(timeZone) {
  const key = timeZone || "";
  if (!formatters.has(key)) {
    formatters.set(
      key,
      new Intl.DateTimeFormat("en-GB", {
        timeZone: timeZone || undefined,
        year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
        hourCycle: "h23", timeZoneName: "short",
      }),
    );
  }
  return formatters.get(key);
}

function parts(date, timeZone) {
  const found = {};
  for (const part of formatter(timeZone).formatToParts(date)) found[part.type] = part.value;
  return found;
}

/** Format an RFC 3339 time as `YYYY-MM-DD HH:MM:SS ZONE` in `timeZone`. */
export function formatTime(iso, timeZone) {
  if (!iso) return "—";
  const p = parts(new Date(iso), timeZone);
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
}

/** Format how long ago an RFC 3339 time was, e.g. `42 s ago`. */
export function formatAge(iso, now = Date.now()) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 120) return `${seconds} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function offsetMs(instantMs, timeZone) {
  const p = parts(new Date(instantMs), timeZone);
  const wall = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
  return wall - Math.floor(instantMs / 1000) * 1000;
}

/**
 * Convert a wall-clock `YYYY-MM-DDTHH:MM` in `timeZone` to epoch ms.
 * In the repeated hour when daylight saving ends, the earlier instant wins;
 * a time skipped when it starts maps forward by the jump.
 */
export function zonedToUtcMs(local, timeZone) {
  const [date, time = "00:00"] = local.split("T");
  const [year, month, day] = date.split("-").map(Number);
  const [hour, minute] = time.split(":").map(Number);
  const wall = Date.UTC(year, month - 1, day, hour, minute);
  const dayMs = 86_400_000;
  const before = offsetMs(wall - dayMs, timeZone);
  const offsets = new Set([before, offsetMs(wall, timeZone), offsetMs(wall + dayMs, timeZone)]);
  const valid = [...offsets]
    .map((offset) => wall - offset)
    .filter((instant) => offsetMs(instant, timeZone) === wall - instant);
  return valid.length ? Math.min(...valid) : wall - before;
}

/** Return `YYYY-MM-DDTHH:MM` for epoch ms as wall-clock time in `timeZone`. */
export function utcMsToZoned(instantMs, timeZone) {
  const p = parts(new Date(instantMs), timeZone);
  return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`;
}

/** Return the browser's own IANA time zone, used when a site has none set. */
export function browserTimeZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

/** Create an element with attributes and children; strings become text nodes. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
