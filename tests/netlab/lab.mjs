// The NAT lab: Duet's default server on a "public internet", two callers behind
// NATs and firewalls of different kinds, each in a network namespace of its
// own, calling each other with Duet's own web client in headless Chromium.
//
//   c1 (10.1.0.2) ── nat1 ──┐                         ┌── srv 203.0.113.10
//                           ├── inet (router) ────────┤   duet serve --listen 203.0.113.10:443
//   c2 (10.2.0.2) ── nat2 ──┘  drops private addresses │            --domain call.duet.test
//
// nat1's public side is 198.51.100.2, nat2's 192.0.2.2 (documentation ranges,
// routed here like public ones). Each NAT type is a few iptables rules in the
// NAT's namespace, made anew (with a fresh namespace, so no conntrack state is
// left) for every pair. Chromium resolves call.duet.test to the server through
// --host-resolver-rules, which also answers the STUN/TURN host names of
// `iceServers` (a hosts file does not: Chromium looks those up with a trailing
// dot). Run by tests/netlab/run as root; see docs/netlab.md.
//
// NETLAB_ONLY=i runs only pair i of PAIRS; NETLAB_DEBUG=1 echoes the pages'
// console, errors and failed requests.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { CHROMIUM_ARGS } from '../browser/browser.js';

// playwright-core is installed with the browser tests' packages (tests/browser).
const { chromium } = createRequire(new URL('../browser/package.json', import.meta.url))('playwright-core');

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const PREFIX = `dnl${process.pid % 10000}`;
const NS = {
  inet: `${PREFIX}-inet`,
  srv: `${PREFIX}-srv`,
  nat1: `${PREFIX}-nat1`,
  nat2: `${PREFIX}-nat2`,
  c1: `${PREFIX}-c1`,
  c2: `${PREFIX}-c2`,
};
const DOMAIN = 'call.duet.test';
const SERVER_IP = '203.0.113.10';
const SIDES = [
  { n: 1, nat: NS.nat1, client: NS.c1, lan: '10.1.0', pub: '198.51.100', pubIp: '198.51.100.2' },
  { n: 2, nat: NS.nat2, client: NS.c2, lan: '10.2.0', pub: '192.0.2', pubIp: '192.0.2.2' },
];

/** The NAT types: iptables rules for the NAT namespace (`pub`: its public interface, `client`: the caller's address). */
const NAT_TYPES = {
  // Endpoint-independent mapping and filtering: the source port is kept, and
  // anything sent to the public address is let in to the caller.
  'full-cone': ({ pub, pubIp, client }) => [
    ['-t', 'nat', '-A', 'POSTROUTING', '-o', pub, '-j', 'SNAT', '--to-source', pubIp],
    ['-t', 'nat', '-A', 'PREROUTING', '-i', pub, '-p', 'udp', '-j', 'DNAT', '--to-destination', client],
  ],
  // Plain MASQUERADE: endpoint-independent mapping, address-and-port-dependent filtering.
  'port-restricted': ({ pub }) => [['-t', 'nat', '-A', 'POSTROUTING', '-o', pub, '-j', 'MASQUERADE']],
  // A new random port for every destination: endpoint-dependent mapping.
  symmetric: ({ pub }) => [['-t', 'nat', '-A', 'POSTROUTING', '-o', pub, '-j', 'MASQUERADE', '--random-fully']],
  // No UDP out: TCP to 443 and 3478 only (and the answers).
  'udp-blocked': ({ pub }) => [
    ['-t', 'nat', '-A', 'POSTROUTING', '-o', pub, '-j', 'MASQUERADE'],
    ...outboundOnly(pub, ['443', '3478']),
  ],
  // Nothing but TCP 443 out.
  'https-only': ({ pub }) => [
    ['-t', 'nat', '-A', 'POSTROUTING', '-o', pub, '-j', 'MASQUERADE'],
    ...outboundOnly(pub, ['443']),
  ],
};

