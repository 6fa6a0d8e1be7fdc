// Calls through Duet's own TURN relay, relay-only, in real Chromium: once with
// the TURN/UDP URL only, once with the TURN/TCP URL only (TCP on the HTTPS port),
// and once with the TURNS URL only (TLS on the HTTPS port, with a certificate
// Chromium trusts: it refuses TURN over TLS otherwise). The two pages use
// Duet's signaling (/ws) and the iceServers of `joined`, exactly as the web
// client does, but drive RTCPeerConnection themselves, so the test checks the
// relay and the credentials, independent of the UI.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { launchBrowser, newContext, newPage } from './browser.js';
import { makeTrustedLocalhost, spkiHash } from './certs.js';
import { startPebble } from './pebble.js';
import { startServer } from './server.js';

let server;
let browser;

before(async () => {
  server = await startServer({ env: process.env.DUET_LOG ? { DUET_LOG: process.env.DUET_LOG } : {} });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/**
 * Runs in the page: joins `room`, keeps only the TURN URL for `transport`,
 * calls the other member relay-only, and reports the selected pair and the
 * decoded video once frames arrive.
 */
async function relayCall({ room, scheme, transport }) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  const ws = new WebSocket(`wss://${location.host}/ws`);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error('signaling connection failed'));
  });
  const inbox = [];
  let wake = () => {};
  ws.onmessage = (event) => {
    inbox.push(JSON.parse(event.data));
    wake();
  };
  const next = async (type, timeoutMs = 15000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = inbox.findIndex((m) => m.type === type);
      if (index >= 0) return inbox.splice(index, 1)[0];
      if (Date.now() > deadline) throw new Error(`no ${type} within ${timeoutMs} ms`);
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }
  };
  ws.send(JSON.stringify({ type: 'join', room }));
  const joined = await next('joined');
  const turnOnly = joined.iceServers
    .map((server) => ({ ...server, urls: server.urls.filter((url) => url.startsWith(`${scheme}:`) && url.endsWith(`transport=${transport}`)) }))
    .filter((server) => server.urls.length > 0);
  if (turnOnly.length !== 1 || turnOnly[0].urls.length !== 1) {
    throw new Error(`expected one ${scheme} URL for ${transport}: ${JSON.stringify(joined.iceServers)}`);
  }
  const pc = new RTCPeerConnection({ iceServers: turnOnly, iceTransportPolicy: 'relay' });
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  const gathered = [];
  pc.onicecandidate = (event) => {
    if (event.candidate) {
      gathered.push(event.candidate.candidate);
      ws.send(JSON.stringify({ type: 'message', data: { candidate: event.candidate.toJSON() } }));
    }
  };
  const offerer = joined.peers.length > 0;
  if (!offerer) await next('other_joined');
  const log = [];
  pc.oniceconnectionstatechange = () => log.push(`ice:${pc.iceConnectionState}`);
  const handle = async (message) => {
    const data = message.data;
    log.push(data.description ? `sdp:${data.description.type}` : 'cand');
    if (data.description) {
      await pc.setRemoteDescription(data.description);
      if (data.description.type === 'offer') {
        await pc.setLocalDescription(await pc.createAnswer());
        ws.send(JSON.stringify({ type: 'message', data: { description: pc.localDescription.toJSON() } }));
      }
    } else if (data.candidate) {
      await pc.addIceCandidate(data.candidate);
    }
  };
  if (offerer) {
    await pc.setLocalDescription(await pc.createOffer());
    ws.send(JSON.stringify({ type: 'message', data: { description: pc.localDescription.toJSON() } }));
  }
  // Apply messages in order until video is decoded (candidates may precede the description: queue them).
  const pending = [];
  const deadline = Date.now() + 20000;
  let framesDecoded = 0;
  while (Date.now() < deadline) {
    while (inbox.some((m) => m.type === 'message')) {
      const message = next('message');
      pending.push(await message);
    }
    for (let i = 0; i < pending.length; ) {
      const data = pending[i].data;
      if (data.candidate && !pc.remoteDescription) {
        i += 1;
        continue;
      }
      await handle(pending.splice(i, 1)[0]);
    }
    const stats = await pc.getStats();
    for (const report of stats.values()) {
      if (report.type === 'inbound-rtp' && report.kind === 'video') framesDecoded = report.framesDecoded || 0;
    }
    if (framesDecoded > 5) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const stats = await pc.getStats();
  let pair = null;
  for (const report of stats.values()) {
    if (report.type === 'transport' && report.selectedCandidatePairId) pair = stats.get(report.selectedCandidatePairId);
  }
  const local = pair && stats.get(pair.localCandidateId);
  const remote = pair && stats.get(pair.remoteCandidateId);
  const pairs = [];
  for (const report of stats.values()) {
    if (report.type === 'candidate-pair') pairs.push(`${report.state}:${stats.get(report.localCandidateId)?.port}->${stats.get(report.remoteCandidateId)?.port}`);
  }
  const result = {
    framesDecoded,
    ice: pc.iceConnectionState,
    signaling: pc.signalingState,
    pairs,
    log,
    localType: local?.candidateType,
    remoteType: remote?.candidateType,
    relayProtocol: local?.relayProtocol,
    gathered,
  };
  // Stay in the room until the other side is done too.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  pc.close();
  ws.close();
  for (const track of stream.getTracks()) track.stop();
  return result;
}

