// Helpers for the call tests: open a room, join, wait for a phase, read media stats.
//
// The page exposes a small diagnostic object, window.__duet (see web/js/app.js):
// phase, id, counters, marks, pc(), localTracks(), reconnectSignaling(), restartIce().

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { launchBrowser, newContext, newPage, waitForStatus } from './browser.js';
import { startServer } from './server.js';

/** The Join button of the lobby. */
export function joinButton(page) {
  return page.getByRole('button', { name: 'Join', exact: true });
}

/**
 * Opens /?room=ROOM (plus `query`, e.g. '&ring=1') in a fresh context. Every frame
 * the page sends or receives on a WebSocket is kept in `page.frames`.
 */
export async function openRoom(browser, server, room, { viewport, colorScheme, query = '', init } = {}) {
  const context = await newContext(browser, { viewport, colorScheme });
  if (init) await context.addInitScript(init);
  const page = await newPage(context);
  recordFrames(page);
  await page.goto(`${server.url}/?room=${room}${query}`);
  return page;
}

/** Keeps every WebSocket frame: page.frames = [{ dir: 'sent' | 'received', at, msg }]. */
export function recordFrames(page) {
  page.frames = [];
  page.on('websocket', (ws) => {
    const keep = (dir) => (frame) => {
      let msg = null;
      try {
        msg = JSON.parse(frame.payload);
      } catch {
        return;
      }
      page.frames.push({ dir, at: Date.now(), msg });
    };
    ws.on('framesent', keep('sent'));
    ws.on('framereceived', keep('received'));
  });
}

/** Clicks Join. */
export async function join(page) {
  await joinButton(page).click();
}

/** The page's call phase ('lobby', 'waiting', 'connected', 'ended', …). */
export function phase(page) {
  return page.evaluate(() => window.__duet?.phase ?? 'none');
}

/** Waits until the page is in `wanted` (a phase or a list of phases). */
export async function waitPhase(page, wanted, timeout = 10_000) {
  const list = Array.isArray(wanted) ? wanted : [wanted];
  try {
    await page.waitForFunction((l) => l.includes(window.__duet?.phase), list, { timeout, polling: 50 });
  } catch (err) {
    throw new Error(`the page did not reach ${list.join(' or ')} within ${timeout} ms; it is ${await phase(page)}`, {
      cause: err,
    });
  }
}

/** Inbound media figures: frames decoded, audio received. */
export function inbound(page) {
  return page.evaluate(async () => {
    const pc = window.__duet.pc();
    const out = { framesDecoded: 0, frameHeight: 0, videoCodec: null, audioPackets: 0, audioEnergy: 0, audioSamples: 0 };
    if (!pc) return out;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'video') {
        out.framesDecoded += s.framesDecoded ?? 0;
        out.frameHeight = s.frameHeight ?? out.frameHeight;
        if (s.codecId) out.videoCodec = report.get(s.codecId)?.mimeType ?? null;
      } else {
        out.audioPackets += s.packetsReceived ?? 0;
        out.audioEnergy += s.totalAudioEnergy ?? 0;
        out.audioSamples += s.totalSamplesReceived ?? 0;
      }
    });
    return out;
  });
}

/** Waits until `page` has decoded `more` frames beyond what it has now. */
export async function framesKeepComing(page, more = 10, timeout = 5_000) {
  const start = (await inbound(page)).framesDecoded;
  const deadline = Date.now() + timeout;
  let now = start;
  while (Date.now() < deadline) {
    now = (await inbound(page)).framesDecoded;
    if (now >= start + more) return now;
    await page.waitForTimeout(100);
  }
  assert.fail(`video stalled: ${now - start} new frames in ${timeout} ms (wanted ${more})`);
}

/** Waits until the page receives audio with sound in it (the fake microphone beeps). */
export async function audioArrives(page, timeout = 5_000) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await inbound(page);
    if (last.audioPackets > 20 && last.audioEnergy > 0) return last;
    await page.waitForTimeout(100);
  }
  assert.fail(`no audible audio received: ${JSON.stringify(last)}`);
}

/** The page's counters: { sent: {descriptions, offers, candidates, messages}, call: {...} }. */
export function counters(page) {
  return page.evaluate(() => window.__duet.counters);
}

/** Every local track the page opened: [{ kind, readyState, enabled, label }]. */
export function localTracks(page) {
  return page.evaluate(() => window.__duet.localTracks());
}

/**
 * Opens a room in two contexts, joins both (first, then second) and waits until
 * both are connected and decode each other's video.
 */
export async function connectPair(browser, server, room, { first = {}, second = {}, query = '' } = {}) {
  const a = await openRoom(browser, server, room, { query, ...first });
  await join(a);
  await waitPhase(a, 'waiting');
  const b = await openRoom(browser, server, room, { query, ...second });
  await join(b);
  await Promise.all([waitPhase(a, 'connected'), waitPhase(b, 'connected')]);
  await Promise.all([framesKeepComing(a, 5), framesKeepComing(b, 5)]);
  return [a, b];
}

/** Fails if the page logged an error or threw. */
export function assertNoProblems(page) {
  assert.deepEqual(page.problems, [], `problems on ${page.url()}`);
}

/** Closes the pages' contexts. */
export async function closeAll(...pages) {
  for (const page of pages) await page.context().close().catch(() => {});
}

/** Polls `fn` (in node) until it returns true; fails after `timeout` ms. */
export async function until(fn, timeout = 5_000, what = 'the condition') {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.fail(`timed out after ${timeout} ms waiting for ${what}`);
}

/**
 * Starts a server and a browser for the test file (before) and stops them (after).
 * Returns an object whose `server` and `browser` are set once the tests run.
 */
export function useServerAndBrowser(options) {
  const env = { server: null, browser: null };
  before(async () => {
    env.server = await startServer(options);
    env.browser = await launchBrowser();
  });
  after(async () => {
    await env.browser?.close();
    await env.server?.stop();
  });
  return env;
}

/** The other side sees "They left the call" within 2 s, and its camera and microphone are released. */
export async function assertEndsWithin2s(page, since) {
  await waitForStatus(page, 'They left the call', 2_000);
  const took = Date.now() - since;
  assert.ok(took <= 2_000, `"They left" took ${took} ms`);
  await page.waitForFunction(() => window.__duet.localTracks().every((t) => t.readyState === 'ended'), null, { timeout: 1_000 });
  const tracks = await localTracks(page);
  assert.ok(tracks.length >= 2, 'the page had a camera and a microphone');
}
