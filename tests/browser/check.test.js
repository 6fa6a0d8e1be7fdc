// The connection check (/check) in real Chromium against the real server: on a
// network that lets everything through, and with UDP blocked (an iptables rule in
// this test's own network namespace), where the verdict must send calls over TCP.
// Screenshots: desktop (light) and 375 px (dark), each verdict.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { newContext, newPage, screenshot, PHONE } from './browser.js';
import { useServerAndBrowser } from './call-helpers.js';

const env = useServerAndBrowser();

/** Opens /check and waits for its result. */
async function runCheck({ viewport, colorScheme } = {}) {
  const page = await newPage(await newContext(env.browser, { viewport, colorScheme }));
  await page.goto(`${env.server.url}/check`);
  const result = await page.evaluate(() => window.__duetCheck.done);
  return { page, result };
}

function row(result, label) {
  const found = result.rows.find((r) => r.label.startsWith(label));
  assert.ok(found, `no row "${label}" in ${JSON.stringify(result.rows.map((r) => r.label))}`);
  return found;
}

function rows(result, label) {
  return result.rows.filter((r) => r.label.startsWith(label));
}

test('on an open network: devices work, every way out answers, a call through the relay gets through', async () => {
  const { page, result } = await runCheck();
  assert.equal(result.verdict.tone, 'good', JSON.stringify(result, null, 1));
  assert.equal(result.verdict.title, 'Ready for calls');
  assert.match(result.verdict.text, /lets UDP through/);
  assert.equal(row(result, 'Camera').state, 'ok');
  assert.match(row(result, 'Camera').detail, /\d+×\d+/);
  assert.equal(row(result, 'Microphone').state, 'ok', row(result, 'Microphone').detail);
  assert.equal(row(result, 'Signaling').state, 'ok');
  assert.equal(row(result, 'STUN over UDP').state, 'ok');
  assert.ok(rows(result, 'Relay over UDP').every((r) => r.state === 'ok'));
  const tcp = rows(result, 'Relay over TCP');
  assert.ok(tcp.length >= 1 && tcp.every((r) => r.state === 'ok'), JSON.stringify(tcp));
  const call = row(result, 'Call to yourself');
  assert.equal(call.state, 'ok', call.detail);
  assert.match(call.detail, /round trip \d+ ms · \d+(\.\d)? Mbit\/s/);
  assert.match(result.report, /^Duet connection check/);
  assert.match(result.report, /✓ Relay over UDP/);
  await screenshot(page, 'check-open-desktop');
  // The report can be copied.
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write']);
  await page.getByRole('button', { name: 'Copy' }).click();
  await page.getByRole('status').filter({ hasText: 'Report copied.' }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), result.report);
  assert.deepEqual(page.problems, []);
  await page.context().close();

  // The lobby links to it.
  const lobby = await newPage(await newContext(env.browser));
  await lobby.goto(`${env.server.url}/?room=check-link`);
  const link = lobby.getByRole('link', { name: 'Test your camera and connection' });
  assert.equal(await link.getAttribute('href'), '/check');
  await lobby.context().close();
});

/** Whether iptables works here (root in this test's own network namespace). */
function iptables(...args) {
  execFileSync('iptables', args, { stdio: 'pipe' });
}

let canFilter = true;
try {
  iptables('-S');
} catch {
  canFilter = false;
}

test('with UDP blocked: the verdict says so and sends calls over TCP', { skip: canFilter ? false : 'iptables is not usable here (run as root, as scripts/test does)' }, async () => {
  // Only in this namespace (scripts/test runs the browser tests in one of their own).
  iptables('-I', 'OUTPUT', '-p', 'udp', '-j', 'DROP');
  try {
    const { page, result } = await runCheck({ viewport: PHONE, colorScheme: 'dark' });
    assert.equal(result.verdict.tone, 'warn', JSON.stringify(result, null, 1));
    assert.match(result.verdict.text, /blocks UDP; calls will use the relay over TCP port \d+/);
    assert.equal(row(result, 'STUN over UDP').state, 'fail');
    assert.ok(rows(result, 'Relay over UDP').every((r) => r.state === 'fail'));
    assert.ok(rows(result, 'Relay over TCP').some((r) => r.state === 'ok'));
    const call = row(result, 'Call to yourself');
    assert.equal(call.state, 'ok', call.detail);
    assert.match(call.detail, /through the relay \(TCP\)/);
    assert.match(result.report, /✗ Relay over UDP/);
    await screenshot(page, 'check-udp-blocked-phone-dark');
    await page.context().close();
  } finally {
    iptables('-D', 'OUTPUT', '-p', 'udp', '-j', 'DROP');
  }
});
