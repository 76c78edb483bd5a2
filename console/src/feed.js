// Live change feed over the API's WebSocket. The socket is reopened by itself (backoff up to 5 s)
// with the id of the last change shown, and the API replays what was missed from the changes
// table, so a reconnect loses nothing; ids already shown are skipped, so nothing shows twice.
import { changesSocketUrl, session } from "./api.js";

const MAX_SHOWN = 300;
const CLOSE_UNAUTHORIZED = 4401; // the API's close code for a missing or expired token

export class ChangeFeed {
  constructor({ onChange, onState, onUnauthorized }) {
    this.onChange = onChange;
    this.onState = onState;
    this.onUnauthorized = onUnauthorized;
    this.lastId = null;
    this.seen = new Set();
    this.socket = null;
    this.retry = 0;
    this.stopped = true;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.close();
    this.socket = null;
  }

  open() {
    if (this.stopped || !session.token) return;
    this.onState("connecting");
    const socket = new WebSocket(changesSocketUrl(this.lastId));
    this.socket = socket;
    socket.onopen = () => {
      this.retry = 0;
      this.onState("live");
    };
    socket.onmessage = (ev) => this.receive(ev.data);
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      if (ev.code === CLOSE_UNAUTHORIZED) {
        this.stopped = true;
        this.onUnauthorized();
        return;
      }
      const delay = Math.min(5000, 250 * 2 ** this.retry);
      this.retry += 1;
      this.onState("reconnecting", delay);
      this.timer = setTimeout(() => this.open(), delay);
    };
  }

  // The user's "reconnect now" while waiting for the next attempt.
  reconnectNow() {
    if (this.stopped || this.socket) return;
    clearTimeout(this.timer);
    this.open();
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return; // not a change: nothing to show, nothing to lose
    }
    for (const change of Array.isArray(message) ? message : [message]) {
      if (!change || typeof change !== "object") continue;
      if (change.error) {
        this.onState(`refused: ${change.error}`); // the API closes the socket next (4400 or 4401)
        continue;
      }
      const id = change.id ?? null;
      if (id !== null) {
        if (this.seen.has(id)) continue;
        this.seen.add(id);
        if (this.seen.size > 4 * MAX_SHOWN) this.seen.delete(this.seen.values().next().value);
        if (this.lastId === null || id > this.lastId) this.lastId = id;
      }
      this.onChange(change);
    }
  }
}

export { MAX_SHOWN };
