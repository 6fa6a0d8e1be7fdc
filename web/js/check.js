// The connection check (/check): the camera and the microphone, then each way out of
// the caller's network to this server's relay (STUN over UDP, TURN over UDP, TCP and
// TLS, one ICE server at a time), then a call to oneself through the relay with its
// round trip and throughput, and a verdict in plain words with a report to copy for
// support. The TURN credentials come from the signaling server like a call's do (a
// `join` of a throwaway room, left at once), so the check also proves the WebSocket.
//
// For tests and support tools, window.__duetCheck.done resolves with the result:
// { verdict: { tone, title, text }, rows: [{ id, label, state, detail }], report }.

import { SignalingClient } from './signaling.js';

/** How long one ICE server may take to answer. */
const GATHER_TIMEOUT_MS = 6_000;
/** How long the test call may take to connect. */
const CALL_TIMEOUT_MS = 10_000;
/** What the test call sends to measure throughput. */
const THROUGHPUT_BYTES = 1024 * 1024;
const CHUNK_BYTES = 16 * 1024;

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * @typedef {'pending' | 'ok' | 'fail' | 'skip'} State
 * @typedef {{ id: string, label: string, state: State, detail: string }} Row
 * @typedef {{ kind: 'stun' | 'turn', url: string, transport: 'udp' | 'tcp' | 'tls', port: number, server: RTCIceServer }} Way
 */

/** @type {Map<string, Row>} */
const rows = new Map();

/**
 * Shows (and keeps) one result row.
 * @param {string} listId
 * @param {string} id
 * @param {string} label
 * @param {State} state
 * @param {string} detail
 */
function setRow(listId, id, label, state, detail) {
  let item = /** @type {HTMLElement | null} */ ($(listId).querySelector(`[data-check="${id}"]`));
  if (!item) {
    item = document.createElement('li');
    item.dataset.check = id;
    item.innerHTML = '<span class="mark" aria-hidden="true"></span><span class="label"></span><span class="detail"></span>';
    $(listId).append(item);
  }
  item.dataset.state = state;
  /** @type {HTMLElement} */ (item.querySelector('.label')).textContent = label;
  /** @type {HTMLElement} */ (item.querySelector('.detail')).textContent = detail;
  rows.set(id, { id, label, state, detail });
}

const since = (/** @type {number} */ t) => Math.round(performance.now() - t);

// ---------------------------------------------------------------------------
// Camera and microphone

async function checkDevices() {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  } catch (err) {
    const name = /** @type {Error} */ (err).name;
    const why =
      name === 'NotAllowedError'
        ? 'Blocked: allow the camera and microphone for this site in your browser.'
        : name === 'NotFoundError'
          ? 'No camera or microphone was found.'
          : name === 'NotReadableError'
            ? 'In use by another program, or switched off.'
            : `Not available (${name}).`;
    setRow('devices-list', 'camera', 'Camera', 'fail', why);
    setRow('devices-list', 'microphone', 'Microphone', 'fail', why);
    return { camera: false, microphone: false, reason: name };
  }
  const [video] = stream.getVideoTracks();
  const [audio] = stream.getAudioTracks();
  let camera = false;
  if (video) {
    const { width, height, frameRate } = video.getSettings();
    camera = Boolean(width && height);
    setRow('devices-list', 'camera', 'Camera', camera ? 'ok' : 'fail',
      camera ? `${width}×${height}${frameRate ? ` at ${Math.round(frameRate)} fps` : ''} · ${video.label || 'camera'}` : 'It gives no picture.');
  } else {
    setRow('devices-list', 'camera', 'Camera', 'fail', 'No camera was found.');
  }
  let microphone = false;
  if (audio) {
    const level = await microphoneLevel(stream);
    microphone = level > -60;
    setRow('devices-list', 'microphone', 'Microphone', microphone ? 'ok' : 'fail',
      microphone
        ? `Hearing sound, up to ${Math.round(level)} dB · ${audio.label || 'microphone'}`
        : `No sound in 1.5 s: is it muted or turned down? · ${audio.label || 'microphone'}`);
  } else {
    setRow('devices-list', 'microphone', 'Microphone', 'fail', 'No microphone was found.');
  }
  for (const track of stream.getTracks()) track.stop();
  return { camera, microphone, reason: null };
}

