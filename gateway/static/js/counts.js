// Counts view: line or zone counts per bucket in the site's time zone, an
// optional comparison period of the same length, and the CSV download.

import { get, query, ApiError } from "./api.js";
import { drawChart } from "./chart.js";
import { browserTimeZone, el, utcMsToZoned, zonedToUtcMs } from "./format.js";

const ZONE_FIGURE = "max";
const BUCKET_MS = { "1m": 60_000, "15m": 900_000, "1h": 3_600_000, "1d": 86_400_000 };

export class CountsView {
  constructor({ siteTimeZone }) {
    this.siteTimeZone = siteTimeZone;
    this.form = document.getElementById("count-form");
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.show();
    });
    this.form.addEventListener("change", () => this.updateCsvLink());
    // The site decides the time zone of From and To, so the form waits for
    // the site list before it can be submitted.
    this.form.querySelector("button[type=submit]").disabled = true;
  }

  timeZone() {
    return this.siteTimeZone(this.form.elements.site.value) || browserTimeZone();
  }

  /** Fill the site and node choices and default the period to the last 24 h. */
  setChoices(nodes) {
    const sites = [...new Set(nodes.map((node) => node.site))].sort();
    fill(this.form.elements.site, sites, false);
    fill(this.form.elements.node, [...new Set(nodes.map((node) => node.node))].sort(), true);
    if (!this.form.elements.to.value) this.setPeriod(Date.now() - 86_400_000, Date.now());
    this.form.querySelector("button[type=submit]").disabled = sites.length === 0;
    this.updateCsvLink();
  }

  setPeriod(fromMs, toMs) {
    const tz = this.timeZone();
    this.form.elements.from.value = utcMsToZoned(fromMs, tz);
    this.form.elements.to.value = utcMsToZoned(toMs + 60_000, tz);
  }

  params(fromMs, toMs) {
    const values = Object.fromEntries(new FormData(this.form).entries());
    const kind = values.kind === "zones" ? "zones" : "lines";
    return {
      kind,
      site: values.site,
      node: values.node,
      line: kind === "lines" ? values.name.trim() : "",
      zone: kind === "zones" ? values.name.trim() : "",
      class: values.class.trim(),
      direction: values.direction,
      bucket: values.bucket,
      tz: this.timeZone(),
      from: new Date(fromMs).toISOString(),
      to: new Date(toMs).toISOString(),
    };
  }

  period() {
    const tz = this.timeZone();
    const fromMs = zonedToUtcMs(this.form.elements.from.value, tz);
    const toMs = zonedToUtcMs(this.form.elements.to.value, tz);
    const compare = this.form.elements.compare.value;
    return { fromMs, toMs, compareMs: compare ? zonedToUtcMs(compare, tz) : null };
  }

  updateCsvLink() {
    const link = document.getElementById("count-csv");
    if (!this.form.elements.from.value || !this.form.elements.to.value) return;
    const { fromMs, toMs } = this.period();
    if (!(fromMs < toMs)) return;
    link.href = `/api/v1/counts.csv${query(this.params(fromMs, toMs))}`;
  }

  async show() {
    const note = document.getElementById("count-note");
    const { fromMs, toMs, compareMs } = this.period();
    if (!(fromMs < toMs)) {
      note.textContent = "The period is empty: set From earlier than To.";
      return;
    }
    this.updateCsvLink();
    try {
      const main = await get(`/api/v1/counts${query(this.params(fromMs, toMs))}`);
      const other = compareMs === null ? null : await get(`/api/v1/counts${query(this.params(compareMs, compareMs + (toMs - fromMs)))}`);
      this.draw(main, other, fromMs, toMs, compareMs);
    } catch (error) {
      note.textContent = error instanceof ApiError ? `Could not load counts: ${error.detail}` : String(error);
    }
  }

  draw(main, other, fromMs, toMs, compareMs) {
    const kind = this.form.elements.kind.value === "zones" ? "zones" : "lines";
    const tz = this.timeZone();
    const all = toSeries(main[kind], kind, fromMs, false);
    if (other) all.push(...toSeries(other[kind], kind, compareMs, true));
    // All-zero series (classes the node reports but never saw) would only
    // crowd the legend and reuse colours, so they are left out of the chart.
    const series = all.filter((item) => item.points.some(([, value]) => value > 0));

    // A comparison series takes the colour of its main series, dashed.
    const colours = new Map();
    for (const item of series) {
      const base = item.label.replace(" (comparison)", "");
      if (!colours.has(base)) colours.set(base, colours.size);
      item.colour = colours.get(base);
    }

    const total = (rows) => rows.reduce((sum, row) => sum + figures(row, kind).reduce((a, [, v]) => a + v, 0), 0);
    const mainTotal = total(main[kind]);
    let text = `${kind === "lines" ? "Crossings" : "Peak occupancy per bucket"} in ${tz}, bucket ${main.bucket}`;
    if (kind === "lines") text += `: total ${mainTotal}`;
    if (other && kind === "lines") {
      const otherTotal = total(other[kind]);
      const change = otherTotal ? ` (${(((mainTotal - otherTotal) / otherTotal) * 100).toFixed(1)} %)` : "";
      text += ` against ${otherTotal} in the comparison period${change}`;
    }
    if (all.length > series.length) text += `. ${all.length - series.length} series with only zeros are not drawn`;
    document.getElementById("count-note").textContent = series.length ? `${text}.` : "No counts in this period.";

    drawChart(document.getElementById("count-chart"), series, {
      spanMs: toMs - fromMs,
      bucketMs: BUCKET_MS[main.bucket] || 3_600_000,
      xLabel: (x) => utcMsToZoned(fromMs + x, tz).replace("T", " ").slice(toMs - fromMs > 86_400_000 ? 5 : 11),
      yLabel: kind === "lines" ? "crossings" : "people/objects",
    });
    this.renderTable(main[kind], kind);
  }

  renderTable(rows, kind) {
    const columns = kind === "lines"
      ? ["bucket_start", "node", "line", "class", "in", "out"]
      : ["bucket_start", "node", "zone", "class", "entries", "exits", "max", "mean"];
    document.querySelector("#count-table thead").replaceChildren(el("tr", {}, columns.map((name) => el("th", { scope: "col" }, name))));
    document.querySelector("#count-table tbody").replaceChildren(
      ...rows.map((row) => el("tr", {}, columns.map((name) => el("td", {}, row[name] ?? "—")))),
    );
  }
}

function figures(row, kind) {
  if (kind === "zones") return [[ZONE_FIGURE, row[ZONE_FIGURE]]];
  return ["in", "out"].filter((name) => name in row).map((name) => [name, row[name]]);
}

function toSeries(rows, kind, startMs, compare) {
  const groups = new Map();
  for (const row of rows) {
    const x = Date.parse(row.bucket_start) - startMs;
    for (const [figure, value] of figures(row, kind)) {
      const label = `${row.node} · ${row[kind === "lines" ? "line" : "zone"]} · ${row.class} · ${figure}${compare ? " (comparison)" : ""}`;
      if (!groups.has(label)) groups.set(label, []);
      groups.get(label).push([x, value]);
    }
  }
  return [...groups.entries()].map(([label, points], index) => ({
    label,
    points: points.sort((a, b) => a[0] - b[0]),
    compare,
    colour: index,
  }));
}

function fill(select, values, withAll) {
  const current = select.value;
  const options = values.map((value) => el("option", { value }, value));
  if (withAll) options.unshift(el("option", { value: "" }, "all"));
  select.replaceChildren(...options);
  if (values.includes(current)) select.value = current;
}
