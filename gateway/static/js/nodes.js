// Nodes view: the site plan with node markers, the node table, and the
// admin setup (plan upload, time zone, placing nodes by clicking the plan).

import { get, put, ApiError } from "./api.js";
import { el, formatAge, formatTime } from "./format.js";

const STATE_ICON = { online: "●", degraded: "▲", tampering: "⚠", offline: "✖", unknown: "?" };
const DEGRADING_TYPES = new Set(["node_degraded", "camera_offline"]);

/**
 * Return the state shown for a node: offline from the gateway, tampering or
 * degraded from the node's active incidents and heartbeat, else online.
 */
export function displayState(node, activeIncidents) {
  if (node.state === "offline") return "offline";
  const own = activeIncidents.filter((item) => item.site === node.site && item.node === node.node && item.active);
  if (own.some((item) => item.type === "tampering")) return "tampering";
  if (own.some((item) => DEGRADING_TYPES.has(item.type))) return "degraded";
  if (node.source_state && node.source_state !== "online") return "degraded";
  // Below half the target frame rate, line counts start to miss crossings.
  if (node.target_fps && node.fps !== null && node.fps < node.target_fps / 2) return "degraded";
  return node.state === "online" ? "online" : "unknown";
}

export class NodesView {
  constructor({ session, onSites }) {
    this.session = session;
    this.onSites = onSites;
    this.nodes = [];
    this.incidents = [];
    this.sites = new Map();
    this.siteSelect = document.getElementById("node-site");
    this.canvas = document.getElementById("plan-canvas");
    this.image = document.getElementById("plan-image");
    this.adminForm = document.getElementById("plan-admin");
    this.siteSelect.addEventListener("change", () => this.showSite());
    this.canvas.addEventListener("click", (event) => this.place(event));
    this.image.addEventListener("error", () => {
      this.image.hidden = true;
      document.getElementById("plan-caption").textContent = "No plan image for this site yet.";
    });
    this.image.addEventListener("load", () => {
      this.image.hidden = false;
    });
    if (session.role === "admin") this.setupAdmin();
  }

  /** Return the site's time zone, or null when none is set. */
  timeZone(site) {
    return this.sites.get(site)?.time_zone || null;
  }