/**
 * The loudest level (dBFS) the microphone picks up in 1.5 s, shown on the meter.
 * @param {MediaStream} stream
 */
async function microphoneLevel(stream) {
  const context = new AudioContext();
  try {
    await context.resume().catch(() => {});
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    let peak = -Infinity;
    const meter = $('mic-meter');
    const end = performance.now() + 1_500;
    while (performance.now() < end) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const db = 10 * Math.log10(sum / samples.length || 1e-12);
      peak = Math.max(peak, db);
      meter.style.width = `${Math.max(0, Math.min(100, ((db + 70) / 70) * 100))}%`;
    }
    meter.style.width = '0';
    return peak;
  } finally {
    context.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// Network

/** This server's ICE servers, from a `joined` in a throwaway room. */
async function fetchIceServers() {
  const started = performance.now();
  const client = new SignalingClient();
  try {
    await withTimeout(client.connect(), 5_000, 'no answer in 5 s');
    const room = `check-${Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('')}`;
    /** @type {Promise<any>} */
    const joined = new Promise((resolve, reject) => {
      client.addEventListener('joined', (e) => resolve(/** @type {CustomEvent} */ (e).detail), { once: true });
      client.addEventListener('error', (e) => reject(new Error(/** @type {CustomEvent} */ (e).detail.message)), { once: true });
    });
    client.join(room);
    const detail = await withTimeout(joined, 5_000, 'no answer in 5 s');
    client.leave();
    setRow('network-list', 'signaling', 'Signaling (WebSocket over HTTPS)', 'ok', `Connected in ${since(started)} ms`);
    return /** @type {RTCIceServer[]} */ (Array.isArray(detail.iceServers) ? detail.iceServers : []);
  } catch (err) {
    setRow('network-list', 'signaling', 'Signaling (WebSocket over HTTPS)', 'fail',
      `The page cannot reach the signaling server: ${/** @type {Error} */ (err).message}. A proxy or firewall may block WebSockets.`);
    return null;
  } finally {
    client.close();
  }
}

/**
 * Every way out to test: each URL of each ICE server on its own.
 * @param {RTCIceServer[]} servers
 * @returns {Way[]}
 */
export function waysOut(servers) {
  /** @type {Way[]} */
  const ways = [];
  for (const server of servers) {
    const urls = Array.isArray(server.urls) ? server.urls : [server.urls];
    for (const url of urls) {
      const match = /^(stuns?|turns?):(?:\[[^\]]+\]|[^:?]+)(?::(\d+))?(?:\?transport=(udp|tcp))?$/i.exec(url);
      if (!match) continue;
      const scheme = match[1].toLowerCase();
      const secure = scheme.endsWith('s');
      const transport = secure ? 'tls' : /** @type {'udp' | 'tcp'} */ ((match[3] || 'udp').toLowerCase());
      const port = Number(match[2] || (secure ? 5349 : 3478));
      const kind = scheme.startsWith('turn') ? 'turn' : 'stun';
      ways.push({ kind, url, transport, port, server: { ...server, urls: [url] } });
    }
  }
  return ways;
}

/** @param {Way} way */
function wayLabel(way) {
  if (way.kind === 'stun') return `STUN over UDP (port ${way.port})`;
  return `Relay over ${way.transport.toUpperCase()} (port ${way.port})`;
}

/**
 * Gathers candidates with `way` alone and says whether it answered.
 * @param {Way} way
 * @returns {Promise<{ ok: boolean, detail: string }>}
 */
