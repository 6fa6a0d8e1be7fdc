// One RTCPeerConnection to the other member, kept alive.
//
// Negotiation follows the "perfect negotiation" pattern: either side may send an
// offer whenever it needs one (tracks added, ICE restart, codec change), and when two
// offers cross, the rule below decides who yields:
//
//   POLITENESS RULE: the peer whose id sorts lower (ids are 16 lower-case hex digits,
//   so string order is number order) is *polite*. A polite peer that receives an offer
//   while making its own rolls its own back and answers. An impolite peer ignores the
//   colliding offer; its own wins.
//
//   One exception: when the polite peer's *first* offer collides (nothing has been
//   negotiated yet), it does not roll back but starts over with a fresh
//   RTCPeerConnection and answers on that. Chromium, rolling back a first offer while
//   it is still gathering candidates, can leave the connection unable to gather any
//   candidate ever again (even after an ICE restart); a fresh connection costs
//   nothing at that point.
//
// ICE candidates trickle both ways. A candidate that arrives before the remote
// description it belongs to (or for a newer ICE generation than the one applied) waits
// in a queue and is added as soon as a matching description is set; it is never
// dropped for arriving early.
//
// The connection heals itself: when ICE goes "failed", or stays "disconnected" for a
// few seconds, it restarts ICE (a new offer with new credentials).
//
// Signals travel through `send` (the signaling server), as application messages:
//   { kind: 'sdp', description: { type, sdp } }
//   { kind: 'ice', candidate: RTCIceCandidateInit }
// Data-channel messages are JSON objects with a `kind` (chat, media state, …).

/**
 * @typedef {{ kind: 'sdp', description: RTCSessionDescriptionInit }
 *         | { kind: 'ice', candidate: RTCIceCandidateInit }} Signal
 *
 * @typedef {object} CallCounters counts kept for diagnostics and tests
 * @property {number} offersSent
 * @property {number} answersSent
 * @property {number} candidatesSent
 * @property {number} candidatesReceived
 * @property {number} candidatesQueued    arrived before their remote description
 * @property {number} candidatesFailed
 * @property {number} offersIgnored       colliding offers ignored (impolite side)
 * @property {number} rollbacks           own offers rolled back (polite side)
 * @property {number} iceRestarts
 * @property {number} freshStarts         first offers replaced by a new connection (see below)
 *
 * @typedef {'new' | 'connecting' | 'connected' | 'reconnecting' | 'failed' | 'closed'} CallState
 */

/** How long ICE may stay "disconnected" before it is restarted. */
export const DISCONNECTED_RESTART_MS = 3_000;

/** A candidate waits at most this long for its description. */
const QUEUED_CANDIDATE_TTL_MS = 60_000;
const QUEUE_LIMIT = 256;

/**
 * Video presets: the largest height sent and the frame-rate cap, applied with
 * RTCRtpSender.setParameters (scaleResolutionDownBy, maxFramerate).
 * @type {Record<string, { height: number, fps: number } | null>}
 */
export const VIDEO_PRESETS = {
  auto: null,
  '720p30': { height: 720, fps: 30 },
  '480p30': { height: 480, fps: 30 },
  '360p15': { height: 360, fps: 15 },
  '180p15': { height: 180, fps: 15 },
};

/**
 * A new call starts sending video at most this tall and goes up to full quality
 * WARM_UP_MS after it connects. At the low bitrate every connection starts with, a
 * 720p encoder first drops frames while it adapts; starting small gets the first
 * picture across sooner, and the bandwidth estimate has grown by the time it steps up.
 */
const WARM_UP_HEIGHT = 360;
const WARM_UP_MS = 2_500;

/** The data channel both sides open with the same id, so neither has to offer it first. */
const DATA_CHANNEL = { label: 'duet', id: 0 };

/**
 * True when the peer with id `mine` is the polite one against `theirs`.
 * @param {string} mine
 * @param {string} theirs
 */
export function isPolite(mine, theirs) {
  return mine < theirs;
}

/**
 * The ICE username fragment of a session description, or null.
 * @param {string | undefined} sdp
 */
export function iceUfrag(sdp) {
  const m = /^a=ice-ufrag:(\S+)/m.exec(sdp ?? '');
  return m ? m[1] : null;
}

