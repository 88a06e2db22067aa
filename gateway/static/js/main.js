// Page entry: login, views, keyboard shortcuts and the live stream.

import { get, post, request, setUnauthorisedHandler, ApiError } from "./api.js";
import { dismissAlert, setupAlert, toggleMute, unlockAudio } from "./alert.js";
import { CountsView } from "./counts.js";
import { IncidentQueue } from "./incidents.js";
import { LiveStream } from "./live.js";
import { NodesView } from "./nodes.js";

const NODE_REFRESH_MS = 15_000;
let stream = null;
let nodeTimer = null;

function showLogin(message = "") {
  stream?.stop();
  clearInterval(nodeTimer);
  document.getElementById("app").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message;
  document.querySelector("#login-password input")?.focus();
}

async function login(event, path, body) {
  event.preventDefault();
  unlockAudio();
  try {
    await post(path, body);
    location.reload();
  } catch (error) {
    document.getElementById("login-error").textContent =
      error instanceof ApiError ? `Login failed: ${error.detail}` : `Login failed: ${error}`;
  }
}

function setupLogin() {
  document.getElementById("login-password").addEventListener("submit", (event) => {
    const form = event.target.elements;
    login(event, "/api/v1/login", { username: form.username.value, password: form.password.value });
  });
  document.getElementById("login-token").addEventListener("submit", (event) => {
    login(event, "/api/v1/session", { token: event.target.elements.token.value.trim() });
  });
}

function showView(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    if (tab.dataset.view === name) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  document.body.dataset.view = name;
}

function typing(event) {
  const target = event.target;
  return target.closest("input, textarea, select, dialog") !== null || target.isContentEditable;
}

function setupKeys(queue) {
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      dismissAlert();
      return;
    }
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const onIncidents = document.body.dataset.view === "incidents";
    const actions = {
      1: () => showView("incidents"),
      2: () => showView("nodes"),
      3: () => showView("counts"),
      m: () => toggleMute(document.getElementById("mute")),
      "/": () => document.querySelector("#incident-filters select")?.focus(),
      j: () => onIncidents && queue.move(1),
      k: () => onIncidents && queue.move(-1),
      ArrowDown: () => onIncidents && queue.move(1),
      ArrowUp: () => onIncidents && queue.move(-1),
      a: () => onIncidents && queue.openStep("ack"),
      r: () => onIncidents && queue.openStep("resolve"),
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });
}

async function start(session) {
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  document.body.dataset.role = session.role;
  document.getElementById("who").textContent = `${session.name.replace(/^login:/, "")} (${session.role})`;
  setupAlert(document.getElementById("mute"));
  document.getElementById("alert-dismiss").addEventListener("click", dismissAlert);
  document.getElementById("logout").addEventListener("click", async () => {
    await request("DELETE", "/api/v1/session").catch(() => {});
    location.reload();
  });

  let nodes = null;
  const siteTimeZone = (site) => nodes?.timeZone(site) || null;
  const queue = new IncidentQueue({ session, siteTimeZone });
  const counts = new CountsView({ siteTimeZone });
  nodes = new NodesView({
    session,
    onSites: (list) => {
      queue.setChoices(list);
      counts.setChoices(list);
    },
  });
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  setupKeys(queue);
  showView("incidents");

  let nodeRefresh = null;
  const refreshNodesSoon = () => {
    clearTimeout(nodeRefresh);
    nodeRefresh = setTimeout(() => nodes.refresh(), 300);
  };
  stream = new LiveStream({
    onState: (state) => {
      const live = document.getElementById("live");
      live.dataset.state = state;
      live.textContent = { live: "Live", connecting: "Reconnecting…", down: "Stream down, retrying" }[state];
    },
    onOpen: async () => {
      await nodes.refresh();
      await queue.refresh();
    },
    onEvent: (type, data) => {
      if (type === "incident") {
        queue.onEvent(data);
        refreshNodesSoon();
      } else {
        refreshNodesSoon();
      }
    },
  });
  stream.start();
  nodeTimer = setInterval(() => nodes.refresh(), NODE_REFRESH_MS);
}

async function boot() {
  setupLogin();
  setUnauthorisedHandler((detail) => showLogin(`Session ended: ${detail}`));
  let session;
  try {
    session = await get("/api/v1/session");
  } catch (error) {
    showLogin(error instanceof ApiError && error.status === 401 ? "" : `Gateway unreachable: ${error.message}`);
    return;
  }
  await start(session);
}

boot();