async function tryWay(way) {
  const started = performance.now();
  const pc = new RTCPeerConnection({ iceServers: [way.server], iceTransportPolicy: way.kind === 'turn' ? 'relay' : 'all' });
  /** @type {string[]} */
  const errors = [];
  let srflx = false;
  let relay = false;
  try {
    pc.addEventListener('icecandidateerror', (e) => {
      const event = /** @type {RTCPeerConnectionIceErrorEvent} */ (e);
      errors.push(`${event.errorCode}${event.errorText ? ` ${event.errorText}` : ''}`);
    });
    const done = new Promise((resolve) => {
      pc.addEventListener('icecandidate', (e) => {
        const c = e.candidate;
        if (!c) {
          resolve(undefined);
          return;
        }
        if (c.type === 'srflx') srflx = true;
        if (c.type === 'relay') {
          const protocol = /** @type {any} */ (c).relayProtocol;
          if (!protocol || protocol === way.transport) relay = true;
        }
      });
    });
    pc.createDataChannel('check');
    await pc.setLocalDescription(await pc.createOffer());
    const timedOut = await Promise.race([
      done.then(() => false),
      new Promise((resolve) => setTimeout(() => resolve(true), GATHER_TIMEOUT_MS)),
    ]);
    if (way.kind === 'turn') {
      if (relay) return { ok: true, detail: `Relay address obtained in ${since(started)} ms` };
      if (errors.length) return { ok: false, detail: `Refused or unreachable (error ${errors[0]})` };
      return { ok: false, detail: timedOut ? `No answer in ${GATHER_TIMEOUT_MS / 1000} s` : 'No relay address' };
    }
    if (srflx) return { ok: true, detail: `Answered in ${since(started)} ms; your address is translated (NAT)` };
    if (errors.length) return { ok: false, detail: `No answer (error ${errors[0]})` };
    if (timedOut) return { ok: false, detail: `No answer in ${GATHER_TIMEOUT_MS / 1000} s` };
    return { ok: true, detail: `Answered in ${since(started)} ms; your address is not translated` };
  } finally {
    pc.close();
  }
}

/**
 * A call from this page to itself, relay only on both sides, with `servers`.
 * @param {RTCIceServer[]} servers
 */
async function loopbackCall(servers) {
  const config = { iceServers: servers, iceTransportPolicy: /** @type {RTCIceTransportPolicy} */ ('relay') };
  const a = new RTCPeerConnection(config);
  const b = new RTCPeerConnection(config);
  const started = performance.now();
  try {
    a.addEventListener('icecandidate', (e) => e.candidate && b.addIceCandidate(e.candidate).catch(() => {}));
    b.addEventListener('icecandidate', (e) => e.candidate && a.addIceCandidate(e.candidate).catch(() => {}));
    const channel = a.createDataChannel('check', { ordered: true });
    /** @type {Promise<RTCDataChannel>} */
    const incoming = new Promise((resolve) => b.addEventListener('datachannel', (e) => resolve(e.channel), { once: true }));
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(/** @type {RTCSessionDescriptionInit} */ (a.localDescription));
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(/** @type {RTCSessionDescriptionInit} */ (b.localDescription));
    const open = new Promise((resolve) => channel.addEventListener('open', resolve, { once: true }));
    await withTimeout(open, CALL_TIMEOUT_MS, `no connection in ${CALL_TIMEOUT_MS / 1000} s`);
    const setupMs = since(started);
    const receiver = await withTimeout(incoming, 2_000, 'no data channel');

    // Throughput: 1 MiB, as fast as the channel takes it.
    let received = 0;
    /** @type {Promise<void>} */
    const all = new Promise((resolve) => {
      receiver.addEventListener('message', (e) => {
        received += /** @type {ArrayBuffer} */ (e.data).byteLength ?? 0;
        if (received >= THROUGHPUT_BYTES) resolve();
      });
    });
    receiver.binaryType = 'arraybuffer';
    const chunk = new Uint8Array(CHUNK_BYTES);
    const sendStarted = performance.now();
    channel.bufferedAmountLowThreshold = 256 * 1024;
    for (let sent = 0; sent < THROUGHPUT_BYTES; sent += CHUNK_BYTES) {
      if (channel.bufferedAmount > 1024 * 1024) {
        await new Promise((resolve) => channel.addEventListener('bufferedamountlow', resolve, { once: true }));
      }
      channel.send(chunk);
    }
    await withTimeout(all, 15_000, 'the data stalled');
    const seconds = (performance.now() - sendStarted) / 1000;
    const mbps = (THROUGHPUT_BYTES * 8) / seconds / 1e6;

    // The round trip ICE measured on the selected pair, and how the relay is reached.
    let rttMs = null;
    let via = null;
    const stats = await a.getStats();
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = stats.get(s.selectedCandidatePairId);
        if (pair && typeof pair.currentRoundTripTime === 'number') rttMs = Math.round(pair.currentRoundTripTime * 1000);
        const local = pair && stats.get(pair.localCandidateId);
        if (local?.relayProtocol) via = local.relayProtocol.toUpperCase();
      }
    });
    return { ok: true, setupMs, rttMs, mbps, via };
  } finally {
    a.close();
    b.close();
  }
}

