// A small SVG line chart with no library and no build step. Each series is
// a list of [x, y] points, with x in ms from the period start. Comparison
// series are drawn dashed on the same x axis.

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 960;
const HEIGHT = 360;
const PAD = { left: 56, right: 48, top: 32, bottom: 64 };

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

/**
 * Draw series into `container`.
 * @param {HTMLElement} container
 * @param {{label: string, points: number[][], compare?: boolean, colour: number}[]} series
 * @param {{spanMs: number, bucketMs: number, xLabel: (x: number) => string, yLabel: string}} axes
 */
export function drawChart(container, series, axes) {
  container.replaceChildren();
  const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT + 22 * Math.ceil(series.length / 3)}`, role: "presentation" });
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const yMax = niceMax(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1]))));
  const xOf = (x) => PAD.left + (axes.spanMs ? (x / axes.spanMs) * plotW : 0);
  const yOf = (y) => PAD.top + plotH - (y / yMax) * plotH;

  for (let i = 0; i <= 4; i += 1) {
    const value = (yMax * i) / 4;
    root.append(svg("line", { class: "axis", x1: PAD.left, x2: WIDTH - PAD.right, y1: yOf(value), y2: yOf(value) }));
    root.append(svg("text", { x: PAD.left - 6, y: yOf(value) + 4, "text-anchor": "end" }, String(+value.toFixed(2))));
  }
  // Ticks fall on bucket starts when there are few buckets, so two ticks
  // never carry the same minute label.
  const ticks = Math.max(1, Math.min(6, Math.round(axes.spanMs / axes.bucketMs)));
  for (let i = 0; i <= ticks; i += 1) {
    const x = (axes.spanMs * i) / ticks;
    let anchor = "middle";
    if (i === 0) anchor = "start";
    if (i === ticks) anchor = "end";
    root.append(svg("text", { x: xOf(x), y: HEIGHT - PAD.bottom + 18, "text-anchor": anchor }, axes.xLabel(x)));
  }
  root.append(svg("text", { x: 8, y: 14 }, axes.yLabel));

  series.forEach((item, index) => {
    const points = item.points.map(([x, y]) => `${xOf(x).toFixed(1)},${yOf(y).toFixed(1)}`).join(" ");
    const colour = `series-${item.colour % 6}`;
    root.append(svg("polyline", { class: `${colour}${item.compare ? " compare" : ""}`, points }));
    for (const [x, y] of item.points) {
      root.append(svg("circle", { class: colour, cx: xOf(x), cy: yOf(y), r: 3 }, undefined));
    }
    const legendX = PAD.left + (index % 3) * (plotW / 3);
    const legendY = HEIGHT - 12 + 22 * Math.floor(index / 3);
    const legend = svg("g", { class: "legend" });
    legend.append(svg("line", { class: `${colour}${item.compare ? " compare" : ""}`, x1: legendX, x2: legendX + 24, y1: legendY - 4, y2: legendY - 4, "stroke-width": 3, "stroke-dasharray": item.compare ? "6 4" : "none" }));
    legend.append(svg("text", { x: legendX + 30, y: legendY }, item.label));
    root.append(legend);
  });
  container.append(root);
}
