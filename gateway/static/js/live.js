// Live event stream. The browser's EventSource reconnects by itself and
// sends Last-Event-ID. When it gives up (an HTTP error closes it), this
// class opens a new one with ?after=<last id> after a growing delay. Every
// (re)open calls onOpen, so the page re-fetches what it may have missed,
// including incidents whose events retention has deleted meanwhile.

const MAX_DELAY_MS = 30_000;

export class LiveStream {
  constructor({ onEvent, onOpen, onState }) {
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.onState = onState;
    this.lastId = null;
    this.delayMs = 1000;
    this.source = null;
    this.timer = null;
  }

  start() {
    this.stop();
    const url = this.lastId === null ? "/api/v1/stream" : `/api/v1/stream?after=${this.lastId}`;
    const source = new EventSource(url);
    this.source = source;
    this.onState("connecting");
    source.onopen = () => {
      this.delayMs = 1000;
      this.onState("live");
      this.onOpen();
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        this.onState("down");
        this.timer = setTimeout(() => this.start(), this.delayMs);
        this.delayMs = Math.min(this.delayMs * 2, MAX_DELAY_MS);
      } else {
        this.onState("connecting");
      }
    };
    for (const type of ["incident", "node"]) {
      source.addEventListener(type, (event) => {
        if (event.lastEventId) this.lastId = Number(event.lastEventId);
        let data;
        try {
          data = JSON.parse(event.data);
        } catch (error) {
          console.warn("ignored an event with invalid JSON", event.lastEventId, error);
          return;
        }
        this.onEvent(type, data);
      });
    }
  }

  stop() {
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  }
}
