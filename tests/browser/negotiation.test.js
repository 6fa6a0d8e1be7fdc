// web/js/call.js (PeerCall) on its own: two connections in one page, linked by a
// relay the test controls, so the hard orders happen every time: offers that cross
// (glare), candidates that arrive before the description they belong to, and an ICE
// restart whose candidates overtake its offer.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startServer } from './server.js';
import { launchBrowser, newContext, newPage } from './browser.js';
import { assertNoProblems } from './call-helpers.js';

let server;
let browser;
let page;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  page = await newPage(await newContext(browser));
  await page.goto(`${server.url}/`);
  // A lab in the page: window.lab.make(), lab.hold/release, lab.until(), lab.frames().
  await page.evaluate(async () => {
    const { PeerCall } = await import('/js/call.js');
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    let current = null;
    const until = async (fn, ms = 8000) => {
      const end = performance.now() + ms;
      while (performance.now() < end) {
        if (fn()) return;
        await new Promise((r) => setTimeout(r, 20));
      }
      const states = current
        ? ['a', 'b'].map((k) => {
            const pc = current.calls[k].pc;
            return `${k}: ${pc.signalingState}/${pc.iceConnectionState}/${pc.connectionState} ${JSON.stringify(current.calls[k].counters)}`;
          })
        : [];
      throw new Error(`timed out: ${fn} ${states.join('; ')}`);
    };
    /** Two calls; messages to each go through a queue that can be held. */
    const make = ({ aPolite, aInitiator = true, bInitiator = true }) => {
      const lab = { held: { a: false, b: false }, queue: { a: [], b: [] }, calls: {} };
      const deliver = (to, msg) => {
        if (lab.held[to]) lab.queue[to].push(msg);
        else lab.calls[to].handleSignal(msg);
      };
      lab.calls.a = new PeerCall({ iceServers: [], polite: aPolite, initiator: aInitiator, send: (m) => deliver('b', m) });
      lab.calls.b = new PeerCall({ iceServers: [], polite: !aPolite, initiator: bInitiator, send: (m) => deliver('a', m) });
      lab.attach = (which) => {
        const call = lab.calls[which];
        call.setTrack('audio', media.getAudioTracks()[0].clone());
        call.setTrack('video', media.getVideoTracks()[0].clone());
      };
      /** Delivers what is held for `to`; `order` may put candidates first. */
      lab.release = async (to, { candidatesFirst = false } = {}) => {
        lab.held[to] = false;
        let list = lab.queue[to].splice(0);
        if (candidatesFirst) list = [...list.filter((m) => m.kind === 'ice'), ...list.filter((m) => m.kind !== 'ice')];
        for (const m of list) await lab.calls[to].handleSignal(m);
      };
      lab.connected = () => ['a', 'b'].every((k) => lab.calls[k].pc.connectionState === 'connected');
      lab.stable = () => ['a', 'b'].every((k) => lab.calls[k].pc.signalingState === 'stable');
      lab.frames = async (which) => {
        const report = await lab.calls[which].pc.getStats();
        let frames = 0;
        report.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded ?? 0;
        });
        return frames;
      };
      lab.remoteCandidateTypes = async (which) => {
        const report = await lab.calls[which].pc.getStats();
        return [...report.values()].filter((s) => s.type === 'remote-candidate').map((s) => s.candidateType);
      };
      current = lab;
      lab.close = () => {
        lab.calls.a.close();
        lab.calls.b.close();
      };
      return lab;
    };
    window.lab = { make, until };
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('crossing first offers: the polite side starts over and answers, the impolite side ignores, both connect', async () => {
  const result = await page.evaluate(async () => {
    const { make, until } = window.lab;
    const lab = make({ aPolite: true });
    lab.held.a = true;
    lab.held.b = true;
    lab.attach('a');
    lab.attach('b');
    // Both make an offer; neither has seen the other's yet.
    await until(
      () =>
        lab.calls.a.pc.signalingState === 'have-local-offer' &&
        lab.calls.b.pc.signalingState === 'have-local-offer' &&
        lab.calls.a.pc.iceGatheringState === 'complete' &&
        lab.calls.b.pc.iceGatheringState === 'complete' &&
        lab.queue.a.some((m) => m.kind === 'sdp') &&
        lab.queue.b.some((m) => m.kind === 'sdp'),
    );
    await Promise.all([lab.release('a'), lab.release('b')]);
    await until(() => lab.connected() && lab.stable());
    await until(() => lab.calls.a.channel.readyState === 'open' && lab.calls.b.channel.readyState === 'open');
    await new Promise((r) => setTimeout(r, 1500));
    const out = {
      a: lab.calls.a.counters,
      b: lab.calls.b.counters,
      framesA: await lab.frames('a'),
      framesB: await lab.frames('b'),
    };
    lab.close();
    return out;
  });
  assert.equal(result.a.rollbacks, 1, 'the polite side gave up its offer');
  assert.equal(result.a.freshStarts, 1, 'a first offer is given up by starting over, not by a rollback');
  assert.equal(result.b.offersIgnored, 1, 'the impolite side ignored the crossing offer');
  assert.equal(result.b.rollbacks, 0);
  assert.equal(result.a.offersSent, 1);
  assert.equal(result.b.offersSent, 1);
  assert.equal(result.a.answersSent, 1, 'the polite side answered');
  assert.ok(result.framesA > 0 && result.framesB > 0, `video both ways: ${result.framesA}, ${result.framesB}`);
});