/**
 * Two pages of `on` (a server and a browser) call each other relay-only through
 * the one URL of `scheme` and `transport`; both must decode video over a relay
 * pair of the expected relay protocol.
 */
async function relayOnlyCall(on, { scheme, transport, relayProtocol }) {
  const contexts = [await newContext(on.browser), await newContext(on.browser)];
  const pages = await Promise.all(contexts.map((context) => newPage(context)));
  await Promise.all(pages.map((page) => page.goto(on.server.url)));
  const room = `relay-${scheme}-${transport}-${Date.now()}`;
  const first = pages[0].evaluate(relayCall, { room, scheme, transport });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const second = pages[1].evaluate(relayCall, { room, scheme, transport });
  const results = await Promise.all([first, second]);
  for (const result of results) {
    assert.ok(result.gathered.length > 0, 'relay candidates gathered');
    assert.ok(result.gathered.every((candidate) => candidate.includes(' typ relay ')), JSON.stringify(result.gathered));
    assert.equal(result.localType, 'relay', JSON.stringify(result));
    assert.equal(result.remoteType, 'relay', JSON.stringify(result));
    assert.equal(result.relayProtocol, relayProtocol, JSON.stringify(result));
    assert.ok(result.framesDecoded > 5, `video decoded: ${JSON.stringify(result)}`);
  }
  await Promise.all(contexts.map((context) => context.close()));
}

for (const transport of ['udp', 'tcp']) {
  test(`a relay-only call over TURN/${transport.toUpperCase()} decodes video on both sides`, { timeout: 60_000 }, async () => {
    await relayOnlyCall({ server, browser }, { scheme: 'turn', transport, relayProtocol: transport });
  });
}

test('a relay-only call over TURN/TLS on the HTTPS port, with a trusted certificate, decodes video on both sides', { timeout: 90_000 }, async () => {
  const ca = await makeTrustedLocalhost();
  const trusted = await startServer({ extraArgs: ['--cert', ca.cert, '--key', ca.key] });
  const tlsBrowser = await launchBrowser({ args: [`--ignore-certificate-errors-spki-list=${ca.caSpki}`] });
  try {
    // The page is loaded as https://localhost:PORT, the name the certificate holds.
    const url = trusted.url.replace('127.0.0.1', 'localhost');
    await relayOnlyCall({ server: { url }, browser: tlsBrowser }, { scheme: 'turns', transport: 'tcp', relayProtocol: 'tls' });
  } finally {
    await tlsBrowser.close();
    await trusted.stop();
    await rm(ca.dir, { recursive: true, force: true });
  }
});

test('a relay-only call over TURN/TLS on port 443 with a certificate duet obtained over ACME (pebble) decodes video on both sides', { timeout: 120_000 }, async () => {
  const domain = 'call.duet.test';
  // The test CA signs pebble's own HTTPS; duet trusts it with --acme-ca.
  const listener = await makeTrustedLocalhost();
  const pebble = await startPebble({ tlsPort: 443, listener, dir: listener.dir });
  let duet = null;
  let acmeBrowser = null;
  try {
    duet = await startServer({
      listen: '127.0.0.1:443',
      extraArgs: ['--acme', '--domain', domain, '--acme-directory', pebble.directory, '--acme-ca', listener.caPem],
    });
    const deadline = Date.now() + 60_000;
    while (!duet.output().includes('obtained a new certificate over ACME')) {
      assert.ok(Date.now() < deadline, `no ACME certificate within 60 s:\n${duet.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    // Chromium trusts pebble's root and intermediate (made at pebble's start) and
    // resolves the name to loopback, as a browser would resolve the real one.
    const spkis = [];
    for (const [name, pem] of [['root', await pebble.root()], ['intermediate', await pebble.intermediate()]]) {
      const file = path.join(listener.dir, `pebble-${name}.pem`);
      await writeFile(file, pem);
      spkis.push(spkiHash(file));
    }
    acmeBrowser = await launchBrowser({
      args: [`--ignore-certificate-errors-spki-list=${spkis.join(',')}`, `--host-resolver-rules=MAP ${domain} 127.0.0.1`],
    });
    await relayOnlyCall({ server: { url: `https://${domain}` }, browser: acmeBrowser }, { scheme: 'turns', transport: 'tcp', relayProtocol: 'tls' });
  } finally {
    await acmeBrowser?.close();
    await duet?.stop();
    await pebble.stop();
    await rm(listener.dir, { recursive: true, force: true });
  }
});
