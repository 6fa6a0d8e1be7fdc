// Ring mode (?ring=1): a phone-like call inside a room.
//
// The member who is already in the room is the callee; the one who joins second is
// the caller. Joining rings the callee, who accepts or declines; the caller can
// cancel. Until the callee accepts, neither browser creates an RTCPeerConnection, so
// no SDP and no ICE candidate (no address) leaves either of them.
//
// The messages are application messages inside the signaling `message.data`; the
// server relays them like any other:
//
//   caller → callee   { kind: 'ring', call: ID }
//   callee → caller   { kind: 'ring-accept', call: ID }   then the callee offers
//   callee → caller   { kind: 'ring-decline', call: ID }
//   caller → callee   { kind: 'ring-cancel', call: ID }
//
// ID is a fresh random value per attempt, so an answer to an earlier attempt (held
// by the server across a reconnect) is never taken for an answer to this one.

/**
 * @typedef {'idle' | 'calling' | 'ringing' | 'accepted' | 'declined' | 'cancelled' | 'missed' | 'no-answer'} RingState
 *
 *   idle       nothing going on (the callee waits for a ring)
 *   calling    caller: the other phone rings
 *   ringing    callee: an incoming call waits for an answer
 *   accepted   both: the call goes ahead
 *   declined   caller: the callee said no
 *   cancelled  caller: we gave up; callee: the caller gave up
 *   missed     callee: the caller left before an answer
 *   no-answer  caller: nobody answered in time
 */

export const RING_TIMEOUT_MS = 45_000;

const RING_KINDS = new Set(['ring', 'ring-accept', 'ring-decline', 'ring-cancel']);

/**
 * True when `data` is a ring-protocol message.
 * @param {unknown} data
 */
export function isRingMessage(data) {
  return typeof data === 'object' && data !== null && RING_KINDS.has(/** @type {any} */ (data).kind);
}

function newCallId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Events: 'state' { state: RingState, previous: RingState }.
 */
export class RingFlow extends EventTarget {
  #send;
  #timeoutMs;
  /** @type {RingState} */
  #state = 'idle';
  /** @type {string | null} */
  #callId = null;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #timer = null;

  /**
   * @param {{ send: (data: object) => void, timeoutMs?: number }} options
   */
  constructor({ send, timeoutMs = RING_TIMEOUT_MS }) {
    super();
    this.#send = send;
    this.#timeoutMs = timeoutMs;
  }

  /** @returns {RingState} */
  get state() {
    return this.#state;
  }

  /** Caller: ring the other member. */
  call() {
    if (this.#state === 'calling' || this.#state === 'accepted') return;
    this.#callId = newCallId();
    this.#send({ kind: 'ring', call: this.#callId });
    this.#set('calling');
    this.#timer = setTimeout(() => {
      if (this.#state !== 'calling') return;
      this.#send({ kind: 'ring-cancel', call: this.#callId });
      this.#set('no-answer');
    }, this.#timeoutMs);
  }

  /** Caller: stop ringing. */
  cancel() {
    if (this.#state !== 'calling') return;
    this.#send({ kind: 'ring-cancel', call: this.#callId });
    this.#set('cancelled');
  }

  /** Callee: take the call. */
  accept() {
    if (this.#state !== 'ringing') return;
    this.#send({ kind: 'ring-accept', call: this.#callId });
    this.#set('accepted');
  }

  /** Callee: refuse the call (and keep waiting for another). */
  decline() {
    if (this.#state !== 'ringing') return;
    this.#send({ kind: 'ring-decline', call: this.#callId });
    this.#set('idle');
  }

  /** The other member left the room. */
  peerLeft() {
    if (this.#state === 'ringing') this.#set('missed');
    else if (this.#state === 'calling') this.#set('cancelled');
  }

  /** Back to waiting (callee, after a missed call has been shown). */
  reset() {
    this.#set('idle');
  }

  /**
   * Applies a ring message from the other member.
   * @param {{ kind: string, call?: unknown }} data
   */
  handle(data) {
    const id = typeof data.call === 'string' ? data.call : null;
    switch (data.kind) {
      case 'ring':
        if (this.#state === 'accepted' || this.#state === 'calling') return;
        this.#callId = id;
        this.#set('ringing');
        break;
      case 'ring-cancel':
        if (this.#state === 'ringing' && id === this.#callId) this.#set('missed');
        break;
      case 'ring-accept':
        if (this.#state === 'calling' && id === this.#callId) this.#set('accepted');
        break;
      case 'ring-decline':
        if (this.#state === 'calling' && id === this.#callId) this.#set('declined');
        break;
      default:
        break;
    }
  }

  /** @param {RingState} state */
  #set(state) {
    if (state !== 'calling' && this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, previous } }));
  }
}