function outboundOnly(pub, tcpPorts) {
  return [
    ['-P', 'FORWARD', 'DROP'],
    ['-A', 'FORWARD', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT'],
    ...tcpPorts.map((port) => ['-A', 'FORWARD', '-o', pub, '-p', 'tcp', '--dport', port, '-j', 'ACCEPT']),
  ];
}

export const PAIRS = [
  ['full-cone', 'full-cone'],
  ['port-restricted', 'port-restricted'],
  ['symmetric', 'symmetric'],
  ['full-cone', 'symmetric'],
  ['port-restricted', 'symmetric'],
  ['udp-blocked', 'port-restricted'],
  ['udp-blocked', 'udp-blocked'],
  ['https-only', 'https-only'],
  ['https-only', 'symmetric'],
];

function sh(args, { ns } = {}) {
  const command = ns ? ['ip', 'netns', 'exec', ns, ...args] : args;
  return execFileSync(command[0], command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

const ip = (args, ns) => sh(['ip', ...args], { ns });
const iptables = (args, ns) => sh(['iptables', '-w', ...args], { ns });

function deleteNamespace(name) {
  try {
    sh(['ip', 'netns', 'delete', name]);
  } catch {
    // already gone
  }
}

function link(a, aName, b, bName) {
  ip(['link', 'add', aName, 'netns', a, 'type', 'veth', 'peer', 'name', bName, 'netns', b]);
}

function up(ns, dev, address) {
  if (address) ip(['addr', 'add', address, 'dev', dev], ns);
  ip(['link', 'set', dev, 'up'], ns);
}

/** The internet, the server, and the two callers' namespaces (the NATs come per pair). */
/** A new namespace with loopback up and no IPv6 (the lab is IPv4; addresses
 * appearing late, as IPv6 link-local ones do, make Chromium drop its requests
 * with ERR_NETWORK_CHANGED). */
function addNamespace(ns) {
  ip(['netns', 'add', ns]);
  sh(['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1'], { ns });
  sh(['sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1'], { ns });
  ip(['link', 'set', 'lo', 'up'], ns);
}

function buildFixed() {
  for (const ns of [NS.inet, NS.srv, NS.c1, NS.c2]) addNamespace(ns);
  sh(['sysctl', '-qw', 'net.ipv4.ip_forward=1'], { ns: NS.inet });
  link(NS.inet, 'to-srv', NS.srv, 'eth0');
  up(NS.inet, 'to-srv', '203.0.113.1/24');
  up(NS.srv, 'eth0', `${SERVER_IP}/24`);
  ip(['route', 'add', 'default', 'via', '203.0.113.1'], NS.srv);
  // The internet carries no private addresses (RFC 1918, shared, link-local).
  for (const block of ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '169.254.0.0/16']) {
    iptables(['-A', 'FORWARD', '-s', block, '-j', 'DROP'], NS.inet);
    iptables(['-A', 'FORWARD', '-d', block, '-j', 'DROP'], NS.inet);
  }
}

/** The NAT namespace between caller `side` and the internet, with its links. */
function buildNat(side) {
  addNamespace(side.nat);
  sh(['sysctl', '-qw', 'net.ipv4.ip_forward=1'], { ns: side.nat });
  link(side.nat, 'pub', NS.inet, `to-nat${side.n}`);
  up(side.nat, 'pub', `${side.pubIp}/24`);
  up(NS.inet, `to-nat${side.n}`, `${side.pub}.1/24`);
  ip(['route', 'add', 'default', 'via', `${side.pub}.1`], side.nat);
  link(side.nat, 'lan', side.client, `eth${side.n}`);
  up(side.nat, 'lan', `${side.lan}.1/24`);
  up(side.client, `eth${side.n}`, `${side.lan}.2/24`);
  ip(['route', 'add', 'default', 'via', `${side.lan}.1`], side.client);
}

/** Makes `side`'s NAT one of `type`: its rules replaced and its connection table emptied. */
function configureNat(side, type) {
  iptables(['-F'], side.nat);
  iptables(['-t', 'nat', '-F'], side.nat);
  iptables(['-P', 'FORWARD', 'ACCEPT'], side.nat);
  sh(['conntrack', '-F'], { ns: side.nat });
  for (const rule of NAT_TYPES[type]({ pub: 'pub', pubIp: side.pubIp, client: `${side.lan}.2` })) {
    iptables(rule, side.nat);
  }
}

function teardown(server) {
  if (server && server.exitCode === null) server.kill('SIGKILL');
  for (const ns of Object.values(NS)) deleteNamespace(ns);
}

/** A Chromium that lives in namespace `ns` (playwright talks to it over its pipes). */
async function browserIn(ns, dir) {
  const wrapper = path.join(dir, `chromium-${ns}`);
  await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${process.env.CHROMIUM_BIN || '/usr/bin/chromium'} "$@"\n`);
  await chmod(wrapper, 0o755);
  return chromium.launch({
    executablePath: wrapper,
    headless: true,
    args: [...CHROMIUM_ARGS.filter((arg) => arg !== '--allow-loopback-in-peer-connection'), `--host-resolver-rules=MAP ${DOMAIN} ${SERVER_IP},MAP ${DOMAIN}. ${SERVER_IP}`],
  });
}

async function startServer(dir) {
  const bin = path.resolve(ROOT, process.env.DUET_BIN || 'target/debug/duet');
  // The default server: only where it listens and its name.
  const child = spawn('ip', ['netns', 'exec', NS.srv, bin, 'serve', '--listen', `${SERVER_IP}:443`, '--domain', DOMAIN, '--data-dir', path.join(dir, 'data')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const deadline = Date.now() + 20_000;
  while (!output.includes('listening on https://')) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`duet did not start:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { child, output: () => output };
}

/** The selected candidate pair of the page's connection, and frames decoded. */
function connectionState(page) {
  return page.evaluate(async () => {
    const pc = window.__duet?.pc();
    if (!pc) return { framesDecoded: 0 };
    const report = await pc.getStats();
    let framesDecoded = 0;
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') framesDecoded += s.framesDecoded ?? 0;
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    });
    const local = pair && report.get(pair.localCandidateId);
    const remote = pair && report.get(pair.remoteCandidateId);
    return {
      framesDecoded,
      local: local ? `${local.candidateType}${local.relayProtocol ? `/${local.relayProtocol}` : ''}` : null,
      remote: remote ? remote.candidateType : null,
      ice: pc.iceConnectionState,
    };
  });
}

