// Duet's signaling protocol (docs/signaling-protocol.md), in two layers:
//
// SignalingClient: one WebSocket, nothing more. Connect, send, receive, close.
//
//   const client = new SignalingClient();
//   client.addEventListener('joined', (e) => console.log(e.detail.id));
//   await client.connect();
//   client.join('my-room');
//
//   Events (CustomEvents, the message or close details in `event.detail`):
//     'open'      the WebSocket is open
//     'signal'    every message from the server, whatever its type
//     '<type>'    each server message by its type: 'joined', 'other_joined', 'full',
//                 'leaved', 'bye', 'message', 'pong', 'error' ('error' is a refusal
//                 from the server, not a socket failure)
//     'close'     the WebSocket closed: { code, reason, wasClean }
//
// RoomSession: a seat in one room that survives broken connections. It reconnects
// with backoff, takes its seat back with the resume token (kept in sessionStorage, so
// a reload tries too), and holds outgoing messages while it is away. A socket it
// gives up on is closed with 4000 ("I will resume"); a working socket it replaces on
// purpose stays open until the new one holds the seat (see reconnectNow).
//
//   const session = new RoomSession('my-room');
//   session.addEventListener('message', (e) => handle(e.detail.data));
//   session.start();
//   session.send({ kind: 'hello' });   // queued until the seat is (back) in place

/** Room names are 1 to 64 characters of [A-Za-z0-9_-]. */
export const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** How often to send an application-level `ping`, in milliseconds. */
export const PING_INTERVAL_MS = 20_000;

/** The close code that tells the server "keep my seat, I will resume". */
export const CLOSE_RECONNECTING = 4000;

/** The server's close code for "your seat was resumed on another connection". */
export const CLOSE_REPLACED = 4001;

/** The signaling endpoint of the server that served this page. */
export function defaultSignalingUrl() {
  return 'wss://' + location.host + '/ws';
}

/** @param {unknown} name */
export function isValidRoomName(name) {
  return typeof name === 'string' && ROOM_NAME.test(name);
}

/**
 * @typedef {{ type: string, [key: string]: any }} ServerMessage
 * @typedef {{ code: number, reason: string, wasClean: boolean }} CloseDetail
 */

export class SignalingClient extends EventTarget {
  #url;
  #pingIntervalMs;
  /** @type {WebSocket | null} */
  #ws = null;
  /** @type {ReturnType<typeof setInterval> | null} */
  #pingTimer = null;

  /**
   * @param {string} [url]
   * @param {{ pingIntervalMs?: number }} [options]
   */
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

  /**
   * Opens the WebSocket. Resolves once it is open, rejects if it closes first.
   * @returns {Promise<void>}
   */
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
        /** @type {CloseDetail} */
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