/**
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} message
 * @returns {Promise<T>}
 */
function withTimeout(promise, ms, message) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(message)), ms))]);
}

// ---------------------------------------------------------------------------
// Verdict and report

/**
 * @param {{ camera: boolean, microphone: boolean, reason: string | null }} devices
 * @param {boolean} signaling
 * @param {{ way: Way, ok: boolean }[]} results
 * @param {boolean} callOk
 */
export function verdict(devices, signaling, results, callOk) {
  const passed = (/** @type {(w: Way) => boolean} */ test) => results.filter((r) => r.ok && test(r.way)).map((r) => r.way);
  const udp = passed((w) => w.kind === 'turn' && w.transport === 'udp');
  const tcp = passed((w) => w.kind === 'turn' && w.transport === 'tcp');
  const tls = passed((w) => w.kind === 'turn' && w.transport === 'tls');
  const deviceNote = !devices.camera || !devices.microphone
    ? ` ${devices.reason === 'NotAllowedError'
      ? 'Your browser blocks the camera and microphone: allow them for this site, then check again.'
      : `Your ${!devices.camera && !devices.microphone ? 'camera and microphone need' : !devices.camera ? 'camera needs' : 'microphone needs'} attention (see below).`}`
    : '';
  if (!signaling) {
    return {
      tone: 'bad',
      title: 'Calls cannot start from this network',
      text: `The page cannot keep a WebSocket open to the server, so two people cannot find each other. A proxy or firewall may block WebSockets; try another network, or ask its administrator to allow WebSockets to this site.${deviceNote}`,
    };
  }
  const ports = (/** @type {Way[]} */ ways) => [...new Set(ways.map((w) => w.port))].join(' or ');
  let tone = 'good';
  let title = 'Ready for calls';
  let text;
  if (udp.length) {
    text = 'Your network lets UDP through: calls go directly when they can, and through the relay over UDP when they cannot. That is the best case.';
  } else if (tcp.length || tls.length) {
    tone = 'warn';
    title = 'Calls will work, through the relay';
    const way = tcp.length ? `TCP port ${ports(tcp)}` : `TLS on port ${ports(tls)}`;
    text = `Your network blocks UDP; calls will use the relay over ${way}. They connect, with a little more delay than usual.`;
  } else {
    tone = 'bad';
    title = 'Calls may not connect from this network';
    text = 'Nothing gets through to the relay (UDP, TCP and TLS are all blocked or not offered). Calls can only connect directly, which most networks prevent. Try another network, or ask its administrator to allow TCP port 443 to this server.';
  }
  if ((udp.length || tcp.length || tls.length) && !callOk) {
    tone = 'warn';
    title = 'The relay answers, but a test call through it failed';
    text += ' The test call did not get through, so calls may not connect; the report below says where it stopped.';
  }
  if (deviceNote && tone === 'good') tone = 'warn';
  return { tone, title, text: text + deviceNote };
}