/** One call between the two callers; resolves with its figures or its failure. */
async function call(browsers, [typeA, typeB], { relay, timeoutMs }) {
  const room = `lab-${typeA}-${typeB}-${relay ? 'relay' : 'all'}-${Date.now()}`;
  const query = relay ? '&policy=relay' : '';
  const contexts = await Promise.all(browsers.map((b) => b.newContext({ ignoreHTTPSErrors: true })));
  try {
    const pages = await Promise.all(contexts.map((c) => c.newPage()));
    if (process.env.NETLAB_DEBUG) {
      for (const p of pages) {
        p.on('console', (m) => console.log('console:', m.type(), m.text()));
        p.on('pageerror', (e) => console.log('pageerror:', e.message));
        p.on('requestfailed', (r) => console.log('requestfailed:', r.url(), r.failure()?.errorText));
      }
    }
    await Promise.all(pages.map((p) => p.goto(`https://${DOMAIN}/?room=${room}${query}`)));

    await Promise.all(pages.map((p) => p.getByRole('button', { name: 'Join', exact: true }).waitFor({ timeout: 60_000 })));

    const joinButton = (p) => p.getByRole('button', { name: 'Join', exact: true });
    await joinButton(pages[0]).click();
    await pages[0].waitForFunction(() => window.__duet?.phase === 'waiting', null, { timeout: 10_000 });
    const started = Date.now();
    await joinButton(pages[1]).click();
    let states = [];
    while (Date.now() - started < timeoutMs) {
      states = await Promise.all(pages.map(connectionState));
      if (states.every((s) => s.framesDecoded > 0)) {
        return { ok: true, setupMs: Date.now() - started, states };
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return { ok: false, setupMs: null, states };
  } finally {
    await Promise.all(contexts.map((c) => c.close()));
  }
}

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function main() {
  const args = process.argv.slice(2);
  const runs = Number(args[args.indexOf('--runs') + 1] || 1) || 1;
  const timeoutMs = 20_000;
  const dir = await mkdtemp(path.join(tmpdir(), 'duet-netlab-'));
  let server = null;
  const browsers = [];
  const results = [];
  const cleanup = () => teardown(server?.child);
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      cleanup();
      process.exit(130);
    });
  }
  try {
    buildFixed();
    for (const side of SIDES) buildNat(side);
    server = await startServer(dir);
    browsers.push(await browserIn(NS.c1, dir), await browserIn(NS.c2, dir));
    for (const relay of [false, true]) {
      for (const pair of PAIRS.filter((_, i) => !process.env.NETLAB_ONLY || String(i) === process.env.NETLAB_ONLY)) {
        configureNat(SIDES[0], pair[0]);
        configureNat(SIDES[1], pair[1]);
        for (let run = 0; run < runs; run += 1) {
          const outcome = await call(browsers, pair, { relay, timeoutMs });
          const row = { pair: `${pair[0]} / ${pair[1]}`, mode: relay ? 'relay only' : 'default', ...outcome };
          results.push(row);
          const [a, b] = outcome.states;
          console.log(
            `${row.ok ? 'ok  ' : 'FAIL'} ${row.mode.padEnd(10)} ${row.pair.padEnd(34)} ` +
              `${row.ok ? `${String(row.setupMs).padStart(5)} ms` : '   --   '}  ` +
              `caller 1 ${a?.local ?? '-'} → ${a?.remote ?? '-'}, caller 2 ${b?.local ?? '-'} → ${b?.remote ?? '-'}`,
          );
        }
      }
    }
  } finally {
    await Promise.all(browsers.map((b) => b.close().catch(() => {})));
    cleanup();
    await rm(dir, { recursive: true, force: true });
  }
  const summary = (mode) => {
    const rows = results.filter((r) => r.mode === mode);
    const times = rows.filter((r) => r.ok).map((r) => r.setupMs);
    return { mode, connected: rows.filter((r) => r.ok).length, total: rows.length, p50: percentile(times, 50), p95: percentile(times, 95) };
  };
  const totals = [summary('default'), summary('relay only')];
  for (const t of totals) console.log(`${t.mode}: ${t.connected} of ${t.total} connected; set-up p50 ${t.p50} ms, p95 ${t.p95} ms`);
  if (args.includes('--save')) {
    await writeFile(path.join(HERE, 'last-run.json'), JSON.stringify({ date: new Date().toISOString(), runs, results, totals }, null, 2) + '\n');
  }
  const failed = totals.some((t) => t.connected !== t.total);
  const slow = totals[0].p95 >= 2000;
  if (slow) console.log('default set-up p95 is not under 2 s');
  process.exit(failed || slow ? 1 : 0);
}

main().catch((error) => {
  console.error(error);
  teardown();
  process.exit(1);
});