export class PeerCall extends EventTarget {
  /** @type {RTCPeerConnection} */
  pc;
  /** @type {RTCDataChannel} */
  channel;
  /** @readonly */
  polite;
  /** @type {CallCounters} */
  counters = {
    offersSent: 0,
    answersSent: 0,
    candidatesSent: 0,
    candidatesReceived: 0,
    candidatesQueued: 0,
    candidatesFailed: 0,
    offersIgnored: 0,
    rollbacks: 0,
    iceRestarts: 0,
    freshStarts: 0,
  };

  #send;
  #makingOffer = false;
  #ignoreOffer = false;
  #settingRemoteAnswer = false;
  /** Until the first remote offer is in, the answering side does not offer by itself. */
  #mayOffer;
  /** @type {{ candidate: RTCIceCandidateInit, at: number }[]} */
  #queue = [];
  /** @type {Map<string, RTCRtpSender>} */
  #senders = new Map();
  /** @type {MediaStream} */
  #localStream = new MediaStream();
  /** @type {ReturnType<typeof setTimeout> | null} */
  #disconnectTimer = null;
  /** @type {CallState} */
  #state = 'new';
  #everConnected = false;
  /** @type {string | null} the preferred video codec's MIME type */
  #codec = null;
  #closed = false;
  /** @type {{ maxBitrate: number, preset: string }} */
  #limits = { maxBitrate: 0, preset: 'auto' };
  /** @type {RTCConfiguration} */
  #config;
  /** setCodecPreferences was called on this connection (so "automatic" must reset it). */
  #codecTouched = false;
  /** True until shortly after the first connection: send small (see WARM_UP_HEIGHT). */
  #warmingUp = true;
  /** The local tracks by kind, to put on a fresh connection. */
  /** @type {Map<string, MediaStreamTrack>} */
  #tracks = new Map();

  /**
   * @param {object} options
   * @param {RTCIceServer[]} options.iceServers from `joined`
   * @param {boolean} options.polite see the rule at the top of this file
   * @param {(signal: Signal) => void} options.send relays a signal to the other peer
   * @param {boolean} [options.initiator] this side makes the first offer; the other
   *   waits for it (both may offer later)
   * @param {RTCIceTransportPolicy} [options.policy] 'relay' forces TURN
   * @param {string | null} [options.codec] preferred video codec MIME type
   */
  constructor({ iceServers, polite, send, initiator = false, policy = 'all', codec = null }) {
    super();
    this.polite = polite;
    this.#send = send;
    this.#mayOffer = initiator;
    this.#codec = codec;
    // One transport for the whole call: one TURN allocation per URL of `iceServers`.
    this.#config = { iceServers, iceTransportPolicy: policy, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
    [this.pc, this.channel] = this.#createPeerConnection();
  }

  /** @returns {CallState} */
  get state() {
    return this.#state;
  }

  get everConnected() {
    return this.#everConnected;
  }

