// Call reports (web/js/report.js → the server's duet_call_* metrics): a scrape of
// /metrics before and after real calls between two Chromium pages. A call that
// connects moves the set-up, path and summary series; one that cannot connect is
// counted as failed with the ICE state it was given up in; malformed and oversized
// reports are refused (bad_report) and count nothing.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { scrapeMetrics, sample } from './server.js';
import { closeAll, connectPair, join, openRoom, useServerAndBrowser, waitPhase, until } from './call-helpers.js';
import { newContext, newPage } from './browser.js';

const env = useServerAndBrowser();

/** The difference of each named sample between two scrapes. */
function moved(before, after, names) {
  return Object.fromEntries(names.map((name) => [name, sample(after, name) - sample(before, name)]));
}

test('a connected call moves the set-up, path and quality series, once per member', async () => {
  const { server, browser } = env;
  const before = await scrapeMetrics(server);
  const [a, b] = await connectPair(browser, server, 'analytics-ok');
  // A few seconds of samples, then A hangs up: both send their summary.
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  await a.getByRole('button', { name: 'Hang up' }).click();
  await waitPhase(b, 'ended');
  let after = '';
  await until(async () => {
    after = await scrapeMetrics(server);
    return sample(after, 'duet_call_summaries_total') - sample(before, 'duet_call_summaries_total') >= 2;
  }, 5_000, 'both summaries');
  assert.deepEqual(
    moved(before, after, [
      'duet_call_setups_total{outcome="connected"}',
      'duet_call_setups_total{outcome="failed"}',
      'duet_call_setup_seconds_count',
      'duet_call_paths_total{path="direct",transport="udp"}',
      'duet_call_summaries_total',
      'duet_call_duration_seconds_count',
      'duet_call_rtt_seconds_count',
      'duet_call_receive_bitrate_bps_count',
      'duet_call_video_height_pixels_count',
    ]),
    {
      'duet_call_setups_total{outcome="connected"}': 2,
      'duet_call_setups_total{outcome="failed"}': 0,
      'duet_call_setup_seconds_count': 2,
      'duet_call_paths_total{path="direct",transport="udp"}': 2,
      'duet_call_summaries_total': 2,
      'duet_call_duration_seconds_count': 2,
      'duet_call_rtt_seconds_count': 2,
      'duet_call_receive_bitrate_bps_count': 2,
      'duet_call_video_height_pixels_count': 2,
    },
  );
  // Set-up on loopback takes well under 5 s, and the calls lasted about 3 s.
  const setupSum = sample(after, 'duet_call_setup_seconds_sum') - sample(before, 'duet_call_setup_seconds_sum');
  assert.ok(setupSum > 0 && setupSum < 10, `set-up seconds of the two members: ${setupSum}`);
  const duration = sample(after, 'duet_call_duration_seconds_sum') - sample(before, 'duet_call_duration_seconds_sum');
  assert.ok(duration > 4 && duration < 30, `duration of the two members' calls: ${duration} s`);
  await closeAll(a, b);
});

test('a call that cannot connect is counted as failed, with its ICE state', async () => {
  const { server, browser } = env;
  // No candidate can exist: relay only, and no relay. Failure is reported after 1.5 s.
  const init = () => {
    window.duetReportFailAfterMs = 1_500;
    const Original = window.RTCPeerConnection;
    window.RTCPeerConnection = function (config) {
      return new Original({ ...config, iceServers: [], iceTransportPolicy: 'relay' });
    };
    window.RTCPeerConnection.prototype = Original.prototype;
    Object.setPrototypeOf(window.RTCPeerConnection, Original);
  };
  const before = await scrapeMetrics(server);
  const a = await openRoom(browser, server, 'analytics-fail', { init });
  await join(a);
  await waitPhase(a, 'waiting');
  const b = await openRoom(browser, server, 'analytics-fail', { init });
  await join(b);
  let after = '';
  await until(async () => {
    after = await scrapeMetrics(server);
    return sample(after, 'duet_call_setups_total{outcome="failed"}') - sample(before, 'duet_call_setups_total{outcome="failed"}') >= 2;
  }, 10_000, 'two failed set-ups');
  const failures = after
    .split('\n')
    .filter((line) => line.startsWith('duet_call_failures_total{'))
    .reduce((sum, line) => sum + Number(line.split(' ')[1]), 0);
  const failuresBefore = before
    .split('\n')
    .filter((line) => line.startsWith('duet_call_failures_total{'))
    .reduce((sum, line) => sum + Number(line.split(' ')[1]), 0);
  assert.equal(failures - failuresBefore, 2, 'each failure has its ICE state');
  assert.match(after, /duet_call_failures_total\{ice_state="(new|checking|failed|disconnected)"\}/);
  // Hanging up a failed call reports nothing more (no cancel, no summary).
  await a.getByRole('button', { name: 'Hang up' }).click();
  await waitPhase(a, 'ended');
  await new Promise((resolve) => setTimeout(resolve, 500));
  const end = await scrapeMetrics(server);
  assert.equal(sample(end, 'duet_call_setups_total{outcome="cancelled"}'), sample(before, 'duet_call_setups_total{outcome="cancelled"}'));
  assert.equal(sample(end, 'duet_call_summaries_total'), sample(before, 'duet_call_summaries_total'), 'no summary of a call that never connected');
  await closeAll(a, b);
});

test('malformed and oversized reports are refused and count nothing', async () => {
  const { server, browser } = env;
  const page = await newPage(await newContext(browser));
  await page.goto(`${server.url}/`);
  const before = await scrapeMetrics(server);
  const codes = await page.evaluate(async () => {
    const { SignalingClient } = await import('/js/signaling.js');
    const client = new SignalingClient();
    const errors = [];
    client.addEventListener('error', (e) => errors.push(e.detail.code));
    await client.connect();
    const path = { local: 'host', remote: 'host', protocol: 'udp' };
    client.send({ type: 'report', setup: { outcome: 'connected', ms: 100, path } }); // not in a room yet
    client.join('analytics-bad');
    await new Promise((resolve) => client.addEventListener('joined', resolve, { once: true }));
    client.send({ type: 'report', setup: { outcome: 'connected', ms: -5, path } });
    client.send({ type: 'report', summary: { durationSecs: 10, lossPercent: { p50: 50, p95: 120 } } });
    client.send({ type: 'report', summary: { durationSecs: 10, clientIp: '192.0.2.1' } });
    client.send({ type: 'report', summary: { durationSecs: 10 }, pad: 'x'.repeat(5000) });
    client.send({ type: 'report', setup: 'connected' });
    await new Promise((resolve) => setTimeout(resolve, 500));
    client.close();
    return errors;
  });
  assert.deepEqual(codes, ['not_in_room', 'bad_report', 'bad_report', 'bad_report', 'bad_report', 'bad_report']);
  const after = await scrapeMetrics(server);
  assert.equal(sample(after, 'duet_signaling_errors_total{code="bad_report"}') - sample(before, 'duet_signaling_errors_total{code="bad_report"}'), 5);
  for (const name of ['duet_call_summaries_total', 'duet_call_setups_total{outcome="connected"}']) {
    assert.equal(sample(after, name), sample(before, name), `${name} unchanged`);
  }
  await page.context().close();
});
