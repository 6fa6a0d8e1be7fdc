// Keeping a call alive, and ending it promptly: closed tabs, signaling reconnects
// (resume), crossing offers, reloads.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DESKTOP, PHONE, newContext, newPage, screenshot, waitForStatus } from './browser.js';
import {
  assertEndsWithin2s,
  assertNoProblems,
  closeAll,
  connectPair,
  counters,
  framesKeepComing,
  join,
  openRoom,
  recordFrames,
  until,
  useServerAndBrowser,
  waitPhase,
} from './call-helpers.js';

const env = useServerAndBrowser();

describe('staying connected', () => {
  test('closing the tab ends the call on the other side within 2 s', async () => {
    const [a, b] = await connectPair(env.browser, env.server, 'tab-close', {
      first: { viewport: PHONE, colorScheme: 'light' },
      second: { viewport: DESKTOP, colorScheme: 'dark' },
    });
    const closedAt = Date.now();
    await b.close();
    await assertEndsWithin2s(a, closedAt);
    await screenshot(a, 'call-they-left-375x812-light');
    assertNoProblems(a);
    await closeAll(a, b);
  });

  test('restarting the signaling connection mid-call does not stop the media', async () => {
    const [a, b] = await connectPair(env.browser, env.server, 'sig-restart');
    const aId = await a.evaluate(() => window.__duet.id);
    const byes = () => b.frames.filter((f) => f.dir === 'received' && f.msg.type === 'bye').length;

    const received = (type) => a.frames.filter((f) => f.dir === 'received' && f.msg.type === type);
    for (let round = 1; round <= 2; round++) {
      const joinedBefore = received('joined').length;
      await a.evaluate(() => window.__duet.reconnectSignaling());
      // A is back in its seat with the same id, through a resume on a new socket.
      await until(() => received('joined').length > joinedBefore, 5_000, 'A to be seated again');
      const join = a.frames.filter((f) => f.dir === 'sent' && f.msg.type === 'join').at(-1);
      assert.match(join.msg.resume, /^[0-9a-f]{32}$/, 'the new socket joined with the resume token');
      assert.equal(received('joined').at(-1).msg.id, aId, 'same seat, same id');
      assert.equal(await a.evaluate(() => window.__duet.reconnects), round);
      await Promise.all([framesKeepComing(a, 10), framesKeepComing(b, 10)]);
    }
    assert.equal(byes(), 0, 'the other side never saw bye');
    assert.equal(await a.evaluate(() => window.__duet.phase), 'connected');
    assert.equal(await b.evaluate(() => window.__duet.phase), 'connected');

    // Signaling still works end to end after the resume: an ICE restart goes through it.
    const restartsBefore = (await counters(a)).call.iceRestarts;
    await a.evaluate(() => window.__duet.restartIce());
    await a.waitForFunction((n) => window.__duet.counters.call.iceRestarts > n, restartsBefore);
    await Promise.all([waitPhase(a, 'connected'), waitPhase(b, 'connected')]);
    await framesKeepComing(b, 10);
    assertNoProblems(a);
    assertNoProblems(b);
    await closeAll(a, b);
  });

  test('with the signaling server unreachable for a while, the call goes on and the seat comes back', async () => {
    const [a, b] = await connectPair(env.browser, env.server, 'sig-outage', {
      first: { viewport: DESKTOP, colorScheme: 'dark' },
    });
    const aId = await a.evaluate(() => window.__duet.id);
    // From now on A's new sockets reach a fake server that never answers, until `down`
    // is false again (then they go through to the real one).
    let down = true;
    await a.routeWebSocket(/\/ws$/, (ws) => {
      if (!down) ws.connectToServer();
    });
    await a.evaluate(() => window.__duet.reconnectSignaling());
    await a.getByText('Reconnecting to the server').waitFor({ timeout: 3_000 });
    await screenshot(a, 'call-reconnecting-1280x800-dark');
    // Media flows peer to peer meanwhile, both ways, for seconds.
    await Promise.all([framesKeepComing(a, 30), framesKeepComing(b, 30)]);
    assert.equal(await a.evaluate(() => window.__duet.phase), 'connected');
    // The server is back: A takes its seat back and nobody noticed.
    down = false;
    await a.evaluate(() => window.__duet.reconnectSignaling());
    await a.getByText('Reconnecting to the server').waitFor({ state: 'hidden', timeout: 5_000 });
    assert.equal(await a.evaluate(() => window.__duet.id), aId);
    assert.equal(b.frames.filter((f) => f.dir === 'received' && f.msg.type === 'bye').length, 0);
    // And signaling works again end to end: chat is peer to peer, so use an ICE restart.
    const before = (await counters(b)).call.offersIgnored + (await counters(b)).sent.descriptions;
    await a.evaluate(() => window.__duet.restartIce());
    await until(async () => (await counters(b)).sent.descriptions + (await counters(b)).call.offersIgnored > before, 5_000, 'B to answer the restart');
    await framesKeepComing(b, 10);
    assertNoProblems(a);
    assertNoProblems(b);
    await closeAll(a, b);
  });

  test('candidates that overtake the offer wait for it; meanwhile the screen says Connecting', async () => {
    // A's signaling goes through a route that holds back every SDP message until
    // released, while ICE candidates go straight through: A gets B's candidates before
    // B's offer.
    const context = await newContext(env.browser, { viewport: DESKTOP, colorScheme: 'dark' });
    let holding = true;
    const held = [];
    let release = () => {};
    await context.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => {
        if (holding && typeof m === 'string' && m.includes('"kind":"sdp"')) held.push(m);
        else ws.send(m);
      });
      release = () => {
        holding = false;
        for (const m of held.splice(0)) ws.send(m);
      };
    });
    const a = await newPage(context);
    recordFrames(a);
    await a.goto(`${env.server.url}/?room=early-candidates`);
    await join(a);
    await waitPhase(a, 'waiting');
    const b = await openRoom(env.browser, env.server, 'early-candidates', { viewport: PHONE, colorScheme: 'light' });
    await join(b);
    await until(async () => (await counters(a)).call.candidatesReceived > 0, 5_000, 'B candidates to reach A');
    await waitForStatus(a, 'Connecting');
    await waitForStatus(b, 'Connecting');
    await screenshot(a, 'call-connecting-1280x800-dark');
    await screenshot(b, 'call-connecting-375x812-light');
    assert.equal(held.length, 1, 'the offer is held');

    release();
    await Promise.all([waitPhase(a, 'connected'), waitPhase(b, 'connected')]);
    await Promise.all([framesKeepComing(a, 10), framesKeepComing(b, 10)]);
    const c = (await counters(a)).call;
    assert.ok(c.candidatesQueued > 0, `A queued the early candidates: ${JSON.stringify(c)}`);
    assert.equal(c.candidatesFailed, 0, 'and used them all once the offer was in');
    assertNoProblems(a);
    assertNoProblems(b);
    await closeAll(a, b);
  });

  test('both sides restarting ICE at once (crossing offers) does not wedge the call', async () => {
    const [a, b] = await connectPair(env.browser, env.server, 'glare');
    for (let i = 0; i < 3; i++) {
      await Promise.all([a.evaluate(() => window.__duet.restartIce()), b.evaluate(() => window.__duet.restartIce())]);
      await a.waitForTimeout(400);
    }
    for (const page of [a, b]) {
      await page.waitForFunction(() => window.__duet.pc().signalingState === 'stable', null, { timeout: 5_000 });
      await waitPhase(page, 'connected');
    }
    await Promise.all([framesKeepComing(a, 10), framesKeepComing(b, 10)]);
    // The offers really crossed (the impolite side ignored one, the polite side rolled back).
    const [ca, cb] = [(await counters(a)).call, (await counters(b)).call];
    const crossings = ca.offersIgnored + cb.offersIgnored;
    assert.ok(crossings >= 1, `no crossing happened: ${JSON.stringify({ ca, cb })}`);
    assert.equal(ca.rollbacks + cb.rollbacks, crossings, 'each crossing was resolved by one rollback');
    assertNoProblems(a);
    assertNoProblems(b);
    await closeAll(a, b);
  });

  test('a reload rejoins the room, and the other side can rejoin the call', async () => {
    const [a, b] = await connectPair(env.browser, env.server, 'reload');
    await b.reload();
    // The browser closes the old socket (1001) on unload, so the server ends B's seat
    // at once and A sees the call end (as for a closed tab).
    await waitForStatus(a, 'They left the call', 5_000);
    // B comes back into the room by itself, with no click.
    await waitPhase(b, 'waiting');
    const joins = b.frames.filter((f) => f.dir === 'sent' && f.msg.type === 'join');
    assert.ok(joins.length >= 1 && typeof joins.at(-1).msg.resume === 'string', 'the reloaded page joined with its resume token');
    await a.getByRole('button', { name: 'Rejoin' }).click();
    await Promise.all([waitPhase(a, 'connected'), waitPhase(b, 'connected')]);
    await Promise.all([framesKeepComing(a, 10), framesKeepComing(b, 10)]);
    assertNoProblems(a);
    await closeAll(a, b);
  });
});
