// Call quality from RTCPeerConnection.getStats(), sampled once a second, and small
// canvas plots of the last minute.
//
//   const monitor = new StatsMonitor(() => call.pc);
//   monitor.addEventListener('sample', (e) => show(e.detail));   // a Sample, see below
//   monitor.start();
//   drawSparkline(canvas, monitor.history.rtt, { unit: 'ms' });

/**
 * @typedef {object} Endpoint
 * @property {string} type       host | srflx | prflx | relay
 * @property {string} protocol   udp | tcp
 * @property {string | null} relayProtocol udp | tcp | tls (relay candidates only)
 * @property {string} address
 *
 * @typedef {object} VideoInfo
 * @property {number} width
 * @property {number} height
 * @property {number} fps
 * @property {string | null} codec
 *
 * @typedef {object} Sample
 * @property {number} at                  performance.now() of the sample
 * @property {{ local: Endpoint, remote: Endpoint } | null} pair  the selected candidate pair
 * @property {number | null} rttMs
 * @property {number} bitrateInKbps
 * @property {number} bitrateOutKbps
 * @property {number} lossPercent         inbound packets lost in the last interval
 * @property {number | null} jitterMs     inbound, worst of audio and video
 * @property {VideoInfo | null} videoIn
 * @property {VideoInfo | null} videoOut
 * @property {number} framesDecoded
 * @property {'good' | 'fair' | 'poor' | 'unknown'} quality
 */

/** One minute of one-second samples. */
export const HISTORY_LENGTH = 60;

/**
 * A short description of how the media travels, e.g. "Direct (host) · UDP" or
 * "Relayed (TURN over TLS)".
 * @param {{ local: Endpoint, remote: Endpoint } | null} pair
 */
export function describePath(pair) {
  if (!pair) return 'Not connected';
  const { local, remote } = pair;
  if (local.type === 'relay' || remote.type === 'relay') {
    const over = local.type === 'relay' && local.relayProtocol ? local.relayProtocol.toUpperCase() : local.protocol.toUpperCase();
    return `Relayed through TURN (${over})`;
  }
  const kind = local.type === 'host' && remote.type === 'host' ? 'Direct' : 'Direct through NAT';
  return `${kind} · ${local.protocol.toUpperCase()}`;
}

/**
 * @param {number | null} rttMs
 * @param {number} lossPercent
 * @returns {Sample['quality']}
 */
export function rateQuality(rttMs, lossPercent) {
  if (rttMs === null) return 'unknown';
  if (rttMs > 400 || lossPercent > 8) return 'poor';
  if (rttMs > 150 || lossPercent > 2) return 'fair';
  return 'good';
}

export class StatsMonitor extends EventTarget {
  #pc;
  #intervalMs;
  /** @type {ReturnType<typeof setInterval> | null} */
  #timer = null;
  /** @type {Map<string, any> | null} */
  #previous = null;
  #busy = false;
  /** @type {Sample | null} */
  last = null;
  /** Last minute of values for the plots. */
  history = {
    /** @type {number[]} */ rtt: [],
    /** @type {number[]} */ bitrateIn: [],
    /** @type {number[]} */ bitrateOut: [],
    /** @type {number[]} */ loss: [],
    /** @type {number[]} */ jitter: [],
    /** @type {number[]} */ fps: [],
  };

  /**
   * @param {() => RTCPeerConnection} pc the connection to watch (asked anew each time)
   * @param {{ intervalMs?: number }} [options]
   */
  constructor(pc, { intervalMs = 1000 } = {}) {
    super();
    this.#pc = pc;
    this.#intervalMs = intervalMs;
  }

