// Call reports for the operator's metrics (docs/signaling-protocol.md, "Call
// reports"): how this member's call got going and, at its end, how it went. A
// report holds kinds, counts and percentiles only: no address, no name, no id.
//
//   const reporter = new CallReporter(pc, (report) => session.report(report));
//   reporter.sample(statsSample);     // every second once connected (stats.js)
//   reporter.connected();             // the first time media flows
//   reporter.end(iceRestarts);        // hang-up, the other left, the page goes
//
// One `setup` per call: `connected` with the time it took and the selected path;
// `failed` when nothing connected within FAIL_AFTER_MS (with the ICE state and the
// count of candidate errors); `cancelled` when the call ended before either. One
// `summary` per connected call. The server counts each once per seat anyway.

/** A call not connected after this long is reported as failed (it may still connect). */
export const FAIL_AFTER_MS = 30_000;

/** Samples kept for the percentiles: a little over an hour at one a second. */
const MAX_SAMPLES = 4_000;

/**
 * The median and 95th percentile of `values` (nearest rank), or undefined if empty.
 * @param {number[]} values
 */
export function percentiles(values) {
  const finite = values.filter((v) => Number.isFinite(v) && v >= 0).sort((a, b) => a - b);
  if (finite.length === 0) return undefined;
  const rank = (/** @type {number} */ p) => finite[Math.min(finite.length - 1, Math.ceil((p / 100) * finite.length) - 1)];
  const round = (/** @type {number} */ v) => Math.round(v * 100) / 100;
  return { p50: round(rank(50)), p95: round(rank(95)) };
}

/**
 * The selected candidate pair of `pc` as a report's `path`, or null before there is one.
 * @param {RTCPeerConnection} pc
 */
export async function selectedPath(pc) {
  const stats = await pc.getStats();
  /** @type {any} */
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) {
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
  }
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  if (!local || !remote) return null;
  /** @type {{ local: string, remote: string, protocol: string, relay?: string }} */
  const path = { local: local.candidateType, remote: remote.candidateType, protocol: local.protocol };
  if (local.candidateType === 'relay' && local.relayProtocol) path.relay = local.relayProtocol;
  return path;
}

export class CallReporter {
  #pc;
  #send;
  #failAfterMs;
  #startedAt = performance.now();
  /** @type {number | null} */
  #connectedAt = null;
  #setupSent = false;
  #summarySent = false;
  #candidateErrors = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #failTimer;
  #samples = { rtt: /** @type {number[]} */ ([]), loss: /** @type {number[]} */ ([]), jitter: /** @type {number[]} */ ([]), bitrateIn: /** @type {number[]} */ ([]), bitrateOut: /** @type {number[]} */ ([]), height: /** @type {number[]} */ ([]) };
  #freezes = 0;
  /** @type {number | null} */
  #lastFrames = null;
  #frozen = false;

  /**
   * @param {RTCPeerConnection} pc
   * @param {(report: object) => void} send
   * @param {{ failAfterMs?: number }} [options]
   */
  constructor(pc, send, { failAfterMs = FAIL_AFTER_MS } = {}) {
    this.#pc = pc;
    this.#send = send;
    this.#failAfterMs = failAfterMs;
    pc.addEventListener('icecandidateerror', () => {
      this.#candidateErrors += 1;
    });
    this.#failTimer = setTimeout(() => this.#failed(), failAfterMs);
  }

  /** Media flows (the first time counts). */
  async connected() {
    if (this.#connectedAt !== null) return;
    this.#connectedAt = performance.now();
    clearTimeout(this.#failTimer);
    if (this.#setupSent) return; // reported as failed already: the server keeps that
    const ms = Math.round(this.#connectedAt - this.#startedAt);
    const path = await selectedPath(this.#pc).catch(() => null);
    if (!path) return; // a closed connection: nothing sure to say
    this.#setupSent = true;
    this.#send({ setup: { outcome: 'connected', ms, path, candidateErrors: this.#candidateErrors } });
  }

  /**
   * One stats sample (stats.js) while connected.
   * @param {import('./stats.js').Sample} s
   * @param {boolean} videoExpected the other side sends video (camera on)
   */
  sample(s, videoExpected) {
    if (this.#connectedAt === null) return;
    const keep = (/** @type {number[]} */ list, /** @type {number | null | undefined} */ value) => {
      if (typeof value === 'number' && Number.isFinite(value) && list.length < MAX_SAMPLES) list.push(value);
    };
    keep(this.#samples.rtt, s.rttMs);
    keep(this.#samples.loss, s.lossPercent);
    keep(this.#samples.jitter, s.jitterMs);
    keep(this.#samples.bitrateIn, s.bitrateInKbps);
    keep(this.#samples.bitrateOut, s.bitrateOutKbps);
    keep(this.#samples.height, s.videoIn?.height);
    // A freeze: decoded frames stop for a whole sample while video is expected.
    if (this.#lastFrames !== null && videoExpected) {
      const stalled = s.framesDecoded <= this.#lastFrames;
      if (stalled && !this.#frozen) this.#freezes += 1;
      this.#frozen = stalled;
    } else {
      this.#frozen = false;
    }
    this.#lastFrames = s.framesDecoded;
  }

  /**
   * The call is over: its summary, or a `cancelled` set-up if it never got going.
   * @param {number} iceRestarts
   */
  end(iceRestarts) {
    clearTimeout(this.#failTimer);
    if (!this.#setupSent && this.#connectedAt === null) {
      this.#setupSent = true;
      this.#send({ setup: { outcome: 'cancelled', ms: this.#elapsed(), candidateErrors: this.#candidateErrors } });
    }
    if (this.#connectedAt === null || this.#summarySent) return;
    this.#summarySent = true;
    const s = this.#samples;
    /** @type {Record<string, unknown>} */
    const summary = {
      durationSecs: Math.round((performance.now() - this.#connectedAt) / 100) / 10,
      freezes: this.#freezes,
      iceRestarts,
    };
    for (const [name, values] of /** @type {const} */ ([
      ['rttMs', s.rtt],
      ['lossPercent', s.loss],
      ['jitterMs', s.jitter],
      ['bitrateInKbps', s.bitrateIn],
      ['bitrateOutKbps', s.bitrateOut],
      ['videoHeight', s.height],
    ])) {
      const p = percentiles(values);
      if (p) summary[name] = p;
    }
    this.#send({ summary });
  }

  #failed() {
    if (this.#connectedAt !== null || this.#setupSent) return;
    this.#setupSent = true;
    const state = this.#pc.iceConnectionState;
    /** @type {Record<string, unknown>} */
    const setup = { outcome: 'failed', ms: this.#elapsed(), candidateErrors: this.#candidateErrors };
    if (['new', 'checking', 'disconnected', 'failed', 'closed'].includes(state)) setup.iceState = state;
    this.#send({ setup });
  }

  #elapsed() {
    return Math.min(600_000, Math.round(performance.now() - this.#startedAt));
  }
}
