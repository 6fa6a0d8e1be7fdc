// The classic course app's own page (express + socket.io 2 in its day), unchanged,
// served by Duet and signaling through Duet's /socket.io/ endpoint: two of its pages
// call each other, and one of its pages calls Duet's own web client in one room
// (either one joining first). The page comes from ../shared/anchors/seed-app beside
// the repository; the socket.io 2.0.4 client library it loads from
// /socket.io/socket.io.js comes from the npm registry (socket.io-client-2 in
// package.json).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startServer, REPO_ROOT } from './server.js';
import { launchBrowser, newContext, newPage } from './browser.js';
import { closeAll, framesKeepComing, join, openRoom, waitPhase } from './call-helpers.js';

const SEED_PAGE = path.resolve(REPO_ROOT, '..', 'shared', 'anchors', 'seed-app', 'server', 'public');
const require = createRequire(import.meta.url);
const missing = existsSync(SEED_PAGE) ? false : `the reference app is not beside the repository (${SEED_PAGE})`;

let server;
let browser;
let webDir;

before(async () => {
  if (missing) return;
  // Duet's web client at /, the course page at /seed/, its socket.io client where
  // it looks for it.
  webDir = await mkdtemp(path.join(tmpdir(), 'duet-legacy-web-'));
  await cp(path.join(REPO_ROOT, 'web'), webDir, { recursive: true });
  await cp(SEED_PAGE, path.join(webDir, 'seed'), { recursive: true });
  await mkdir(path.join(webDir, 'socket.io'));
  const library = require.resolve('socket.io-client-2/dist/socket.io.js');
  await cp(library, path.join(webDir, 'socket.io', 'socket.io.js'));
  server = await startServer({ extraArgs: ['--web-dir', webDir] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (webDir) await rm(webDir, { recursive: true, force: true });
});

/** Opens the course page in room `room` and clicks "Connect Sig Server". */
async function seedPage(room) {
  const page = await newPage(await newContext(browser));
  await page.goto(`${server.url}/seed/?room=${room}`);
  await page.getByRole('button', { name: 'Connect Sig Server' }).click();
  return page;
}

function seedState(page) {
  return page.evaluate(() => ({
    state: document.getElementById('state').textContent,
    ice: document.getElementById('ice').textContent,
    note: document.getElementById('note').textContent,
  }));
}

/** The course page is in a call: ICE connected and the remote video and audio playing. */
async function seedInCall(page, timeout = 15_000) {
  try {
    await page.waitForFunction(
      () => {
        const video = document.getElementById('remotevideo');
        const ice = document.getElementById('ice').textContent;
        const stream = video.srcObject;
        return (
          (ice === 'connected' || ice === 'completed') &&
          video.videoWidth > 0 &&
          video.currentTime > 0.5 &&
          stream?.getAudioTracks().length === 1
        );
      },
      null,
      { timeout },
    );
  } catch (err) {
    throw new Error(`the course page is not in a call: ${JSON.stringify(await seedState(page))}`, { cause: err });
  }
  // Frames keep coming, not one.
  const before = await page.evaluate(() => document.getElementById('remotevideo').currentTime);
  await page.waitForFunction((t) => document.getElementById('remotevideo').currentTime > t + 0.5, before, { timeout: 5_000 });
}

/**
 * The page logged no error but one: Duet's Content-Security-Policy blocks the course
 * page's inline `onsubmit` handler (its buttons do not need it).
 */
function assertClean(page) {
  const problems = page.problems.filter((p) => !/inline event handler violates the following Content Security Policy/.test(p));
  assert.deepEqual(problems, [], `problems on ${page.url()}`);
}

test('two course pages call each other through Duet', { skip: missing }, async () => {
  const a = await seedPage('legacy-pair');
  await seedWaitState(a, 'joined');
  const b = await seedPage('legacy-pair');
  await Promise.all([seedInCall(a), seedInCall(b)]);
  assert.equal((await seedState(a)).state, 'joined_conn');
  assert.equal((await seedState(b)).state, 'joined_conn');
  // Leave on one side: the other is told `bye` and waits for someone again.
  await b.getByRole('button', { name: 'Leave' }).click();
  await seedWaitState(a, 'joined_unbind');
  await seedWaitState(b, 'leaved');
  assertClean(a);
  assertClean(b);
  await closeAll(a, b);
});

test("a course page calls Duet's web client (the course page first)", { skip: missing }, async () => {
  const seed = await seedPage('legacy-mixed-1');
  await seedWaitState(seed, 'joined');
  const duet = await openRoom(browser, server, 'legacy-mixed-1');
  await join(duet);
  await waitPhase(duet, 'connected', 15_000);
  await Promise.all([seedInCall(seed), framesKeepComing(duet, 10)]);
  // The Duet side hangs up: the course page is told `bye`.
  await duet.getByRole('button', { name: 'Hang up' }).click();
  await seedWaitState(seed, 'joined_unbind');
  assertClean(seed);
  await closeAll(seed, duet);
});

test("Duet's web client calls a course page (Duet first)", { skip: missing }, async () => {
  const duet = await openRoom(browser, server, 'legacy-mixed-2');
  await join(duet);
  await waitPhase(duet, 'waiting');
  const seed = await seedPage('legacy-mixed-2');
  await waitPhase(duet, 'connected', 15_000);
  await Promise.all([seedInCall(seed), framesKeepComing(duet, 10)]);
  // The course page closes: Duet's client is told at once (no resume for it).
  const closed = Date.now();
  await seed.context().close();
  await waitPhase(duet, ['ended', 'waiting'], 5_000);
  assert.ok(Date.now() - closed < 5_000);
  await closeAll(duet);
});

async function seedWaitState(page, wanted, timeout = 10_000) {
  try {
    await page.waitForFunction((s) => document.getElementById('state').textContent === s, wanted, { timeout });
  } catch (err) {
    throw new Error(`the course page is not in state ${wanted}: ${JSON.stringify(await seedState(page))}`, { cause: err });
  }
}
