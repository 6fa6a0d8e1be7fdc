// The web client's signaling layer (web/js/signaling.js) against the golden examples
// of the protocol (crates/signaling/golden, the same files the Rust definitions are
// checked against): it sends exactly the `client/` documents and reads every
// `server/` one into the events the page acts on. The page's WebSocket is replaced
// by a stand-in that records what is sent and delivers the golden server frames.

import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startServer, REPO_ROOT } from './server.js';
import { launchBrowser, newContext, newPage } from './browser.js';

const GOLDEN = path.join(REPO_ROOT, 'crates', 'signaling', 'golden');

let server;
let browser;
let page;
/** @type {Record<string, Record<string, any>>} */
const golden = {};

before(async () => {
  for (const folder of ['client', 'server', 'call']) {
    golden[folder] = {};
    for (const file of await readdir(path.join(GOLDEN, folder))) {
      golden[folder][file.replace(/\.json$/, '')] = JSON.parse(await readFile(path.join(GOLDEN, folder, file), 'utf8'));
    }
  }
  server = await startServer();
  browser = await launchBrowser();
  page = await newPage(await newContext(browser));
  await page.goto(`${server.url}/?room=golden`);
  // The stand-in WebSocket: opens at once, keeps what is sent, delivers what
  // the test hands it.
  await page.evaluate(() => {
    class StandIn extends EventTarget {
      static CONNECTING = 0;
      static OPEN = 1;
      static CLOSING = 2;
      static CLOSED = 3;
      constructor(url) {
        super();
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        window.sockets.push(this);
        setTimeout(() => {
          this.readyState = 1;
          this.dispatchEvent(new Event('open'));
        }, 0);
      }
      send(text) {
        this.sent.push(JSON.parse(text));
      }
      close(code = 1000, reason = '') {
        this.readyState = 3;
        this.dispatchEvent(Object.assign(new Event('close'), { code, reason, wasClean: true }));
      }
      deliver(message) {
        this.dispatchEvent(new MessageEvent('message', { data: JSON.stringify(message) }));
      }
    }
    window.sockets = [];
    window.WebSocket = StandIn;
    sessionStorage.clear();
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Starts a RoomSession for room1 on a fresh stand-in socket and records its events. */
async function session() {
  return page.evaluate(async () => {
    const { RoomSession } = await import('/js/signaling.js');
    const s = new RoomSession('room1');
    window.events = [];
    for (const type of ['joined', 'other_joined', 'message', 'bye', 'full', 'refused']) {
      s.addEventListener(type, (e) => window.events.push([type, e.detail]));
    }
    window.session = s;
    const before = window.sockets.length;
    s.start();
    while (window.sockets.length === before || window.sockets.at(-1).sent.length === 0) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return window.sockets.at(-1).sent;
  });
}

const deliver = (message) => page.evaluate((m) => window.sockets.at(-1).deliver(m), message);
const events = () => page.evaluate(() => window.events);
const sent = () => page.evaluate(() => window.sockets.at(-1).sent);

test('the web client writes the golden client messages and reads the golden server messages', async () => {
  const { client, server: from } = golden;
  assert.deepEqual(await session(), [client.join], 'join');

  await deliver(from.joined);
  await deliver(from.other_joined);
  await deliver(from.message);
  await deliver(from.pong);
  await deliver(from.bye);
  assert.deepEqual(await events(), [
    ['joined', { id: from.joined.id, peers: [], iceServers: from.joined.iceServers, resumed: false, replacedId: false }],
    ['other_joined', { id: from.other_joined.id }],
    ['message', { from: from.message.from, data: from.message.data }],
    ['bye', { id: from.bye.id }],
  ]);

  await page.evaluate((data) => window.session.send(data), client['message-sdp'].data);
  await page.evaluate((data) => window.session.send(data), client['message-ice'].data);
  const written = await sent();
  assert.deepEqual(written.slice(-2), [client['message-sdp'], client['message-ice']]);
  assert.deepEqual(client['message-sdp'].data, golden.call.sdp, 'a description is a call message');

  // Call reports (report.js hands RoomSession.report the fields after `type`).
  for (const name of ['report-setup', 'report-summary']) {
    const { type, ...fields } = client[name];
    await page.evaluate((r) => window.session.report(r), fields);
    assert.equal(type, 'report');
    assert.deepEqual((await sent()).at(-1), client[name], name);
  }

  await page.evaluate(() => window.session.leave());
  assert.deepEqual((await sent()).at(-1), client.leave, 'leave');
});

test('a returning tab joins with the golden resume token', async () => {
  await page.evaluate(() => sessionStorage.clear());
  await session();
  await deliver(golden.server.joined);
  // A second session of the same room in this tab (a reload) takes the seat back.
  const join = await session();
  assert.deepEqual(join, [golden.client['join-resume']]);
  assert.equal(golden.client['join-resume'].resume, golden.server.joined.resume);
  await deliver(golden.server['joined-second']);
  const [[type, detail]] = await events();
  assert.equal(type, 'joined');
  assert.deepEqual(detail.peers, golden.server['joined-second'].peers);
});

test('full, a refusal and a ping in their golden shapes', async () => {
  await page.evaluate(() => sessionStorage.clear());
  await session();
  await deliver(golden.server.full);
  assert.deepEqual(await events(), [['full', { room: golden.server.full.room }]]);

  await session();
  await deliver(golden.server.error);
  assert.deepEqual(await events(), [['refused', { code: golden.server.error.code, message: golden.server.error.message }]]);

  const ping = await page.evaluate(async () => {
    const { SignalingClient } = await import('/js/signaling.js');
    const client = new SignalingClient(undefined, { pingIntervalMs: 20 });
    await client.connect();
    await new Promise((resolve) => setTimeout(resolve, 60));
    client.close();
    return window.sockets.at(-1).sent[0];
  });
  assert.deepEqual(ping, golden.client.ping);
  assert.deepEqual(page.problems, []);
});
