// web/js/signaling.js (the SignalingClient) in a real browser against the real server.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startServer } from './server.js';
import { launchBrowser, newContext, newPage } from './browser.js';
import { until } from './call-helpers.js';

let server;
let browser;

before(async () => {
  browser = await launchBrowser();
  server = await startServer();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function pageAt(path) {
  const page = await newPage(await newContext(browser));
  await page.goto(`${server.url}${path}`);
  return page;
}

test('the client pings on its interval and gets pongs', async () => {
  const page = await pageAt('/');
  const result = await page.evaluate(async () => {
    const { SignalingClient } = await import('/js/signaling.js');
    const client = new SignalingClient(undefined, { pingIntervalMs: 100 });
    let pongs = 0;
    client.addEventListener('pong', () => pongs++);
    await client.connect();
    const url = client.url;
    await new Promise((resolve) => setTimeout(resolve, 550));
    client.close();
    return { url, pongs };
  });
  assert.equal(result.url, `${server.url.replace('https://', 'wss://')}/ws`);
  assert.ok(result.pongs >= 3, `expected pongs every 100 ms, got ${result.pongs} in 550 ms`);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('two clients relay messages and the server refusals arrive as error events', async () => {
  const a = await pageAt('/');
  const b = await pageAt('/');
  const setUp = async (page) =>
    page.evaluate(async () => {
      const { SignalingClient } = await import('/js/signaling.js');
      const client = new SignalingClient();
      window.received = [];
      client.addEventListener('signal', (e) => window.received.push(e.detail));
      await client.connect();
      window.client = client;
    });
  await setUp(a);
  await setUp(b);
  const received = (page) => page.evaluate(() => window.received);
  const waitFor = (page, type) =>
    page.waitForFunction((t) => window.received.some((m) => m.type === t), type, { timeout: 5_000 });

  await a.evaluate(() => window.client.sendMessage({ too: 'early' }));
  await waitFor(a, 'error');
  assert.equal((await received(a)).find((m) => m.type === 'error').code, 'not_in_room');

  await a.evaluate(() => window.client.join('relay'));
  await waitFor(a, 'joined');
  await b.evaluate(() => window.client.join('relay'));
  await waitFor(b, 'joined');
  await waitFor(a, 'other_joined');
  const aId = (await received(a)).find((m) => m.type === 'joined').id;
  const bJoined = (await received(b)).find((m) => m.type === 'joined');
  assert.deepEqual(bJoined.peers, [aId]);

  await b.evaluate(() => window.client.sendMessage({ description: { type: 'offer', sdp: 'v=0' } }));
  await waitFor(a, 'message');
  assert.deepEqual(
    (await received(a)).find((m) => m.type === 'message'),
    { type: 'message', from: bJoined.id, data: { description: { type: 'offer', sdp: 'v=0' } } },
  );

  await b.evaluate(() => window.client.leave());
  await waitFor(b, 'leaved');
  await waitFor(a, 'bye');
  assert.equal((await received(a)).find((m) => m.type === 'bye').id, bJoined.id);

  for (const page of [a, b]) {
    assert.deepEqual(page.problems, []);
    await page.context().close();
  }
});

// RoomSession: a seat that outlives its sockets.

/** Sets up window.s (a RoomSession for `room`) and window.seen (its events) in the page. */
async function session(page, room, { preconnect = false } = {}) {
  await page.evaluate(
    async ([room, preconnect]) => {
      const { RoomSession } = await import('/js/signaling.js');
      window.seen = [];
      window.s = new RoomSession(room);
      for (const type of ['joined', 'other_joined', 'bye', 'message', 'ended', 'state']) {
        window.s.addEventListener(type, (e) => window.seen.push({ type, ...e.detail }));
      }
      if (preconnect) {
        window.s.preconnect();
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      window.s.start();
    },
    [room, preconnect],
  );
  await page.waitForFunction(() => window.seen.some((e) => e.type === 'joined'), null, { timeout: 5_000 });
}

const seen = (page, type) => page.evaluate((t) => window.seen.filter((e) => e.type === t), type);

test('RoomSession: a dropped socket resumes the same seat; messages either way are not lost', async () => {
  const a = await pageAt('/');
  const b = await pageAt('/');
  const sockets = [];
  a.on('websocket', (ws) => sockets.push(ws));
  await session(a, 'resume', { preconnect: true });
  assert.equal(sockets.length, 1, 'start() used the socket preconnect() opened');
  await session(b, 'resume');
  const aId = await a.evaluate(() => window.s.id);

  // A moves its seat to a new socket (make-before-break) and sends at once: the
  // message waits in A's outbox until the seat is back; B sends meanwhile: it arrives
  // on whichever of A's sockets holds the seat at that moment.
  await a.evaluate(() => {
    window.s.reconnectNow();
    window.s.send({ n: 'from A while away' });
  });
  await b.evaluate(() => window.s.send({ n: 'from B meanwhile' }));
  await a.waitForFunction(() => window.seen.filter((e) => e.type === 'joined').length === 2, null, { timeout: 5_000 });
  const joins = await seen(a, 'joined');
  assert.equal(joins[1].id, aId);
  assert.equal(joins[1].resumed, true);
  await a.waitForFunction(() => window.seen.some((e) => e.type === 'message' && e.data.n === 'from B meanwhile'), null, { timeout: 5_000 });
  await b.waitForFunction(() => window.seen.some((e) => e.type === 'message' && e.data.n === 'from A while away'), null, { timeout: 5_000 });
  assert.deepEqual(await seen(b, 'bye'), [], 'B never saw A leave');
  assert.equal(sockets.length, 2);
  // The server closed the old socket when the new one resumed the seat (4001).
  await until(() => sockets[0].isClosed(), 3_000, 'the old socket to close');

  // leave() gives the seat up for good: B hears bye at once, and the token is forgotten.
  await a.evaluate(() => window.s.leave());
  await b.waitForFunction(() => window.seen.some((e) => e.type === 'bye'), null, { timeout: 2_000 });
  assert.equal(await a.evaluate(() => sessionStorage.length), 0);
  for (const page of [a, b]) {
    assert.deepEqual(page.problems, []);
    await page.context().close();
  }
});

test('RoomSession: when another tab takes the seat over (4001), this one stops', async () => {
  const first = await pageAt('/');
  await session(first, 'takeover');
  const stored = await first.evaluate(() => JSON.stringify(Object.fromEntries(Object.entries(sessionStorage))));
  const second = await pageAt('/');
  await second.evaluate((entries) => {
    for (const [k, v] of Object.entries(JSON.parse(entries))) sessionStorage.setItem(k, v);
  }, stored);
  await session(second, 'takeover');
  assert.equal(await second.evaluate(() => window.s.id), await first.evaluate(() => window.s.id), 'the second tab resumed the seat');
  await first.waitForFunction(() => window.seen.some((e) => e.type === 'ended'), null, { timeout: 5_000 });
  assert.equal((await seen(first, 'ended'))[0].reason, 'replaced');
  await first.waitForTimeout(500);
  assert.equal(await first.evaluate(() => window.s.state), 'closed', 'it does not fight back');
  assert.equal(await second.evaluate(() => window.s.state), 'joined');
  for (const page of [first, second]) {
    assert.deepEqual(page.problems, []);
    await page.context().close();
  }
});
