// Ring mode (?ring=1): decline, cancel and accept, and nothing (no SDP, no ICE
// candidate) leaves either browser before the callee accepts.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DESKTOP, PHONE, screenshot, waitForStatus } from './browser.js';
import {
  assertNoProblems,
  closeAll,
  counters,
  framesKeepComing,
  join,
  localTracks,
  openRoom,
  useServerAndBrowser,
  waitPhase,
} from './call-helpers.js';

const env = useServerAndBrowser();

describe('ring mode', () => {
  /** Frames carrying SDP or ICE candidates that a page sent. */
  const mediaSignals = (page) =>
    page.frames.filter((f) => f.dir === 'sent' && f.msg.type === 'message' && ['sdp', 'ice'].includes(f.msg.data?.kind));
  const sentKind = (page, kind) => page.frames.find((f) => f.dir === 'sent' && f.msg.data?.kind === kind);

  /** Callee joins first and waits; the caller joins and rings. */
  async function ring(room, { callee = {}, caller = {} } = {}) {
    const a = await openRoom(env.browser, env.server, room, { query: '&ring=1', viewport: DESKTOP, ...callee });
    await join(a);
    await waitForStatus(a, 'Waiting for a call');
    const b = await openRoom(env.browser, env.server, room, { query: '&ring=1', viewport: PHONE, ...caller });
    await join(b);
    await waitForStatus(b, 'Calling');
    await waitForStatus(a, 'Incoming call');
    return [a, b];
  }

  test('decline: the caller hears "declined", the callee keeps waiting', async () => {
    const [a, b] = await ring('ring-decline', { callee: { colorScheme: 'dark' } });
    await screenshot(a, 'ring-incoming-1280x800-dark');
    await screenshot(b, 'ring-calling-375x812-light');
    await a.waitForTimeout(300);
    assert.deepEqual([mediaSignals(a).length, mediaSignals(b).length], [0, 0], 'no SDP or candidate while ringing');
    assert.equal(await a.evaluate(() => window.__duet.pc()), null, 'no RTCPeerConnection before the answer');
    assert.equal(await b.evaluate(() => window.__duet.pc()), null, 'no RTCPeerConnection before the answer');

    await a.getByRole('button', { name: 'Decline' }).click();
    await waitForStatus(b, 'Call declined');
    await waitForStatus(a, 'Waiting for a call');
    assert.ok((await localTracks(b)).every((t) => t.readyState === 'ended'), 'the caller released its media');
    await screenshot(b, 'ring-declined-375x812-light');
    assert.deepEqual([mediaSignals(a).length, mediaSignals(b).length], [0, 0]);
    assertNoProblems(a);
    assertNoProblems(b);
    await closeAll(a, b);
  });

  test('cancel: the caller stops ringing, the callee sees a missed call', async () => {
    const [a, b] = await ring('ring-cancel');
    await b.getByRole('button', { name: 'Cancel' }).click();
    await waitForStatus(b, 'Call cancelled');
    await waitForStatus(a, 'Waiting for a call');
    await a.getByText('Missed call').waitFor({ timeout: 2_000 });
    assert.deepEqual([mediaSignals(a).length, mediaSignals(b).length], [0, 0]);
    assertNoProblems(a);
    assertNoProblems(b);
    await closeAll(a, b);
  });

  test('accept: the call starts, and no candidate or SDP left either browser before the accept', async () => {
    const [a, b] = await ring('ring-accept', { caller: { colorScheme: 'dark' } });
    await a.waitForTimeout(300);
    await a.getByRole('button', { name: 'Accept' }).click();
    await Promise.all([waitPhase(a, 'connected'), waitPhase(b, 'connected')]);
    await Promise.all([framesKeepComing(a, 10), framesKeepComing(b, 10)]);
    await screenshot(b, 'ring-accepted-375x812-dark');

    const accept = sentKind(a, 'ring-accept');
    assert.ok(accept, 'the callee sent ring-accept');
    const acceptSeenByB = b.frames.find((f) => f.dir === 'received' && f.msg.data?.kind === 'ring-accept');
    for (const [page, since] of [
      [a, accept.at],
      [b, acceptSeenByB.at],
    ]) {
      const signals = mediaSignals(page);
      assert.ok(signals.length > 0, 'SDP and candidates went out after the accept');
      assert.ok(signals.every((f) => f.at >= since), 'nothing went out before the accept');
      const candidates = signals.filter((f) => f.msg.data.kind === 'ice').length;
      assert.equal((await counters(page)).sent.candidates, candidates);
    }
    // The ring messages came first in each browser's stream of frames.
    const aSent = a.frames.filter((f) => f.dir === 'sent' && f.msg.type === 'message');
    assert.equal(aSent.findIndex((f) => f.msg.data.kind === 'ring-accept') < aSent.findIndex((f) => f.msg.data.kind === 'sdp'), true);
    assertNoProblems(a);
    assertNoProblems(b);
    await closeAll(a, b);
  });
});