  /**
   * Sends `track` as this call's `kind` track: swapped in with replaceTrack when a
   * sender exists (no renegotiation), added (one negotiation) the first time.
   * @param {'audio' | 'video'} kind
   * @param {MediaStreamTrack | null} track
   */
  async setTrack(kind, track) {
    if (this.#closed) return;
    if (track) this.#tracks.set(kind, track);
    else this.#tracks.delete(kind);
    const sender = this.#senders.get(kind);
    if (sender) {
      if (sender.track !== track) {
        await sender.replaceTrack(track);
        if (kind === 'video') await this.applyVideoLimits();
      }
      return;
    }
    if (!track) return;
    for (const t of this.#localStream.getTracks()) if (t.kind === kind) this.#localStream.removeTrack(t);
    this.#localStream.addTrack(track);
    // addTrack (not addTransceiver): its transceiver can be matched to an m-line of a
    // remote offer, so the side that answers adds no m-line of its own.
    this.#senders.set(kind, this.pc.addTrack(track, this.#localStream));
    this.#applyCodecPreference();
    if (kind === 'video') await this.applyVideoLimits();
  }

  /**
   * The sender of `kind`, if any.
   * @param {'audio' | 'video'} kind
   */
  sender(kind) {
    return this.#senders.get(kind) ?? null;
  }

  /**
   * Handles a signal from the other peer. Safe to call before, during or after any
   * negotiation; order among signals is the order of arrival.
   * @param {Signal} signal
   */
  async handleSignal(signal) {
    if (this.#closed || !signal || typeof signal !== 'object') return;
    try {
      if (signal.kind === 'sdp' && signal.description) {
        await this.#onDescription(signal.description);
      } else if (signal.kind === 'ice' && signal.candidate) {
        await this.#onCandidate(signal.candidate);
      }
    } catch (err) {
      if (!this.#closed) this.#emit('problem', { message: `negotiation: ${errorText(err)}` });
    }
  }

  /** Restarts ICE: new credentials, new candidates, same call. */
  restartIce() {
    if (this.#closed) return;
    this.counters.iceRestarts += 1;
    this.#mayOffer = true;
    this.pc.restartIce();
  }

  /** Makes a new offer now (e.g. after a codec change). */
  renegotiate() {
    if (this.#closed) return;
    this.#mayOffer = true;
    this.#makeOffer();
  }

  /**
   * Puts `mimeType` first among the video codecs (null: the browser's order) and
   * renegotiates when a connection exists.
   * @param {string | null} mimeType
   */
  setPreferredCodec(mimeType) {
    this.#codec = mimeType;
    this.#applyCodecPreference();
  }

  #applyCodecPreference() {
    const caps = typeof RTCRtpReceiver.getCapabilities === 'function' ? RTCRtpReceiver.getCapabilities('video') : null;
    if (!caps) return;
    // No preference: the browser's default list (an empty list resets it), which is
    // leaner than every codec it is capable of.
    const codecs = this.#codec ? orderCodecs(caps.codecs, this.#codec) : [];
    if (!this.#codec && !this.#codecTouched) return;
    this.#codecTouched = true;
    for (const t of this.pc.getTransceivers()) {
      if (t.receiver.track.kind !== 'video' || t.stopped || typeof t.setCodecPreferences !== 'function') continue;
      try {
        t.setCodecPreferences(codecs);
      } catch {
        // a browser that refuses the list keeps its own order
      }
    }
  }

  /**
   * Caps what the video sender sends: `maxBitrate` in bit/s (0: no cap) and a
   * preset of VIDEO_PRESETS. Applied at once, without renegotiation.
   * @param {{ maxBitrate?: number, preset?: string }} limits
   */
  async setVideoLimits(limits) {
    this.#limits = { ...this.#limits, ...limits };
    await this.applyVideoLimits();
  }

  /** (Re)applies the video limits to the current sender and track. */
  async applyVideoLimits() {
    const sender = this.#senders.get('video');
    if (!sender || this.#closed) return;
    const params = sender.getParameters();
    const encoding = params.encodings?.[0];
    if (!encoding) return; // not negotiated yet: applied again once it is
    const { maxBitrate, preset } = this.#limits;
    const before = JSON.stringify([encoding.maxBitrate, encoding.scaleResolutionDownBy ?? 1, encoding.maxFramerate]);
    if (maxBitrate > 0) encoding.maxBitrate = maxBitrate;
    else delete encoding.maxBitrate;
    const target = VIDEO_PRESETS[preset] ?? null;
    const height = sender.track?.getSettings().height ?? 0;
    let cap = target?.height ?? Infinity;
    if (this.#warmingUp) cap = Math.min(cap, WARM_UP_HEIGHT);
    encoding.scaleResolutionDownBy = height > cap ? height / cap : 1;
    if (target) encoding.maxFramerate = target.fps;
    else delete encoding.maxFramerate;
    // Nothing to change: leave the encoder alone (a reconfiguration costs a key frame).
    if (JSON.stringify([encoding.maxBitrate, encoding.scaleResolutionDownBy, encoding.maxFramerate]) === before) return;
    try {
      await sender.setParameters(params);
    } catch (err) {
      if (!this.#closed) this.#emit('problem', { message: `video limits: ${errorText(err)}` });
    }
  }

  /**
   * Sends a JSON message on the data channel. False when the channel is not open.
   * @param {object} message
   */
  sendData(message) {
    if (this.channel.readyState !== 'open') return false;
    try {
      this.channel.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  /** Ends the connection for good (the local tracks are not stopped). */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#disconnectTimer ?? undefined);
    try {
      this.channel.close();
    } catch {
      // already closed
    }
    this.pc.close();
    this.#setState('closed');
  }

  // -------------------------------------------------------------------------

  /**
   * A new RTCPeerConnection with its data channel, its events routed here while it
   * is the current one.
   * @returns {[RTCPeerConnection, RTCDataChannel]}
   */
  #createPeerConnection() {
    const pc = new RTCPeerConnection(this.#config);
    const channel = pc.createDataChannel(DATA_CHANNEL.label, { negotiated: true, id: DATA_CHANNEL.id });
    const current = () => this.pc === pc && !this.#closed;
    pc.addEventListener('negotiationneeded', () => {
      if (current() && this.#mayOffer) this.#makeOffer();
    });
    pc.addEventListener('icecandidate', ({ candidate }) => {
      if (!current() || !candidate || !candidate.candidate) return; // end of candidates: nothing to say
      this.counters.candidatesSent += 1;
      this.#send({ kind: 'ice', candidate: candidate.toJSON() });
    });
    pc.addEventListener('track', (event) => {
      if (current()) this.#emit('track', { track: event.track, streams: event.streams });
    });
    pc.addEventListener('connectionstatechange', () => current() && this.#onConnectionState());
    pc.addEventListener('iceconnectionstatechange', () => current() && this.#onConnectionState());
    channel.addEventListener('open', () => current() && this.#emit('channel', { open: true }));
    channel.addEventListener('close', () => current() && this.#emit('channel', { open: false }));
    channel.addEventListener('message', (event) => {
      if (!current() || typeof event.data !== 'string' || event.data.length > 65_536) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && typeof message === 'object' && typeof message.kind === 'string') {
        this.#emit('data', message);
      }
    });
    return [pc, channel];
  }

  /** Drops the current connection (never negotiated) for a fresh one with the same tracks. */
  #startFresh() {
    const old = this.pc;
    this.#senders.clear();
    this.#makingOffer = false; // the abandoned offer no longer counts
    this.#codecTouched = false;
    [this.pc, this.channel] = this.#createPeerConnection();
    old.close();
    this.counters.freshStarts += 1;
    for (const [kind, track] of this.#tracks) {
      this.#senders.set(kind, this.pc.addTrack(track, this.#localStream));
    }
    this.#applyCodecPreference();
  }

  async #makeOffer() {
    if (this.#closed) return;
    const pc = this.pc;
    try {
      this.#makingOffer = true;
      await pc.setLocalDescription();
      const description = pc.localDescription;
      if (!description || this.#closed || pc !== this.pc) return; // replaced meanwhile
      if (description.type === 'offer') this.counters.offersSent += 1;
      else this.counters.answersSent += 1;
      this.#send({ kind: 'sdp', description: { type: description.type, sdp: description.sdp } });
    } catch (err) {
      if (!this.#closed && pc === this.pc) this.#emit('problem', { message: `offer: ${errorText(err)}` });
    } finally {
      if (pc === this.pc) this.#makingOffer = false;
    }
  }

  /** @param {RTCSessionDescriptionInit} description */
  async #onDescription(description) {
    const pc = this.pc;
    const isOffer = description.type === 'offer';
    const readyForOffer = !this.#makingOffer && (pc.signalingState === 'stable' || this.#settingRemoteAnswer);
    const collision = isOffer && !readyForOffer;
    this.#ignoreOffer = !this.polite && collision;
    if (this.#ignoreOffer) {
      this.counters.offersIgnored += 1;
      return;
    }
    let target = pc;
    if (collision) {
      this.counters.rollbacks += 1;
      if (!pc.currentLocalDescription && !pc.currentRemoteDescription) {
        this.#startFresh(); // see the note at the top of this file
        target = this.pc;
      }
    }
    this.#settingRemoteAnswer = description.type === 'answer';
    try {
      await target.setRemoteDescription(description); // rolls our offer back on a collision
    } finally {
      this.#settingRemoteAnswer = false;
    }
    if (target !== this.pc || this.#closed) return;
    this.#mayOffer = true;
    if (isOffer) {
      this.#applyCodecPreference();
      await target.setLocalDescription();
      const answer = target.localDescription;
      if (answer && !this.#closed) {
        this.counters.answersSent += 1;
        this.#send({ kind: 'sdp', description: { type: answer.type, sdp: answer.sdp } });
      }
    }
    await this.#flushCandidates();
  }

  /** @param {RTCIceCandidateInit} candidate */
  async #onCandidate(candidate) {
    this.counters.candidatesReceived += 1;
    const remote = this.pc.remoteDescription;
    const ufrag = iceUfrag(remote?.sdp);
    const belongsLater = candidate.usernameFragment && ufrag !== null && candidate.usernameFragment !== ufrag;
    if (!remote || belongsLater) {
      // Early: keep it until its description is set.
      this.counters.candidatesQueued += 1;
      this.#queue.push({ candidate, at: performance.now() });
      if (this.#queue.length > QUEUE_LIMIT) this.#queue.shift();
      return;
    }
    await this.#addCandidate(candidate);
  }

  /** @param {RTCIceCandidateInit} candidate */
  async #addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (err) {
      // A candidate of an offer we ignored, or of an old ICE generation.
      this.counters.candidatesFailed += 1;
      if (!this.#ignoreOffer && !this.#closed) this.#emit('problem', { message: `candidate: ${errorText(err)}` });
    }
  }

  async #flushCandidates() {
    const ufrag = iceUfrag(this.pc.remoteDescription?.sdp);
    const now = performance.now();
    const keep = [];
    const ready = [];
    for (const entry of this.#queue) {
      const c = entry.candidate;
      if (!c.usernameFragment || c.usernameFragment === ufrag) ready.push(c);
      else if (now - entry.at < QUEUED_CANDIDATE_TTL_MS) keep.push(entry);
    }
    this.#queue = keep;
    for (const c of ready) await this.#addCandidate(c);
  }

  #onConnectionState() {
    if (this.#closed) return;
    const pc = this.pc;
    const ice = pc.iceConnectionState;
    const conn = pc.connectionState;
    if (conn === 'connected') {
      clearTimeout(this.#disconnectTimer ?? undefined);
      this.#disconnectTimer = null;
      if (!this.#everConnected) {
        setTimeout(() => {
          this.#warmingUp = false;
          this.applyVideoLimits();
        }, WARM_UP_MS);
      }
      this.#everConnected = true;
      this.#setState('connected');
    } else if (conn === 'failed' || ice === 'failed') {
      clearTimeout(this.#disconnectTimer ?? undefined);
      this.#disconnectTimer = null;
      this.#setState(this.#everConnected ? 'reconnecting' : 'connecting');
      this.restartIce();
    } else if (conn === 'disconnected' || ice === 'disconnected') {
      this.#setState(this.#everConnected ? 'reconnecting' : 'connecting');
      if (this.#disconnectTimer === null) {
        this.#disconnectTimer = setTimeout(() => {
          this.#disconnectTimer = null;
          if (this.pc.connectionState === 'disconnected' || this.pc.iceConnectionState === 'disconnected') {
            this.restartIce();
          }
        }, DISCONNECTED_RESTART_MS);
      }
    } else if (conn === 'connecting' || conn === 'new') {
      this.#setState(this.#everConnected ? 'reconnecting' : 'connecting');
    }
  }

  /** @param {CallState} state */
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
}

/**
 * `codecs` with every entry of `mimeType` first (the rest in their order).
 * @param {RTCRtpCodec[]} codecs
 * @param {string | null} mimeType
 */
export function orderCodecs(codecs, mimeType) {
  if (!mimeType) return codecs;
  const wanted = mimeType.toLowerCase();
  const first = codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (first.length === 0) return codecs;
  return [...first, ...codecs.filter((c) => c.mimeType.toLowerCase() !== wanted)];
}

/** The video codecs worth offering as a choice (no rtx/red/fec), by MIME type. */
export function videoCodecChoices() {
  const caps = typeof RTCRtpSender.getCapabilities === 'function' ? RTCRtpSender.getCapabilities('video') : null;
  const seen = new Set();
  for (const c of caps?.codecs ?? []) {
    const name = c.mimeType.split('/')[1]?.toLowerCase();
    if (['rtx', 'red', 'ulpfec', 'flexfec-03'].includes(name)) continue;
    seen.add(c.mimeType);
  }
  return [...seen];
}

/** @param {unknown} err */
function errorText(err) {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}