  /**
   * Asks for a seat in `room`; the answer is a 'joined', 'full' or 'error' event.
   * @param {string} room
   * @param {string} [resume] the token of a seat to take back
   */
  join(room, resume) {
    /** @type {ServerMessage} */
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

  /**
   * Relays `data` (any JSON value) to the other member of the room.
   * @param {unknown} data
   */
  sendMessage(data) {
    this.send({ type: 'message', data });
  }

  /**
   * Sends one protocol message (a plain object) as a JSON text frame.
   * @param {object} msg
   */
  send(msg) {
    if (!this.connected) {
      throw new Error('not connected');
    }
    /** @type {WebSocket} */ (this.#ws).send(JSON.stringify(msg));
  }

  /**
   * Closes the WebSocket (1000: done; 4000: "I will come back").
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 1000, reason = '') {
    this.#stopPing();
    if (this.#ws !== null) {
      this.#ws.close(code, reason);
    }
  }

  /** @param {unknown} data */
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

  /**
   * @param {string} type
   * @param {unknown} detail
   */
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

// ---------------------------------------------------------------------------
// RoomSession
// ---------------------------------------------------------------------------

/** Delays between reconnection attempts, in milliseconds; the last one repeats. */
export const RECONNECT_DELAYS_MS = [0, 250, 500, 1000, 2000, 4000, 5000];

/** A connection attempt that has not opened by then is abandoned and retried. */
const CONNECT_TIMEOUT_MS = 5_000;

/** While seated, ping this often, and call the connection dead after this much silence. */
const SEATED_PING_MS = 5_000;
const SILENCE_LIMIT_MS = 12_000;

/** After a network change, a pong must come back this fast or the socket is replaced. */
const PROBE_TIMEOUT_MS = 2_500;

/** A socket replaced by reconnectNow() is closed after this long at the latest. */
const RETIRE_AFTER_MS = 5_000;

/** Messages of a replaced socket that still count: they are for our seat. */
const SEAT_MESSAGES = new Set(['message', 'bye', 'other_joined']);

/** At most this many messages wait for the seat to come back. */
const OUTBOX_LIMIT = 500;

const STORAGE_PREFIX = 'duet.seat.';

/** Join refusals that retrying will not fix. */
const FATAL_JOIN_ERRORS = new Set(['bad_room', 'too_many_rooms', 'already_in_room', 'bad_message']);

/**
 * @typedef {'idle' | 'connecting' | 'joined' | 'reconnecting' | 'closed'} SessionState
 *
 * @typedef {object} JoinedDetail
 * @property {string} id          this member's id
 * @property {string[]} peers     the members already there (zero or one)
 * @property {RTCIceServer[]} iceServers
 * @property {boolean} resumed    the seat (and id) survived a broken connection
 * @property {boolean} replacedId an earlier seat was lost: this is a new member with a new id
 *
 * @typedef {{ token: string, id: string }} StoredSeat
 */

/**
 * The remembered seat of `room` in this tab (sessionStorage), or null.
 * @param {string} room
 * @returns {StoredSeat | null}
 */
export function storedSeat(room) {
  try {
    const raw = sessionStorage.getItem(STORAGE_PREFIX + room);
    if (raw === null) return null;
    const seat = JSON.parse(raw);
    if (typeof seat?.token === 'string' && typeof seat?.id === 'string') return seat;
  } catch {
    // storage blocked or garbage: no seat
  }
  return null;
}

/**
 * @param {string} room
 * @param {StoredSeat | null} seat
 */
function storeSeat(room, seat) {
  try {
    if (seat === null) sessionStorage.removeItem(STORAGE_PREFIX + room);
    else sessionStorage.setItem(STORAGE_PREFIX + room, JSON.stringify(seat));
  } catch {
    // storage blocked: a reload simply joins as a new member
  }
}

/**
 * A seat in one room that outlives its WebSockets.
 *
 * Events (CustomEvents):
 *   'state'        { state: SessionState }
 *   'joined'       JoinedDetail, after every successful join or resume
 *   'other_joined' { id }
 *   'bye'          { id }
 *   'message'      { from, data }
 *   'full'         { room }
 *   'refused'      { code, message }: the server will not seat us (no retry)
 *   'ended'        { reason: 'left' | 'full' | 'refused' | 'replaced' }
 */
export class RoomSession extends EventTarget {
  #room;
  #url;
  /** @type {SessionState} */
  #state = 'idle';
  /** @type {SignalingClient | null} */
  #client = null;
  /** @type {string | null} */
  #id = null;
  /** @type {string | null} */
  #peer = null;
  /** @type {unknown[]} */
  #outbox = [];
  #attempt = 0;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #retryTimer = null;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #watchdog = null;
  #lastHeard = 0;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #probeTimer = null;
  #reconnects = 0;
  /** @type {Promise<SignalingClient | null> | null} a socket opened ahead of time */
  #early = null;
  /** @type {SignalingClient | null} the socket a make-before-break reconnect replaces */
  #retiring = null;
  #onNetworkChange = () => this.probe();

  /**
   * @param {string} room
   * @param {{ url?: string }} [options]
   */
  constructor(room, { url = defaultSignalingUrl() } = {}) {
    super();
    this.#room = room;
    this.#url = url;
  }

  get room() {
    return this.#room;
  }

  /** @returns {SessionState} */
  get state() {
    return this.#state;
  }

  /** This member's id once joined (kept across resumes). */
  get id() {
    return this.#id;
  }

  /** The other member's id, or null when alone. */
  get peer() {
    return this.#peer;
  }

  /** True while the seat is held and the socket is open. */
  get seated() {
    return this.#state === 'joined';
  }

  /** How many times the socket was replaced (for diagnostics). */
  get reconnects() {
    return this.#reconnects;
  }

  /**
   * Opens the WebSocket ahead of time (while the lobby shows), so that `start` costs
   * one message instead of a TCP and TLS handshake. Harmless if it fails: `start`
   * then connects as usual.
   */
  preconnect() {
    if (this.#state !== 'idle' || this.#early) return;
    const client = new SignalingClient(this.#url, { pingIntervalMs: SEATED_PING_MS });
    this.#early = client.connect().then(
      () => client,
      () => null,
    );
  }

  /** Connects and joins, resuming the seat remembered for this room in this tab if any. */
  start() {
    if (this.#state !== 'idle') return;
    window.addEventListener('online', this.#onNetworkChange);
    /** @type {any} */ (navigator).connection?.addEventListener?.('change', this.#onNetworkChange);
    this.#connect();
  }

  /**
   * Relays `data` to the other member; held back while the seat is being taken back.
   * @param {unknown} data
   */
  send(data) {
    if (this.#state === 'closed' || this.#state === 'idle') return;
    if (this.#state === 'joined' && this.#client?.connected) {
      try {
        this.#client.sendMessage(data);
        return;
      } catch {
        // fall through: keep it for the next connection
      }
    }
    if (this.#outbox.length < OUTBOX_LIMIT) this.#outbox.push(data);
  }

  /**
   * Sends a call report (report.js) if the seat is in place; reports are never kept
   * for later (a lost one costs a metric, not a call).
   * @param {object} report
   */
  report(report) {
    if (this.#state !== 'joined' || !this.#client?.connected) return;
    try {
      this.#client.send({ type: 'report', ...report });
    } catch {
      // best effort
    }
  }

  /** Gives the seat up for good. */
  leave() {
    if (this.#state === 'closed') return;
    const client = this.#client;
    if (client?.connected && this.#state === 'joined') {
      try {
        client.leave();
      } catch {
        // closing below releases the seat as well
      }
    }
    this.#finish('left');
  }

  /**
   * Moves the seat to a new socket at once (after a network change, and for tests).
   *
   * While the old socket still works, this is make-before-break: the new socket
   * resumes the seat while the old one stays open, the server moves the seat over in
   * one step and closes the old socket itself (4001), so every message relayed
   * meanwhile arrives on one open socket or the other. (Closing first, with 4000,
   * would lose a message the server relays to the old socket before it sees the
   * close: a browser drops what arrives on a socket it is closing.) A socket that
   * is not open is simply replaced.
   */
  reconnectNow() {
    if (this.#state === 'idle' || this.#state === 'closed') return;
    this.#attempt = 0;
    const old = this.#client;
    if (this.#state !== 'joined' || !old?.connected) {
      this.#dropAndRetry(0);
      return;
    }
    this.#retiring = old;
    this.#client = null;
    this.#clearTimers();
    this.#reconnects += 1;
    this.#connect();
    // Normally the server closes it on the resume; make sure it goes in any case.
    setTimeout(() => {
      if (this.#retiring === old) this.#retiring = null;
      old.close(CLOSE_RECONNECTING);
    }, RETIRE_AFTER_MS);
  }

  /** Checks that the socket still works (after a network change); replaces it if not. */
  probe() {
    if (this.#state !== 'joined' || this.#client === null || this.#probeTimer !== null) return;
    const heardBefore = this.#lastHeard;
    try {
      this.#client.send({ type: 'ping' });
    } catch {
      this.#dropAndRetry(0);
      return;
    }
    this.#probeTimer = setTimeout(() => {
      this.#probeTimer = null;
      if (this.#lastHeard === heardBefore) this.#dropAndRetry(0);
    }, PROBE_TIMEOUT_MS);
  }

  // -------------------------------------------------------------------------

  /** @param {SessionState} state */
  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.#emit('state', { state });
  }

  /**
   * @param {string} type
   * @param {unknown} detail
   */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  async #connect() {
    this.#setState(this.#id === null && this.#reconnects === 0 ? 'connecting' : 'reconnecting');
    const early = this.#early;
    this.#early = null;
    const ready = early ? await early : null;
    if (this.#state === 'closed') {
      ready?.close();
      return;
    }
    const client = ready?.connected ? ready : new SignalingClient(this.#url, { pingIntervalMs: SEATED_PING_MS });
    if (client !== ready) ready?.close();
    this.#client = client;
    client.addEventListener('signal', (e) => this.#onSignal(client, /** @type {CustomEvent} */ (e).detail));
    client.addEventListener('close', (e) => this.#onClose(client, /** @type {CustomEvent} */ (e).detail));

    if (!client.connected) {
      const timeout = setTimeout(() => client.close(CLOSE_RECONNECTING), CONNECT_TIMEOUT_MS);
      try {
        await client.connect();
      } catch {
        if (this.#client === client) this.#scheduleRetry();
        return;
      } finally {
        clearTimeout(timeout);
      }
    }
    if (this.#client !== client) {
      client.close();
      return;
    }
    this.#lastHeard = performance.now();
    this.#armWatchdog();
    const seat = storedSeat(this.#room);
    try {
      client.join(this.#room, seat?.token);
    } catch {
      this.#dropAndRetry();
    }
  }

  /**
   * @param {SignalingClient} client
   * @param {ServerMessage} msg
   */
  #onSignal(client, msg) {
    if (this.#client !== client) {
      // The socket being replaced still delivers what the server sent our seat
      // before the seat moved; anything else from it is stale.
      if (client !== this.#retiring || this.#state === 'closed' || !SEAT_MESSAGES.has(msg.type)) return;
    } else {
      this.#lastHeard = performance.now();
    }
    switch (msg.type) {
      case 'joined':
        this.#onJoined(msg);
        break;
      case 'other_joined':
        this.#peer = String(msg.id);
        this.#emit('other_joined', { id: this.#peer });
        break;
      case 'bye':
        if (this.#peer === msg.id || this.#peer === null) this.#peer = null;
        this.#emit('bye', { id: msg.id });
        break;
      case 'message':
        this.#emit('message', { from: msg.from, data: msg.data });
        break;
      case 'full':
        storeSeat(this.#room, null);
        this.#emit('full', { room: msg.room ?? this.#room });
        this.#finish('full');
        break;
      case 'error':
        if (this.#state !== 'joined' && msg.code === 'unavailable') {
          // A cluster node that cannot reach its room store for a moment: try again, with backoff.
          this.#dropAndRetry();
          break;
        }
        if (this.#state !== 'joined' && FATAL_JOIN_ERRORS.has(msg.code)) {
          storeSeat(this.#room, null);
          this.#emit('refused', { code: msg.code, message: msg.message });
          this.#finish('refused');
        }
        // Other refusals (no_peer, rate_limited, …) concern one message: nothing to do.
        break;
      default:
        break; // pong, leaved
    }
  }

  /** @param {ServerMessage} msg */
  #onJoined(msg) {
    const previousId = this.#id;
    const id = String(msg.id);
    const resumed = previousId === id;
    const replacedId = previousId !== null && !resumed;
    this.#id = id;
    const peers = Array.isArray(msg.peers) ? msg.peers.map(String) : [];
    this.#peer = peers[0] ?? null;
    this.#attempt = 0;
    if (typeof msg.resume === 'string') storeSeat(this.#room, { token: msg.resume, id });
    if (replacedId) this.#outbox = []; // meant for a conversation that is over
    this.#setState('joined');
    /** @type {JoinedDetail} */
    const detail = {
      id,
      peers,
      iceServers: Array.isArray(msg.iceServers) ? msg.iceServers : [],
      resumed,
      replacedId,
    };
    this.#emit('joined', detail);
    const waiting = this.#outbox;
    this.#outbox = [];
    for (const data of waiting) this.send(data);
  }

  /**
   * @param {SignalingClient} client
   * @param {CloseDetail} detail
   */
  #onClose(client, detail) {
    if (client === this.#retiring) this.#retiring = null; // closed by the server on the resume (4001)
    if (this.#client !== client) return;
    this.#client = null;
    this.#clearTimers();
    if (this.#state === 'closed') return;
    if (detail.code === CLOSE_REPLACED) {
      // The seat went on in another tab or connection: this one must not fight for it.
      this.#finish('replaced');
      return;
    }
    this.#scheduleRetry();
  }

  /** @param {number} [delay] */
  #dropAndRetry(delay) {
    const client = this.#client;
    this.#client = null;
    this.#clearTimers();
    client?.close(CLOSE_RECONNECTING, 'reconnecting');
    this.#scheduleRetry(delay);
  }

  /** @param {number} [delay] */
  #scheduleRetry(delay) {
    if (this.#state === 'closed') return;
    this.#setState('reconnecting');
    const base = RECONNECT_DELAYS_MS[Math.min(this.#attempt, RECONNECT_DELAYS_MS.length - 1)];
    this.#attempt += 1;
    // Jitter, so two clients cut off together do not come back in lockstep.
    const wait = delay ?? base * (0.8 + Math.random() * 0.4);
    clearTimeout(this.#retryTimer ?? undefined);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#reconnects += 1;
      this.#connect();
    }, wait);
  }

  #armWatchdog() {
    clearTimeout(this.#watchdog ?? undefined);
    this.#watchdog = setTimeout(() => {
      this.#watchdog = null;
      if (this.#client === null) return;
      if (performance.now() - this.#lastHeard > SILENCE_LIMIT_MS) {
        this.#dropAndRetry(0);
      } else {
        this.#armWatchdog();
      }
    }, SEATED_PING_MS);
  }

  #clearTimers() {
    clearTimeout(this.#watchdog ?? undefined);
    clearTimeout(this.#probeTimer ?? undefined);
    this.#watchdog = null;
    this.#probeTimer = null;
  }

  /** @param {'left' | 'full' | 'refused' | 'replaced'} reason */
  #finish(reason) {
    if (this.#state === 'closed') return;
    clearTimeout(this.#retryTimer ?? undefined);
    this.#retryTimer = null;
    this.#clearTimers();
    window.removeEventListener('online', this.#onNetworkChange);
    /** @type {any} */ (navigator).connection?.removeEventListener?.('change', this.#onNetworkChange);
    if (reason === 'left' || reason === 'replaced') storeSeat(this.#room, null);
    const client = this.#client;
    this.#client = null;
    client?.close(1000, reason);
    this.#early?.then((c) => c?.close());
    this.#early = null;
    this.#retiring?.close(1000, reason);
    this.#retiring = null;
    this.#outbox = [];
    this.#setState('closed');
    this.#emit('ended', { reason });
  }
}
