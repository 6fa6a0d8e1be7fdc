// The socket.io dialect (`/socket.io/`) driven by the real socket.io-client 2.x
// (the version of the classic course app, from the npm registry) in Node, over
// WebSocket and over long-polling: every event of the course's protocol, the
// refusals, and the origin check. The calls of the course's own page through
// Duet are in legacy-page.test.js.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createRequire } from 'node:module';
import { scrapeMetrics, startServer } from './server.js';
import { until } from './call-helpers.js';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
const io = require('socket.io-client-2');

let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

/** A socket.io 2 client that keeps every event it receives, in order. */
async function client(transports, options = {}) {
  const socket = io(server.url, {
    transports,
    forceNew: true,
    reconnection: false,
    rejectUnauthorized: false,
    ...options,
  });
  socket.events = [];
  const keep = socket.onevent;
  socket.onevent = function (packet) {
    socket.events.push(packet.data);
    keep.call(this, packet);
  };
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
    socket.once('error', reject);
  });
  return socket;
}

/** Waits for the `n`th (1-based) event named `name` and returns its arguments. */
async function nextEvent(socket, name, n = 1) {
  await until(() => socket.events.filter(([event]) => event === name).length >= n, 5_000, `${name} #${n}`);
  return socket.events.filter(([event]) => event === name)[n - 1].slice(1);
}

