// The web client calls the native peer (crates/peer, the `duet-peer` binary) and
// the other way round: the browser decodes the native test pattern and hears its
// tone, the native peer receives the browser's (fake) camera and microphone, and
// chat typed in the page comes back as `echo: …` from the native side. Once with
// the browser offering (the native peer joins second), once with the native peer
// offering, once relay-only on both sides through Duet's TURN, and once with the
// native peer sending H.264 instead of VP8.
//
// The binary is target/debug/duet-peer unless DUET_PEER_BIN names another one
// (scripts/test builds it). Only the child processes started here are signalled.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';

import { waitForStatus } from './browser.js';
import {
  assertNoProblems,
  audioArrives,
  closeAll,
  framesKeepComing,
  inbound,
  join,
  openRoom,
  useServerAndBrowser,
  waitPhase,
} from './call-helpers.js';
import { REPO_ROOT } from './server.js';

const env = useServerAndBrowser();

/** How long the native peer stays once media flows (then it leaves the room). */
const NATIVE_SECONDS = 8;

function peerBinary() {
  return path.resolve(REPO_ROOT, process.env.DUET_PEER_BIN || path.join('target', 'debug', 'duet-peer'));
}

/**
 * Starts `duet-peer` in `room`, trusting only the test server's certificate.
 * Returns { exited: Promise<{ code, signal, report, stderr }>, kill() }.
 */
