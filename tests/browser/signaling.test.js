// web/js/signaling.js (the SignalingClient) in a real browser against the real server.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startServer } from './server.js';
import { launchBrowser, newContext, newPage } from './browser.js';

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