  async refresh() {
    try {
      const [nodes, active] = await Promise.all([
        get("/api/v1/nodes"),
        get("/api/v1/incidents?active=true&limit=1000"),
      ]);
      this.nodes = nodes;
      this.incidents = active;
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) this.message(`Could not load nodes: ${error.message}`);
      return;
    }
    const siteNames = [...new Set(this.nodes.map((node) => node.site))].sort();
    await Promise.all(siteNames.map((site) => this.loadSite(site)));
    const current = this.siteSelect.value;
    this.siteSelect.replaceChildren(...siteNames.map((site) => el("option", { value: site }, site)));
    if (siteNames.includes(current)) this.siteSelect.value = current;
    this.onSites(this.nodes);
    this.render();
  }

  async loadSite(site) {
    try {
      this.sites.set(site, await get(`/api/v1/sites/${encodeURIComponent(site)}`));
    } catch (error) {
      console.warn("could not load site settings", site, error);
    }
  }

  async showSite() {
    this.render();
  }

  render() {
    const site = this.siteSelect.value;
    const settings = this.sites.get(site);
    const nodes = this.nodes.filter((node) => node.site === site);
    const tz = this.timeZone(site);
    document.getElementById("node-tz").textContent = tz ? `Times in ${tz}` : "No site time zone set; times in this browser's zone";
    this.renderPlan(site, settings, nodes);
    this.renderTable(nodes, tz);
    if (this.session.role === "admin") this.fillPlaceChoices(nodes, settings);
  }

  renderPlan(site, settings, nodes) {
    for (const marker of this.canvas.querySelectorAll(".marker")) marker.remove();
    if (!settings?.plan) {
      this.image.hidden = true;
      this.image.removeAttribute("src");
      document.getElementById("plan-caption").textContent = site ? `No plan image for ${site} yet.` : "No nodes have reported yet.";
      return;
    }
    const src = `/api/v1/sites/${encodeURIComponent(site)}/plan?v=${encodeURIComponent(settings.updated_at || "")}`;
    if (this.image.getAttribute("src") !== src) this.image.src = src;
    this.image.alt = `Site plan of ${site}`;
    const placed = new Map(settings.positions.map((position) => [position.node, position]));
    for (const node of nodes) {
      const position = placed.get(node.node);
      if (!position) continue;
      const state = displayState(node, this.incidents);
      const marker = el("div", {
        class: `marker state state-${state}`,
        "data-node": node.node,
        "data-state": state,
        title: `${node.node}: ${state}`,
      }, `${STATE_ICON[state]} ${node.node}`);
      marker.style.left = `${position.x * 100}%`;
      marker.style.top = `${position.y * 100}%`;
      this.canvas.append(marker);
    }
    const unplaced = nodes.filter((node) => !placed.has(node.node)).map((node) => node.node);
    document.getElementById("plan-caption").textContent = unplaced.length
      ? `Not placed on the plan: ${unplaced.join(", ")}`
      : "All nodes are placed.";
  }

  renderTable(nodes, tz) {
    const rows = nodes.map((node) => {
      const state = displayState(node, this.incidents);
      const fps = node.fps === null || node.fps === undefined ? "—" : `${node.fps.toFixed(1)}${node.target_fps ? ` / ${node.target_fps}` : ""} fps`;
      return el(
        "tr",
        { "data-node": node.node, "data-state": state },
        el("th", { scope: "row" }, node.node),
        el("td", {}, el("span", { class: `state state-${state}` }, `${STATE_ICON[state]} ${state}`)),
        el("td", { title: formatTime(node.last_heartbeat, tz) }, formatAge(node.last_heartbeat)),
        el("td", {}, fps),
        el("td", {}, node.outbox_depth === null ? "—" : `${node.outbox_depth} msg`),
      );
    });
    document.querySelector("#node-table tbody").replaceChildren(...rows);
  }

  setupAdmin() {
    this.adminForm.hidden = false;
    this.adminForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.saveSetup();
    });
    this.adminForm.elements.place.addEventListener("change", () => {
      this.canvas.classList.toggle("placing", Boolean(this.adminForm.elements.place.value));
    });
  }

  fillPlaceChoices(nodes, settings) {
    const select = this.adminForm.elements.place;
    const current = select.value;
    select.replaceChildren(
      el("option", { value: "" }, "choose, then click the plan"),
      ...nodes.map((node) => el("option", { value: node.node }, node.node)),
    );
    select.value = nodes.some((node) => node.node === current) ? current : "";
    const tzInput = this.adminForm.elements.time_zone;
    if (document.activeElement !== tzInput) tzInput.value = settings?.time_zone || "";
  }

  async saveSetup() {
    const site = this.siteSelect.value;
    if (!site) return this.message("Choose a site first.");
    const base = `/api/v1/sites/${encodeURIComponent(site)}`;
    const file = this.adminForm.elements.plan.files[0];
    const timeZone = this.adminForm.elements.time_zone.value.trim();
    try {
      if (file) await put(`${base}/plan`, file, { "Content-Type": file.type || "application/octet-stream" });
      if (timeZone) await put(`${base}/time-zone`, { time_zone: timeZone });
      this.adminForm.elements.plan.value = "";
      this.message("Saved.");
    } catch (error) {
      this.message(error instanceof ApiError ? error.detail : String(error));
    }
    await this.loadSite(site);
    this.render();
  }

  async place(event) {
    const node = this.session.role === "admin" ? this.adminForm.elements.place.value : "";
    if (!node || this.image.hidden) return;
    const box = this.image.getBoundingClientRect();
    const x = (event.clientX - box.left) / box.width;
    const y = (event.clientY - box.top) / box.height;
    if (x < 0 || x > 1 || y < 0 || y > 1) return;
    const site = this.siteSelect.value;
    try {
      const settings = await put(
        `/api/v1/sites/${encodeURIComponent(site)}/nodes/${encodeURIComponent(node)}/position`,
        { x: +x.toFixed(4), y: +y.toFixed(4) },
      );
      this.sites.set(site, settings);
      this.message(`Placed ${node}.`);
      this.adminForm.elements.place.value = "";
      this.canvas.classList.remove("placing");
    } catch (error) {
      this.message(error instanceof ApiError ? error.detail : String(error));
    }
    this.render();
  }

  message(text) {
    document.getElementById("plan-message").textContent = text;
    if (this.session.role !== "admin") document.getElementById("plan-caption").textContent = text;
  }
}

