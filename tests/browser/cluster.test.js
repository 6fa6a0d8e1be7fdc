// A call whose two members sit on different `duet serve` nodes sharing one
// real redis-server, behind a plain TCP load balancer (the test's own, below:
// it sends each new TCP connection to the node it is set to). Then a rolling
// restart: the node of one member gets SIGTERM, its member's page reconnects
// through the balancer to the other node and resumes its seat; nobody is told
// `bye` and the media never stops.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';

import { launchBrowser } from './browser.js';
import { freePort } from './pebble.js';
import { closeAll, framesKeepComing, join, openRoom, until, waitPhase, audioArrives } from './call-helpers.js';
import { startServer } from './server.js';

let redis;
let nodes = [];
let balancer;
let browser;

/** redis-server without persistence on a free port; stopped (by its PID) after the tests. */
async function startRedis() {
  const port = await freePort();
  const child = spawn('/usr/bin/redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  process.once('exit', () => child.kill('SIGKILL'));
  await until(
    () =>
      new Promise((resolve) => {
        const socket = net.connect(port, '127.0.0.1', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      }),
    10_000,
    'redis-server to listen',
  );
  return { url: `redis://127.0.0.1:${port}/0`, signal: (name) => child.kill(name), stop: () => child.kill('SIGKILL') };
}

/** A TCP load balancer: each new connection goes to `target` (a port), piped both ways. */
async function startBalancer() {
  const lb = { target: null, connections: new Map(), server: null, port: 0 };
  lb.server = net.createServer((client) => {
    const port = lb.target;
    lb.connections.set(port, (lb.connections.get(port) ?? 0) + 1);
    const upstream = net.connect(port, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.once('error', end);
    upstream.once('error', end);
    client.once('close', end);
    upstream.once('close', end);
  });
  await new Promise((resolve) => lb.server.listen(0, '127.0.0.1', resolve));
  lb.port = lb.server.address().port;
  lb.url = `https://127.0.0.1:${lb.port}`;
  return lb;
}

before(async () => {
  redis = await startRedis();
  for (let i = 0; i < 3; i += 1) {
    nodes.push(await startServer({ extraArgs: ['--redis', redis.url, '--drain-timeout-secs', '2'] }));
  }
  balancer = await startBalancer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const node of nodes) await node.stop();
  balancer?.server.close();
  redis?.stop();
});

const portOf = (node) => Number(new URL(node.url).port);

/**
 * A call in `room` between a page whose signaling goes (through the balancer) to
 * node `first` and one whose signaling goes to node `second`: `first` holds the
 * room, the other page's signaling crosses nodes. Resolves once both are connected.
 */
async function callAcross(room, first, second) {
  balancer.target = portOf(first);
  const a = await openRoom(browser, balancer, room);
  await join(a);
  await waitPhase(a, 'waiting');
  balancer.target = portOf(second);
  const b = await openRoom(browser, balancer, room);
  await join(b);
  await Promise.all([waitPhase(a, 'connected', 15_000), waitPhase(b, 'connected', 15_000)]);
  return [a, b];
}

/** The messages of a type the page received on its WebSockets. */
const received = (page, type) => page.frames.filter((f) => f.dir === 'received' && f.msg?.type === type).map((f) => f.msg);

test('a call across two nodes goes on through a rolling restart of one of them', async () => {
  // a on the first node, b on the second.
  const [a, b] = await callAcross(`cluster-${Date.now()}`, nodes[0], nodes[1]);
  await Promise.all([framesKeepComing(a, 10), framesKeepComing(b, 10)]);
  await audioArrives(b);
  assert.ok(balancer.connections.get(portOf(nodes[0])) >= 1 && balancer.connections.get(portOf(nodes[1])) >= 1);
  const idA = received(a, 'joined')[0].id;

  // Rolling restart of the first node: SIGTERM drains it (its members are told to reconnect).
  const restarted = Date.now();
  const exit = await nodes[0].stop();
  assert.equal(exit.signal ?? null, null, `the drained node exited by itself (code ${exit.code})`);
  // a comes back through the balancer (now to the second node) with its resume token.
  await until(() => received(a, 'joined').length >= 2, 15_000, 'a to take its seat back on the other node');
  const resumed = received(a, 'joined').at(-1);
  assert.equal(resumed.id, idA, 'a got its own seat back');
  assert.ok(resumed.peers.includes(received(b, 'joined')[0].id));
  const took = a.frames.filter((f) => f.dir === 'received' && f.msg?.type === 'joined').at(-1).at - restarted;
  // The media never depended on signaling: it flows on, and nobody was told `bye`.
  await Promise.all([framesKeepComing(a, 15), framesKeepComing(b, 15)]);
  assert.equal(received(b, 'bye').length, 0, 'b was told bye');
  assert.equal(received(a, 'bye').length, 0, 'a was told bye');
  assert.equal(await a.evaluate(() => window.__duet.phase), 'connected');
  assert.equal(await b.evaluate(() => window.__duet.phase), 'connected');
  // And signaling works across the restart: an ICE restart from a renegotiates through the second node.
  const offersBefore = received(b, 'message').length;
  await a.evaluate(() => window.__duet.restartIce());
  await until(() => received(b, 'message').length > offersBefore, 10_000, 'a message from a to reach b after the restart');
  await Promise.all([framesKeepComing(a, 10), framesKeepComing(b, 10)]);
  console.log(`a resumed its seat on the other node ${took} ms after the SIGTERM`);
  await closeAll(a, b);
});

test('while Redis is frozen a call across nodes goes on, a join is refused as unavailable, and the page gets in by itself once Redis is back', async () => {
  // A call between the two nodes still running.
  const [a, b] = await callAcross(`frozen-call-${Date.now()}`, nodes[1], nodes[2]);

  redis.signal('SIGSTOP');
  let page;
  try {
    // Signaling between the nodes is cut; the media is not.
    await Promise.all([framesKeepComing(a, 20), framesKeepComing(b, 20)]);
    balancer.target = portOf(nodes[2]);
    page = await openRoom(browser, balancer, `frozen-${Date.now()}`);
    await join(page);
    await until(
      () => received(page, 'error').some((m) => m.code === 'unavailable'),
      10_000,
      'the join to be refused as unavailable',
    );
    assert.notEqual(await page.evaluate(() => window.__duet.phase), 'waiting');
    await Promise.all([framesKeepComing(a, 20), framesKeepComing(b, 20)]);
  } finally {
    redis.signal('SIGCONT');
  }
  await waitPhase(page, 'waiting', 20_000);
  assert.equal(await a.evaluate(() => window.__duet.phase), 'connected');
  assert.equal(received(a, 'bye').length + received(b, 'bye').length, 0, 'a member was told bye');
  await closeAll(page, a, b);
});