function startPeer(server, room, extraArgs = []) {
  const reportFile = path.join(server.dataDir, `peer-report-${room}.json`);
  const args = [
    '--url',
    `${server.url.replace('https://', 'wss://')}/ws`,
    '--room',
    room,
    '--ca-file',
    path.join(server.dataDir, 'cert.pem'),
    '--echo',
    '--duration',
    String(NATIVE_SECONDS),
    '--timeout',
    '20',
    '--max-duration',
    '60',
    '--quiet',
    '--report',
    reportFile,
    ...extraArgs,
  ];
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('DUET_')));
  const child = spawn(peerBinary(), args, { env: { ...inherited, NO_COLOR: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const killOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  const exited = new Promise((resolve) => {
    child.once('error', (err) => resolve({ code: null, signal: null, report: null, stderr: `could not start: ${err.message}` }));
    child.once('exit', async (code, signal) => {
      process.removeListener('exit', killOnExit);
      const report = await readFile(reportFile, 'utf8')
        .then((text) => JSON.parse(text))
        .catch(() => null);
      resolve({ code, signal, report, stderr });
    });
  });
  return { exited, kill: killOnExit };
}

/** The browser's selected candidate pair: { local, remote } candidate types. */
function selectedPair(page) {
  return page.evaluate(async () => {
    const report = await window.__duet.pc().getStats();
    for (const s of report.values()) {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = report.get(s.selectedCandidatePairId);
        return {
          local: report.get(pair.localCandidateId)?.candidateType,
          remote: report.get(pair.remoteCandidateId)?.candidateType,
        };
      }
    }
    return null;
  });
}

/** Types `text` into the page's chat and waits for the native peer's echo. */
async function chatIsEchoed(page, text) {
  await page.getByRole('button', { name: 'Chat' }).click();
  await page.getByLabel('Message', { exact: true }).fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
  await page.getByRole('log', { name: 'Messages' }).getByText(`echo: ${text}`).waitFor({ timeout: 5_000 });
}

/** What the native peer's report must show after a call with a browser. */
function assertNativeReport(result, { relay }) {
  const { report } = result;
  const context = `exit ${result.code}; stderr:\n${result.stderr}\nreport: ${JSON.stringify(report, null, 1)}`;
  assert.equal(result.code, 0, context);
  assert.ok(report, `no report: ${context}`);
  assert.equal(report.outcome, 'ok', context);
  assert.equal(report.error, null, context);
  // The browser's camera: whole frames, a keyframe among them; its microphone: Opus frames.
  assert.ok(report.received.video.frames > 5 * NATIVE_SECONDS, `video frames received: ${context}`);
  assert.ok(report.received.video.keyframes >= 1, `a keyframe received: ${context}`);
  assert.ok(report.received.audio.frames > 100, `audio frames received: ${context}`);
  // What it sent reached the browser (the browser's receiver reports say how much was lost).
  assert.ok(report.sent.video.frames > 5 * NATIVE_SECONDS, context);
  assert.ok(report.sent.audio.frames > 100, context);
  assert.ok(report.time_to_connected_ms !== null, context);
  assert.ok(report.time_to_first_frame_ms.received.video !== null, context);
  assert.equal(report.chat.received, 1, context);
  assert.equal(report.chat.echoed, 1, context);
  if (relay) {
    assert.equal(report.candidates.local, 'relay', context);
    assert.ok(report.candidates.relay_address, context);
  }
}

/** One call between a page and the native peer; `nativeFirst` decides who offers. */
async function browserNativeCall({ room, nativeFirst, relay, codec = 'VP8' }) {
  const page = await openRoom(env.browser, env.server, room, { query: relay ? '&policy=relay' : '' });
  const nativeArgs = [...(relay ? ['--relay-only'] : []), '--codec', codec.toLowerCase()];
  let native;
  if (nativeFirst) {
    native = startPeer(env.server, room, nativeArgs);
    // The native peer is in the room once the server counts a member for it; the
    // page joins second and so makes the offer.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await join(page);
  } else {
    await join(page);
    await waitPhase(page, 'waiting');
    native = startPeer(env.server, room, nativeArgs);
  }
  try {
    await waitPhase(page, 'connected', 15_000);
    // The browser decodes the native test pattern (640x360) and hears its tone.
    await framesKeepComing(page, 30, 10_000);
    const media = await audioArrives(page);
    const video = await inbound(page);
    assert.equal(video.videoCodec, `video/${codec}`);
    assert.equal(video.frameHeight, 360);
    assert.ok(media.audioEnergy > 0);
    const pair = await selectedPair(page);
    if (relay) {
      assert.equal(pair?.local, 'relay', JSON.stringify(pair));
      assert.equal(pair?.remote, 'relay', JSON.stringify(pair));
    }
    await chatIsEchoed(page, `hello native, ${nativeFirst ? 'you joined first' : 'I joined first'}`);
    const pageCode = await page.evaluate(() => window.__duet.verificationCode);
    assert.match(pageCode ?? '', /^\d{3} \d{3}$/, 'the page shows a verification code');

    // Who offered: exactly one offer, from the member who joined second.
    const offers = page.frames.filter((f) => f.msg.type === 'message' && f.msg.data?.description?.type === 'offer');
    assert.equal(offers.length, 1, JSON.stringify(offers.map((f) => f.dir)));
    assert.equal(offers[0].dir, nativeFirst ? 'sent' : 'received');

    // The native peer leaves after its duration; the page says so.
    const result = await native.exited;
    assertNativeReport(result, { relay });
    assert.equal(result.report.verification_code, pageCode, 'the native peer computes the same verification code');
    assert.equal(result.report.sent.video.codec, codec);
    // The browser answers with the offer's codec order, so it sends what it receives.
    assert.equal(result.report.received.video.codec, codec);
    assert.equal(result.report.offerer, !nativeFirst, 'the member who joined second offered');
    await waitForStatus(page, 'They left the call', 5_000);
    assertNoProblems(page);
  } finally {
    native.kill();
    await closeAll(page);
  }
}

describe('the web client and the native peer', () => {
  test('the native peer joins second and offers; media both ways, chat echo', { timeout: 60_000 }, () =>
    browserNativeCall({ room: 'native-offers', nativeFirst: false, relay: false }),
  );

  test('the browser joins second and offers; media both ways, chat echo', { timeout: 60_000 }, () =>
    browserNativeCall({ room: 'browser-offers', nativeFirst: true, relay: false }),
  );

  test('relay-only on both sides through Duet’s TURN', { timeout: 60_000 }, () =>
    browserNativeCall({ room: 'native-relay', nativeFirst: false, relay: true }),
  );

  test('H.264 from the native peer, decoded by the browser; the browser sends H.264 back', { timeout: 60_000 }, () =>
    browserNativeCall({ room: 'native-h264', nativeFirst: false, relay: false, codec: 'H264' }),
  );
});
