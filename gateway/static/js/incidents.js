// Incident queue: filters, ordering, live updates, detail with timeline and
// evidence, and the acknowledge and resolve workflow.

import { get, post, query, ApiError } from "./api.js";
import { raiseAlert } from "./alert.js";
import { el, formatTime } from "./format.js";

const SEVERITY_RANK = { critical: 5, high: 4, medium: 3, low: 2, info: 1 };
const SEVERITY_ICON = { critical: "⛔", high: "▲", medium: "◆", low: "●", info: "ℹ" };
const STATE_RANK = { open: 0, acknowledged: 1, resolved: 2 };
const STATE_ICON = { open: "✖", acknowledged: "✔", resolved: "✔✔" };
const FETCH_LIMIT = 500;

export class IncidentQueue {
  constructor({ session, siteTimeZone }) {
    this.session = session;
    this.siteTimeZone = siteTimeZone;
    this.items = new Map();
    this.seen = new Set();
    this.loaded = false;
    this.selectedId = null;
    this.filters = document.getElementById("incident-filters");
    this.body = document.querySelector("#queue tbody");
    this.detail = document.getElementById("detail");
    this.dialog = document.getElementById("step-dialog");
    this.filters.addEventListener("change", () => this.refresh());
    this.body.addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-id]");
      if (row) this.select(row.dataset.id, true);
    });
    this.body.addEventListener("keydown", (event) => this.onRowKey(event));
    this.setupDialog();
  }

  canAct() {
    return ["dispatcher", "admin"].includes(this.session.role);
  }

  filterValues() {
    const data = new FormData(this.filters);
    return Object.fromEntries([...data.entries()].map(([key, value]) => [key, String(value)]));
  }

  matches(incident) {
    const filter = this.filterValues();
    for (const key of ["site", "node", "type"]) {
      if (filter[key] && incident[key] !== filter[key]) return false;
    }
    if (filter.state === "any") return true;
    if (filter.state) return incident.state === filter.state;
    return incident.state !== "resolved";
  }

  /** Re-fetch the list on load, on a filter change and after every stream (re)open. */
  async refresh() {
    const filter = this.filterValues();
    // The default view requests open and acknowledged separately, so a long
    // tail of resolved incidents cannot push an old open one off the list.
    let states = ["open", "acknowledged"];
    if (filter.state === "any") states = [undefined];
    else if (filter.state) states = [filter.state];
    let list;
    try {
      const pages = await Promise.all(states.map((state) => get(`/api/v1/incidents${query({
        site: filter.site, node: filter.node, type: filter.type, state, limit: FETCH_LIMIT,
      })}`)));
      list = pages.flat();
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) this.showError(error);
      return;
    }
    const missed = this.loaded ? list.filter((item) => !this.seen.has(item.incident_id) && item.state === "open") : [];
    this.items = new Map(list.filter((item) => this.matches(item)).map((item) => [item.incident_id, item]));
    for (const item of list) this.seen.add(item.incident_id);
    this.loaded = true;
    // Incidents in the first list raise no alert, so tests wait for this
    // before they publish.
    document.getElementById("queue").setAttribute("aria-busy", "false");
    this.render(new Set(missed.map((item) => item.incident_id)));
    if (missed.length) raiseAlert(`${missed.length} new incident(s) while the stream was down: ${describe(missed[0])}`);
    if (this.selectedId) this.showDetail(this.selectedId);
  }

  /** Apply one `incident` event from the live stream. */
  onEvent(data) {
    const incident = data.incident;
    const id = incident.incident_id;
    const isNew = !this.seen.has(id);
    this.seen.add(id);
    const current = this.items.get(id);
    if (current && current.updated_at > incident.updated_at) return;
    if (this.matches(incident)) this.items.set(id, incident);
    else this.items.delete(id);
    const fresh = new Set();
    if (isNew && incident.state === "open" && incident.active) {
      fresh.add(id);
      raiseAlert(`New ${incident.severity} incident: ${describe(incident)}`);
    }
    this.render(fresh);
    if (id === this.selectedId) this.showDetail(id);
  }

  sorted() {
    return [...this.items.values()].sort(
      (a, b) =>
        STATE_RANK[a.state] - STATE_RANK[b.state] ||
        (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0) ||
        b.started_at.localeCompare(a.started_at),
    );
  }

  render(fresh = new Set()) {
    const rows = this.sorted().map((incident) => this.row(incident, fresh.has(incident.incident_id)));
    this.body.replaceChildren(...rows);
    document.getElementById("queue-empty").hidden = rows.length > 0;
    if (this.selectedId && !this.items.has(this.selectedId)) this.selectedId = null;
    if (!this.selectedId && rows.length) rows[0].tabIndex = 0;
  }

  row(incident, fresh) {
    const selected = incident.incident_id === this.selectedId;
    return el(
      "tr",
      {
        "data-id": incident.incident_id,
        "data-state": incident.state,
        "aria-selected": String(selected),
        tabindex: selected ? "0" : "-1",
        class: fresh ? "new" : null,
      },
      el("td", {}, severityBadge(incident.severity)),
      el("td", {}, incident.type, incident.active ? "" : el("span", { class: "muted" }, " (ended)")),
      el("td", {}, `${incident.site}/${incident.node}`, incident.zone ? ` · ${incident.zone}` : "", incident.line ? ` · ${incident.line}` : ""),
      el("td", {}, formatTime(incident.started_at, this.siteTimeZone(incident.site))),
      el("td", {}, stateLabel(incident.state)),
    );
  }

  rowsInOrder() {
    return [...this.body.querySelectorAll("tr[data-id]")];
  }

  select(id, focus) {
    this.selectedId = id;
    for (const row of this.rowsInOrder()) {
      const on = row.dataset.id === id;
      row.setAttribute("aria-selected", String(on));
      row.tabIndex = on ? 0 : -1;
      if (on && focus) row.focus();
    }
    return this.showDetail(id);
  }

  move(step) {
    const rows = this.rowsInOrder();
    if (!rows.length) return;
    const index = rows.findIndex((row) => row.dataset.id === this.selectedId);
    const next = index < 0 ? 0 : Math.min(rows.length - 1, Math.max(0, index + step));
    this.select(rows[next].dataset.id, true);
  }

  onRowKey(event) {
    if (event.key === "Enter") {
      const row = event.target.closest("tr[data-id]");
      event.preventDefault();
      if (!row) return;
      this.select(row.dataset.id, false).then(() => this.detail.querySelector("button")?.focus());
    }
  }

  async showDetail(id) {
    let incident;
    try {
      incident = await get(`/api/v1/incidents/${encodeURIComponent(id)}`);
    } catch (error) {
      this.showError(error);
      return;
    }
    if (id !== this.selectedId) return;
    this.detail.replaceChildren(...this.detailNodes(incident));
  }

  detailNodes(incident) {
    const tz = this.siteTimeZone(incident.site);
    const facts = [
      ["Severity", severityBadge(incident.severity)],
      ["State", stateLabel(incident.state)],
      ["Node view", incident.active ? "active" : `ended ${formatTime(incident.ended_at, tz)}`],
      ["Where", `${incident.site}/${incident.node}`],
      ["Rule", incident.rule],
      ["Zone", incident.zone], ["Line", incident.line], ["Class", incident.class],
      ["Started", formatTime(incident.started_at, tz)],
      ...Object.entries(incident.detail || {}).map(([key, value]) => [key, String(value)]),
    ].filter(([, value]) => value !== null && value !== undefined);
    const nodes = [
      el("h2", {}, `${incident.type} at ${incident.site}/${incident.node}`),
      el("dl", {}, facts.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)])),
    ];
    if (incident.has_evidence) {
      nodes.push(el("img", {
        src: `/api/v1/incidents/${encodeURIComponent(incident.incident_id)}/evidence`,
        alt: "Anonymised evidence image from the node",
        class: "evidence",
      }));
    }
    nodes.push(el("h3", {}, "Timeline"), el("ol", { class: "timeline" }, incident.timeline.map((step) => timelineItem(step, tz))));
    if (this.canAct()) nodes.push(this.actionButtons(incident));
    else nodes.push(el("p", { class: "muted", id: "viewer-note" }, "Your role is viewer: you can watch but not acknowledge or resolve."));
    return nodes;
  }

  actionButtons(incident) {
    const ack = el("button", { type: "button", id: "ack-button", class: "primary", disabled: incident.state !== "open" }, "Acknowledge ", el("kbd", {}, "a"));
    const resolve = el("button", { type: "button", id: "resolve-button", disabled: incident.state === "resolved" }, "Resolve ", el("kbd", {}, "r"));
    ack.addEventListener("click", () => this.openStep("ack"));
    resolve.addEventListener("click", () => this.openStep("resolve"));
    return el("div", { class: "actions" }, ack, resolve);
  }

  setupDialog() {
    const form = document.getElementById("step-form");
    const note = form.elements.note;
    note.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        document.getElementById("step-confirm").click();
      }
    });
    form.addEventListener("submit", async (event) => {
      if (event.submitter?.value !== "confirm") return;
      event.preventDefault();
      await this.submitStep(note.value.trim());
    });
  }

  /** Open the note dialog for `ack` or `resolve` on the selected incident. */
  openStep(action) {
    const incident = this.items.get(this.selectedId);
    if (!incident) return;
    if (!this.canAct()) {
      raiseAlert(`Role ${this.session.role} cannot ${action === "ack" ? "acknowledge" : "resolve"} incidents.`);
      return;
    }
    if (action === "ack" && incident.state !== "open") return;
    if (action === "resolve" && incident.state === "resolved") return;
    this.pendingAction = action;
    const verb = action === "ack" ? "Acknowledge" : "Resolve";
    document.getElementById("step-title").textContent = `${verb} incident`;
    document.getElementById("step-confirm").textContent = verb;
    document.getElementById("step-incident").textContent = describe(incident);
    document.getElementById("step-error").textContent = "";
    this.dialog.querySelector("textarea").value = "";
    this.dialog.showModal();
    this.dialog.querySelector("textarea").focus();
  }

  async submitStep(note) {
    const id = this.selectedId;
    const path = `/api/v1/incidents/${encodeURIComponent(id)}/${this.pendingAction}`;
    try {
      const incident = await post(path, note ? { note } : {});
      this.dialog.close();
      this.onEvent({ action: this.pendingAction, incident });
    } catch (error) {
      document.getElementById("step-error").textContent = error instanceof ApiError ? error.detail : String(error);
      if (error instanceof ApiError && error.status === 409) this.refresh();
    }
  }

  showError(error) {
    this.detail.replaceChildren(el("p", { class: "error", role: "alert" }, `Could not load incidents: ${error.message}`));
  }

  /** Fill the site and node filter choices from the node list. */
  setChoices(nodes) {
    fillSelect(this.filters.elements.site, [...new Set(nodes.map((node) => node.site))]);
    fillSelect(this.filters.elements.node, [...new Set(nodes.map((node) => node.node))]);
  }
}

