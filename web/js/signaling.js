// A small client for Duet's signaling protocol (docs/signaling-protocol.md).
//
// Usage:
//   const client = new SignalingClient();
//   client.addEventListener('joined', (e) => console.log(e.detail.id));
//   await client.connect();
//   client.join('my-room');
//
// Events (all CustomEvents, the message or close details in `event.detail`):
//   'open'                     the WebSocket is open
//   'signal'                   every message from the server, whatever its type
//   '<type>'                   each server message by its type: 'joined', 'other_joined',
//                              'full', 'leaved', 'bye', 'message', 'pong', 'error'
//                              ('error' is a refusal from the server, not a socket failure)
//   'close'                    the WebSocket closed: { code, reason, wasClean }

/** Room names are 1 to 64 characters of [A-Za-z0-9_-]. */
export const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** How often to send an application-level `ping`, in milliseconds. */
export const PING_INTERVAL_MS = 20_000;

/** The signaling endpoint of the server that served this page. */
export function defaultSignalingUrl() {
  return 'wss://' + location.host + '/ws';
}

export function isValidRoomName(name) {
  return typeof name === 'string' && ROOM_NAME.test(name);
}

export class SignalingClient extends EventTarget {
  #url;
  #pingIntervalMs;
  #ws = null;
  #pingTimer = null;

  constructor(url = defaultSignalingUrl(), { pingIntervalMs = PING_INTERVAL_MS } = {}) {
    super();
    this.#url = url;
    this.#pingIntervalMs = pingIntervalMs;
  }

  get url() {
    return this.#url;
  }

  /** True while the WebSocket is open. */
  get connected() {
    return this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
  }

  /** Opens the WebSocket. Resolves once it is open, rejects if it closes first. */
  connect() {
    if (this.#ws !== null) {
      return Promise.reject(new Error('already connected'));
    }
    return new Promise((resolve, reject) => {
      let opened = false;
      const ws = new WebSocket(this.#url);
      this.#ws = ws;

      ws.addEventListener('open', () => {
        opened = true;
        this.#startPing();
        this.#emit('open', null);
        resolve();
      });

      ws.addEventListener('message', (event) => this.#receive(event.data));

      ws.addEventListener('close', (event) => {
        this.#stopPing();
        if (this.#ws === ws) {
          this.#ws = null;
        }
        const detail = { code: event.code, reason: event.reason, wasClean: event.wasClean };
        if (opened) {
          this.#emit('close', detail);
        } else {
          reject(new Error(`could not connect to the server (code ${event.code})`));
        }
      });
      // A failed connection fires 'error' then 'close'; 'close' reports it.
    });
  }

  /** Asks for a seat in `room`; the answer is a 'joined', 'full' or 'error' event. */
  join(room, resume) {
    const msg = { type: 'join', room };
    if (typeof resume === 'string') {
      msg.resume = resume;
    }
    this.send(msg);
  }

  /** Gives up the seat; the answer is a 'leaved' event. */
  leave() {
    this.send({ type: 'leave' });
  }

  /** Relays `data` (any JSON value) to the other member of the room. */
  sendMessage(data) {
    this.send({ type: 'message', data });
  }

  /** Sends one protocol message (a plain object) as a JSON text frame. */
  send(msg) {
    if (!this.connected) {
      throw new Error('not connected');
    }
    this.#ws.send(JSON.stringify(msg));
  }

  /** Closes the WebSocket (1000: done; 4000: "I will come back"). */
  close(code = 1000, reason = '') {
    this.#stopPing();
    if (this.#ws !== null) {
      this.#ws.close(code, reason);
    }
  }

  #receive(data) {
    if (typeof data !== 'string') {
      return; // the server only sends text frames
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg) || typeof msg.type !== 'string') {
      return;
    }
    this.#emit('signal', msg);
    this.#emit(msg.type, msg);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #startPing() {
    this.#stopPing();
    this.#pingTimer = setInterval(() => {
      if (this.connected) {
        this.send({ type: 'ping' });
      }
    }, this.#pingIntervalMs);
  }

  #stopPing() {
    if (this.#pingTimer !== null) {
      clearInterval(this.#pingTimer);
      this.#pingTimer = null;
    }
  }
}