  start() {
    if (this.#timer !== null) return;
    this.#timer = setInterval(() => this.sample(), this.#intervalMs);
    this.sample();
  }

  stop() {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Takes one sample now. */
  async sample() {
    const pc = this.#pc();
    if (this.#busy || pc.connectionState === 'closed') return;
    this.#busy = true;
    try {
      const report = await pc.getStats();
      /** @type {Map<string, any>} */
      const stats = new Map();
      report.forEach((value, key) => stats.set(key, value));
      const sample = summarize(stats, this.#previous);
      this.#previous = stats;
      this.last = sample;
      this.#record(sample);
      this.dispatchEvent(new CustomEvent('sample', { detail: sample }));
    } catch {
      // the connection closed under us
    } finally {
      this.#busy = false;
    }
  }

  /** @param {Sample} s */
  #record(s) {
    const push = (/** @type {number[]} */ list, /** @type {number} */ value) => {
      list.push(value);
      if (list.length > HISTORY_LENGTH) list.shift();
    };
    push(this.history.rtt, s.rttMs ?? 0);
    push(this.history.bitrateIn, s.bitrateInKbps);
    push(this.history.bitrateOut, s.bitrateOutKbps);
    push(this.history.loss, s.lossPercent);
    push(this.history.jitter, s.jitterMs ?? 0);
    push(this.history.fps, s.videoIn?.fps ?? 0);
  }
}

/**
 * One sample from a stats report and the report before it (for rates).
 * @param {Map<string, any>} stats
 * @param {Map<string, any> | null} previous
 * @returns {Sample}
 */
export function summarize(stats, previous) {
  const all = [...stats.values()];
  const pairStats = selectedPair(all, stats);
  const endpoint = (/** @type {any} */ c) => ({
    type: c?.candidateType ?? 'unknown',
    protocol: c?.protocol ?? 'udp',
    relayProtocol: c?.relayProtocol ?? null,
    address: c?.address ?? c?.ip ?? '',
  });
  const pair = pairStats
    ? { local: endpoint(stats.get(pairStats.localCandidateId)), remote: endpoint(stats.get(pairStats.remoteCandidateId)) }
    : null;
  const rttMs = typeof pairStats?.currentRoundTripTime === 'number' ? pairStats.currentRoundTripTime * 1000 : null;

  const rate = (/** @type {any} */ now, /** @type {string} */ field) => {
    const before = previous?.get(now.id);
    if (!before || typeof before[field] !== 'number' || now.timestamp <= before.timestamp) return 0;
    return ((now[field] - before[field]) * 8) / (now.timestamp - before.timestamp); // bits per ms = kbit/s
  };
  let bitrateInKbps = 0;
  let bitrateOutKbps = 0;
  let lost = 0;
  let received = 0;
  let jitterMs = null;
  /** @type {VideoInfo | null} */
  let videoIn = null;
  /** @type {VideoInfo | null} */
  let videoOut = null;
  let framesDecoded = 0;
  const codecName = (/** @type {string | undefined} */ id) => {
    const mime = id ? stats.get(id)?.mimeType : undefined;
    return typeof mime === 'string' ? mime.split('/')[1] ?? mime : null;
  };
  for (const s of all) {
    if (s.type === 'inbound-rtp') {
      bitrateInKbps += rate(s, 'bytesReceived');
      const before = previous?.get(s.id);
      const dLost = (s.packetsLost ?? 0) - (before?.packetsLost ?? 0);
      const dReceived = (s.packetsReceived ?? 0) - (before?.packetsReceived ?? 0);
      lost += Math.max(0, dLost);
      received += Math.max(0, dReceived);
      if (typeof s.jitter === 'number') jitterMs = Math.max(jitterMs ?? 0, s.jitter * 1000);
      if (s.kind === 'video') {
        framesDecoded += s.framesDecoded ?? 0;
        if (s.frameWidth) {
          videoIn = { width: s.frameWidth, height: s.frameHeight, fps: Math.round(s.framesPerSecond ?? 0), codec: codecName(s.codecId) };
        }
      }
    } else if (s.type === 'outbound-rtp') {
      bitrateOutKbps += rate(s, 'bytesSent');
      if (s.kind === 'video' && s.frameWidth) {
        videoOut = { width: s.frameWidth, height: s.frameHeight, fps: Math.round(s.framesPerSecond ?? 0), codec: codecName(s.codecId) };
      }
    }
  }
  const lossPercent = lost + received > 0 ? (100 * lost) / (lost + received) : 0;
  return {
    at: performance.now(),
    pair,
    rttMs,
    bitrateInKbps,
    bitrateOutKbps,
    lossPercent,
    jitterMs,
    videoIn,
    videoOut,
    framesDecoded,
    quality: rateQuality(rttMs, lossPercent),
  };
}

/**
 * The candidate pair the transport uses.
 * @param {any[]} all
 * @param {Map<string, any>} stats
 */
function selectedPair(all, stats) {
  for (const s of all) {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = stats.get(s.selectedCandidatePairId);
      if (pair) return pair;
    }
  }
  return all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') ?? null;
}

/**
 * Draws `values` as a filled line on `canvas`, scaled to its largest value (or `max`).
 * Colours come from the canvas's CSS `color` so themes apply.
 * @param {HTMLCanvasElement} canvas
 * @param {number[]} values
 * @param {{ max?: number }} [options]
 */
export function drawSparkline(canvas, values, { max } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.clearRect(0, 0, width, height);
  if (values.length < 2) return;
  const top = Math.max(max ?? 0, ...values, 1e-9);
  const step = width / (HISTORY_LENGTH - 1);
  const x0 = width - (values.length - 1) * step;
  const pad = 2 * ratio;
  const y = (/** @type {number} */ v) => height - pad - (Math.min(v, top) / top) * (height - 2 * pad);
  const color = getComputedStyle(canvas).color;
  ctx.beginPath();
  ctx.moveTo(x0, y(values[0]));
  values.forEach((v, i) => ctx.lineTo(x0 + i * step, y(v)));
  ctx.lineWidth = 1.5 * ratio;
  ctx.lineJoin = 'round';
  ctx.strokeStyle = color;
  ctx.stroke();
  ctx.lineTo(x0 + (values.length - 1) * step, height);
  ctx.lineTo(x0, height);
  ctx.closePath();
  ctx.globalAlpha = 0.15;
  ctx.fillStyle = color;
  ctx.fill();
  ctx.globalAlpha = 1;
}