function fillSelect(select, values) {
  const current = select.value;
  const options = [el("option", { value: "" }, "all"), ...values.sort().map((value) => el("option", { value }, value))];
  select.replaceChildren(...options);
  select.value = values.includes(current) ? current : "";
}

function describe(incident) {
  const where = [incident.zone, incident.line].filter(Boolean).join(", ");
  return `${incident.type} at ${incident.site}/${incident.node}${where ? ` (${where})` : ""}`;
}

function severityBadge(severity) {
  return el("span", { class: `badge sev-${severity}` }, `${SEVERITY_ICON[severity] || "?"} ${severity}`);
}

function stateLabel(state) {
  return el("span", { class: `state wf-${state}`, "data-state": state }, `${STATE_ICON[state] || ""} ${state}`);
}

const ACTION_WORDS = { start: "started", update: "updated", end: "ended", ack: "acknowledged", resolve: "resolved" };

function timelineItem(step, tz) {
  const who = step.actor ? ` by ${step.actor.replace(/^login:/, "")}` : "";
  const figures = step.detail && Object.keys(step.detail).length
    ? ` (${Object.entries(step.detail).map(([key, value]) => `${key} ${value}`).join(", ")})`
    : "";
  return el(
    "li",
    { "data-action": step.action },
    el("time", { datetime: step.at }, formatTime(step.at, tz)),
    `${ACTION_WORDS[step.action] || step.action}${who}${figures}`,
    step.note ? el("div", { class: "muted" }, `Note: ${step.note}`) : null,
  );
}