function names(socket) {
  return socket.events.map(([event]) => event);
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

for (const transport of ['websocket', 'polling']) {
  describe(`socket.io 2 over ${transport}`, () => {
    test('join, otherjoin, full, message, leave, bye: the course protocol', async () => {
      const room = `sio-${transport}`;
      const a = await client([transport]);
      const b = await client([transport]);
      const c = await client([transport]);

      a.emit('join', room);
      const [joinedRoom, aId, extras] = await nextEvent(a, 'joined');
      assert.equal(joinedRoom, room);
      assert.equal(aId, a.id, 'a member is known by its socket id');
      assert.ok(Array.isArray(extras.iceServers), 'joined carries the session iceServers as a third argument');

      b.emit('join', room);
      assert.deepEqual(await nextEvent(b, 'joined').then((args) => args.slice(0, 2)), [room, b.id]);
      assert.deepEqual(await nextEvent(a, 'otherjoin'), [room, b.id], 'the member already there is told');
      await settle();
      assert.ok(!names(b).includes('otherjoin'), 'the newcomer is not (the member there makes the offer)');

      c.emit('join', room);
      assert.deepEqual(await nextEvent(c, 'full'), [room, c.id]);

      // Objects stay objects, nested values and all; only the other member gets them.
      const offer = { type: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n', extra: { n: [1, 2.5, null], s: 'é' } };
      a.emit('message', room, offer);
      assert.deepEqual(await nextEvent(b, 'message'), [room, offer]);
      b.emit('message', room, 'a plain string');
      assert.deepEqual(await nextEvent(a, 'message'), [room, 'a plain string']);
      await settle();
      assert.ok(!names(c).includes('message'), 'the refused third sees nothing');
      assert.equal(names(a).filter((n) => n === 'message').length, 1, 'no echo to the sender');

      // Only members speak to a room, and only to their own.
      c.emit('message', room, { type: 'offer', sdp: 'spoofed' });
      assert.equal((await nextEvent(c, 'duet-error'))[0], 'bad_message');
      a.emit('message', 'another-room', { x: 1 });
      assert.match((await nextEvent(a, 'duet-error'))[1], /not in that one/);
      a.emit('dance', room);
      assert.match((await nextEvent(a, 'duet-error', 2))[1], /unknown event `dance`/);
      b.emit('join', 'bad room name!');
      assert.equal((await nextEvent(b, 'duet-error'))[0], 'bad_message');
      await settle();
      assert.equal(names(b).filter((n) => n === 'message').length, 1, 'refused messages reach nobody');

      b.emit('leave', room);
      assert.deepEqual(await nextEvent(b, 'leaved'), [room, b.id]);
      assert.deepEqual(await nextEvent(a, 'bye'), [room, b.id]);

      // The seat is free again; a dropped socket is a `bye` at once (these
      // clients have no resume token, so there is nothing to wait for).
      c.emit('join', room);
      assert.deepEqual((await nextEvent(c, 'joined')).slice(0, 2), [room, c.id]);
      assert.deepEqual(await nextEvent(a, 'otherjoin', 2), [room, c.id]);
      const dropped = Date.now();
      const cId = c.id;
      c.close();
      assert.deepEqual(await nextEvent(a, 'bye', 2), [room, cId]);
      assert.ok(Date.now() - dropped < 2_000, 'bye within 2 s of the socket closing');

      a.close();
      b.close();
    });
  });
}

test('a page of a foreign origin is refused, over both transports', async () => {
  for (const transport of ['websocket', 'polling']) {
    await assert.rejects(
      client([transport], { extraHeaders: { Origin: 'https://evil.example' } }),
      `a foreign origin over ${transport}`,
    );
  }
  const own = await client(['polling'], { extraHeaders: { Origin: server.url } });
  own.close();
});

test('a socket that never joins is let go after the join deadline', async () => {
  const idle = await client(['websocket']);
  await until(() => idle.disconnected, 15_000, 'the server to close an idle socket');
  assert.deepEqual(idle.events.at(-1), ['duet-error', 4004, 'no join within the join deadline']);
});

test('the server counts socket.io members in its metrics like any other', async () => {
  const metrics = () => scrapeMetrics(server);
  const before = await metrics();
  assert.match(before, /^duet_signaling_connections 0$/m);
  const a = await client(['websocket']);
  const b = await client(['polling']);
  a.emit('join', 'sio-metrics');
  b.emit('join', 'sio-metrics');
  await nextEvent(a, 'otherjoin');
  a.emit('message', 'sio-metrics', { n: 1 });
  await nextEvent(b, 'message');
  const text = await metrics();
  assert.match(text, /^duet_signaling_connections 2$/m, 'both sockets are signaling connections');
  assert.match(text, /^duet_messages_relayed_total [1-9]/m);
  a.close();
  b.close();
});

/** A client of /ws (Duet's protocol or the `cmd` dialect) that keeps what it receives. */
async function wsClient() {
  const socket = new WebSocket(`${server.url.replace('https://', 'wss://')}/ws`, { rejectUnauthorized: false });
  socket.received = [];
  socket.on('message', (data) => socket.received.push(JSON.parse(String(data))));
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  socket.sendJson = (value) => socket.send(JSON.stringify(value));
  socket.next = async (test, what) => {
    await until(() => socket.received.some(test), 5_000, what);
    return socket.received.find(test);
  };
  return socket;
}

test('socket.io, cmd and Duet clients meet in one room, each in its own dialect', async () => {
  const offer = { type: 'offer', sdp: 'v=0\r\ns=-\r\n' };
  const candidate = { candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host', sdpMid: '0', sdpMLineIndex: 0 };

  // A course page there first, a `cmd` client second: the page is not told
  // `otherjoin` (the cmd newcomer offers), and descriptions cross in each form.
  const page = await client(['websocket']);
  page.emit('join', 'mixed-cmd');
  await nextEvent(page, 'joined');
  const cmd = await wsClient();
  cmd.sendJson({ cmd: 'join', roomId: 'mixed-cmd', uid: 'android-1' });
  const resp = await cmd.next((m) => m.cmd === 'resp-join', 'resp-join');
  assert.equal(resp.remoteUid, page.id, 'the page is known to cmd clients by its socket id');
  cmd.sendJson({ cmd: 'offer', roomId: 'mixed-cmd', uid: 'android-1', remoteUid: page.id, msg: JSON.stringify(offer) });
  assert.deepEqual(await nextEvent(page, 'message'), ['mixed-cmd', offer]);
  page.emit('message', 'mixed-cmd', { type: 'candidate', candidate });
  const relayed = await cmd.next((m) => m.cmd === 'candidate', 'a candidate');
  assert.equal(relayed.uid, page.id);
  assert.deepEqual(JSON.parse(relayed.msg), candidate);
  await settle();
  assert.ok(!names(page).includes('otherjoin'), 'the cmd newcomer offers, not the page');
  const pageId = page.id;
  page.close();
  assert.equal((await cmd.next((m) => m.cmd === 'peer-leave', 'peer-leave')).remoteUid, pageId);
  cmd.close();

  // Duet's client there first, a course page second: the page is told
  // `otherjoin` right after `joined`, so it makes the offer Duet's client waits for.
  const duet = await wsClient();
  duet.sendJson({ type: 'join', room: 'mixed-duet' });
  const duetJoined = await duet.next((m) => m.type === 'joined', 'joined');
  const late = await client(['polling']);
  late.emit('join', 'mixed-duet');
  assert.deepEqual(await nextEvent(late, 'otherjoin'), ['mixed-duet', duetJoined.id]);
  assert.deepEqual(names(late).slice(0, 2), ['joined', 'otherjoin']);
  late.emit('message', 'mixed-duet', offer);
  const toDuet = await duet.next((m) => m.type === 'message', 'the offer');
  assert.deepEqual(toDuet.data, { kind: 'sdp', description: offer });
  duet.sendJson({ type: 'message', data: { kind: 'ice', candidate } });
  assert.deepEqual(await nextEvent(late, 'message'), ['mixed-duet', { type: 'candidate', candidate }]);
  duet.sendJson({ type: 'message', data: { kind: 'chat', text: 'hi' } });
  assert.deepEqual(await nextEvent(late, 'message', 2), ['mixed-duet', { kind: 'chat', text: 'hi' }], 'other data passes as it is');
  duet.sendJson({ type: 'leave' });
  assert.deepEqual(await nextEvent(late, 'bye'), ['mixed-duet', duetJoined.id]);
  duet.close();
  late.close();
});
