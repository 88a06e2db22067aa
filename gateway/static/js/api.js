// Fetch wrapper for the gateway API. Requests carry the HttpOnly session
// cookie, and errors become ApiError with the status and the server's detail.

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

let onUnauthorised = () => {};

/** Register the handler that runs when any request returns 401. */
export function setUnauthorisedHandler(handler) {
  onUnauthorised = handler;
}

async function detailOf(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    return JSON.stringify(body.detail ?? body);
  } catch {
    return response.statusText || "request failed";
  }
}

/** Send a request and return the parsed JSON body, or null for 204. */
export async function request(method, path, body, headers = {}) {
  const init = { method, credentials: "same-origin", headers: { ...headers } };
  if (body instanceof Blob) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const detail = await detailOf(response);
    if (response.status === 401 && !path.endsWith("/login") && !path.endsWith("/session")) {
      onUnauthorised(detail);
    }
    throw new ApiError(response.status, detail);
  }
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const put = (path, body, headers) => request("PUT", path, body, headers);

/** Build a query string from an object, leaving out empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