test('first offers that cross at once (still gathering) connect, every time, whoever is polite', async () => {
  const results = await page.evaluate(async () => {
    const { make, until } = window.lab;
    const out = [];
    for (let i = 0; i < 6; i++) {
      const lab = make({ aPolite: i % 2 === 0 });
      lab.attach('a');
      lab.attach('b');
      await until(() => lab.connected() && lab.stable());
      out.push(lab.calls.a.counters.offersSent + lab.calls.b.counters.offersSent);
      lab.close();
    }
    return out;
  });
  // Every round connected (lab.until throws otherwise); in most the two offers crossed.
  assert.equal(results.length, 6);
  assert.ok(results.filter((offers) => offers === 2).length >= 2, `offers per round: ${results}`);
});

test('offers that cross on an established call (ICE restarts) roll back and reconnect', async () => {
  const result = await page.evaluate(async () => {
    const { make, until } = window.lab;
    const lab = make({ aPolite: true, bInitiator: false });
    lab.attach('a');
    lab.attach('b');
    await until(() => lab.connected() && lab.stable());
    const ufrag = (k) => lab.calls[k].pc.currentRemoteDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1];
    const before = [ufrag('a'), ufrag('b')];
    lab.calls.a.restartIce();
    lab.calls.b.restartIce();
    await until(() => lab.stable() && lab.connected() && ufrag('a') !== before[0] && ufrag('b') !== before[1]);
    const framesBefore = await lab.frames('a');
    await new Promise((r) => setTimeout(r, 800));
    const out = { a: lab.calls.a.counters, b: lab.calls.b.counters, grew: (await lab.frames('a')) > framesBefore };
    lab.close();
    return out;
  });
  assert.equal(result.a.rollbacks + result.b.offersIgnored, 2, 'the offers crossed and were sorted out');
  assert.equal(result.a.freshStarts, 0, 'an established call rolls back, it does not start over');
  assert.ok(result.grew, 'video kept flowing');
});

test('candidates that arrive before the offer wait for it and are all used', async () => {
  const result = await page.evaluate(async () => {
    const { make, until } = window.lab;
    const lab = make({ aPolite: true, aInitiator: false });
    lab.held.a = true;
    lab.attach('b'); // b offers
    // Hold everything for a until b has gathered all its candidates.
    await until(() => lab.calls.b.pc.iceGatheringState === 'complete' && lab.queue.a.some((m) => m.kind === 'sdp'));
    const waiting = lab.queue.a.filter((m) => m.kind === 'ice').length;
    lab.attach('a');
    await lab.release('a', { candidatesFirst: true });
    await until(() => lab.connected() && lab.stable());
    const out = {
      waiting,
      a: lab.calls.a.counters,
      types: await lab.remoteCandidateTypes('a'),
    };
    lab.close();
    return out;
  });
  assert.ok(result.waiting > 0, 'b sent candidates');
  assert.equal(result.a.candidatesQueued, result.waiting, 'every early candidate was queued');
  assert.equal(result.a.candidatesFailed, 0, 'and none failed once the offer was in');
  assert.ok(result.types.includes('host'), `a learned b's host candidate from signaling: ${result.types}`);
});

test('an ICE restart whose candidates overtake its offer keeps the call', async () => {
  const result = await page.evaluate(async () => {
    const { make, until } = window.lab;
    const lab = make({ aPolite: false });
    lab.attach('a');
    lab.attach('b');
    await until(() => lab.connected() && lab.stable());
    const before = { ...lab.calls.b.counters };
    const ufragBefore = lab.calls.b.pc.remoteDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1];
    // a restarts; hold what goes to b until a has gathered, then deliver candidates first.
    lab.held.b = true;
    lab.calls.a.restartIce();
    await until(() => lab.calls.a.pc.iceGatheringState === 'complete' && lab.queue.b.some((m) => m.kind === 'sdp'));
    await new Promise((r) => setTimeout(r, 50));
    await lab.release('b', { candidatesFirst: true });
    await until(() => lab.stable() && lab.connected());
    const framesBefore = await lab.frames('b');
    await new Promise((r) => setTimeout(r, 1000));
    const out = {
      queued: lab.calls.b.counters.candidatesQueued - before.candidatesQueued,
      failed: lab.calls.b.counters.candidatesFailed - before.candidatesFailed,
      ufragChanged: lab.calls.b.pc.remoteDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1] !== ufragBefore,
      framesGrew: (await lab.frames('b')) > framesBefore,
      restarts: lab.calls.a.counters.iceRestarts,
    };
    lab.close();
    return out;
  });
  assert.equal(result.restarts, 1);
  assert.ok(result.ufragChanged, 'new ICE credentials');
  assert.ok(result.queued > 0, 'the new generation of candidates waited for its offer');
  assert.equal(result.failed, 0);
  assert.ok(result.framesGrew, 'video kept flowing');
});

test('nothing went wrong in the page', () => {
  assertNoProblems(page);
});