function buildReport(/** @type {{ tone: string, title: string, text: string }} */ result) {
  const mark = { ok: '✓', fail: '✗', skip: '–', pending: '…' };
  const lines = [
    'Duet connection check',
    `When: ${new Date().toISOString()}`,
    `Server: ${location.host}`,
    `Browser: ${navigator.userAgent}`,
    '',
    `Verdict: ${result.title}. ${result.text}`,
    '',
  ];
  for (const row of rows.values()) lines.push(`${mark[row.state]} ${row.label}: ${row.detail}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------

async function run() {
  rows.clear();
  for (const list of ['network-list', 'call-list']) {
    for (const item of Array.from($(list).children)) {
      if (/** @type {HTMLElement} */ (item).dataset.check !== 'signaling' && /** @type {HTMLElement} */ (item).dataset.check !== 'loopback') item.remove();
    }
  }
  setRow('devices-list', 'camera', 'Camera', 'pending', 'Checking…');
  setRow('devices-list', 'microphone', 'Microphone', 'pending', 'Checking…');
  setRow('network-list', 'signaling', 'Signaling (WebSocket over HTTPS)', 'pending', 'Checking…');
  setRow('call-list', 'loopback', 'Call to yourself', 'pending', 'Waiting for the checks above…');
  $('verdict').dataset.tone = 'pending';
  $('verdict-title').textContent = 'Checking…';
  $('verdict-text').textContent = 'Allow the camera and microphone if your browser asks.';
  $('run-again').setAttribute('disabled', '');
  $('copy-report').setAttribute('disabled', '');
  $('report').textContent = 'The report appears when the check is done.';
  $('check-status').textContent = 'Checking your camera, microphone and network.';

  const [devices, servers] = await Promise.all([checkDevices(), fetchIceServers()]);
  /** @type {{ way: Way, ok: boolean }[]} */
  const results = [];
  let callOk = false;
  if (servers) {
    const ways = waysOut(servers);
    if (ways.length === 0) {
      setRow('network-list', 'none', 'Relay', 'skip', 'This server offers no STUN or TURN server.');
    }
    for (const [i, way] of ways.entries()) setRow('network-list', `way-${i}`, wayLabel(way), 'pending', 'Checking…');
    await Promise.all(
      ways.map(async (way, i) => {
        const outcome = await tryWay(way).catch((err) => ({ ok: false, detail: String(err.message || err) }));
        results.push({ way, ok: outcome.ok });
        setRow('network-list', `way-${i}`, wayLabel(way), outcome.ok ? 'ok' : 'fail', outcome.detail);
      }),
    );
    const relays = results.filter((r) => r.ok && r.way.kind === 'turn').map((r) => r.way.server);
    if (relays.length) {
      setRow('call-list', 'loopback', 'Call to yourself', 'pending', 'Calling through the relay…');
      try {
        const call = await loopbackCall(relays);
        callOk = true;
        const parts = [`Connected through the relay${call.via ? ` (${call.via})` : ''} in ${call.setupMs} ms`];
        if (call.rttMs !== null) parts.push(`round trip ${call.rttMs} ms`);
        parts.push(`${call.mbps.toFixed(1)} Mbit/s`);
        setRow('call-list', 'loopback', 'Call to yourself', 'ok', parts.join(' · '));
      } catch (err) {
        setRow('call-list', 'loopback', 'Call to yourself', 'fail', `Did not get through: ${/** @type {Error} */ (err).message}`);
      }
    } else {
      setRow('call-list', 'loopback', 'Call to yourself', 'skip', 'Not tried: no way to the relay.');
    }
  } else {
    setRow('call-list', 'loopback', 'Call to yourself', 'skip', 'Not tried: the server cannot be reached.');
  }

  const result = verdict(devices, servers !== null, results, callOk);
  $('verdict').dataset.tone = result.tone;
  $('verdict-title').textContent = result.title;
  $('verdict-text').textContent = result.text;
  const report = buildReport(result);
  $('report').textContent = report;
  $('copy-report').removeAttribute('disabled');
  $('run-again').removeAttribute('disabled');
  $('check-status').textContent = `Check done: ${result.title}.`;
  return { verdict: result, rows: [...rows.values()], report };
}

function copyReport() {
  const text = $('report').textContent ?? '';
  const button = $('copy-report');
  const label = /** @type {HTMLElement} */ (button.querySelector('.copy-text'));
  const done = () => {
    button.classList.add('done');
    label.textContent = 'Copied';
    $('check-status').textContent = 'Report copied.';
    setTimeout(() => {
      button.classList.remove('done');
      label.textContent = 'Copy';
    }, 2_000);
  };
  navigator.clipboard?.writeText(text).then(done, () => {
    const range = document.createRange();
    range.selectNodeContents($('report'));
    getSelection()?.removeAllRanges();
    getSelection()?.addRange(range);
    $('check-status').textContent = 'Select all and copy the report.';
  });
}

/** @type {{ done: Promise<unknown> }} */
const handle = { done: run() };
/** @type {any} */ (window).__duetCheck = handle;
$('copy-report').addEventListener('click', copyReport);
$('run-again').addEventListener('click', () => {
  handle.done = run();
});
