// Call set-up time: from the second person's Join click to the first decoded video
// frame on both sides, in headless Chromium on loopback. Measures Duet and, when it is
// there, the reference seed app, run after run, interleaved, in the same browser.
//
//   node bench/call-setup/bench.mjs [--runs N] [--seed-app DIR] [--out FILE] [--no-turn]
//                                   [--baseline-bin PATH] [--trusted-cert]
//
// --no-turn starts Duet without its embedded STUN/TURN relay, so joined.iceServers is
// empty, as in the seed app's default page (a diagnostic, not the product set-up).
// --baseline-bin PATH also runs another duet binary (an earlier build), interleaved
// with the one under test in the same browser, and prints the ratio.
// --trusted-cert gives the servers a certificate from a CA of the run's own that the
// browser trusts, so joined.iceServers also holds turns: (one more allocation).
//
// Run it through bench/call-setup/run.sh (a loopback-only network namespace).
//
// How a run is timed, the same for both apps:
//   - the first person opens the room and joins, and the page settles;
//   - the second person opens the room (Duet: its lobby shows the camera preview);
//   - t0 = the second person's click on Join ("Connect Sig Server" in the seed app),
//     taken in the page by a capture-phase click listener;
//   - each side's first remote frame = the first requestVideoFrameCallback of its remote
//     <video>, i.e. the first decoded frame handed to the compositor;
//   - set-up = the later of the two first frames, minus t0.
// Both pages stamp times with performance.timeOrigin + performance.now(), comparable
// across pages of one machine.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBrowser, newContext } from '../../tests/browser/browser.js';
import { makeTrustedLocalhost } from '../../tests/browser/certs.js';
import { REPO_ROOT, duetBinary, startServer } from '../../tests/browser/server.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i === -1 ? fallback : process.argv[i + 1];
}

const RUNS = Number(option('--runs', '12'));
const SEED_DIR = path.resolve(option('--seed-app', path.join(REPO_ROOT, '..', 'shared', 'anchors', 'seed-app')));
const OUT = option('--out', path.join(HERE, 'last-run.json'));
const NO_TURN = process.argv.includes('--no-turn');
const BASELINE_BIN = option('--baseline-bin', null);
const TRUSTED_CERT = process.argv.includes('--trusted-cert');
const RUN_TIMEOUT_MS = 20_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Arms the timers in a page: t0 on the first click of `button`, first frame of `video`. */
async function arm(page, button, video) {
  await page.evaluate(
    ([buttonSel, videoSel]) => {
      const stamp = () => performance.timeOrigin + performance.now();
      window.__bench = { t0: 0, first: 0 };
      document.querySelector(buttonSel).addEventListener('click', () => (window.__bench.t0 ||= stamp()), { capture: true });
      const v = document.querySelector(videoSel);
      v.requestVideoFrameCallback((now) => {
        window.__bench.first = performance.timeOrigin + now;
      });
    },
    [button, video],
  );
}

async function firstFrame(page) {
  await page.waitForFunction(() => window.__bench.first > 0, null, { timeout: RUN_TIMEOUT_MS, polling: 10 });
  return page.evaluate(() => window.__bench.first);
}

// ---------------------------------------------------------------------------
// Duet

async function duetRun(browser, server, i) {
  const room = `bench-${i}-${Math.random().toString(36).slice(2, 8)}`;
  const a = await (await newContext(browser)).newPage();
  const b = await (await newContext(browser)).newPage();
  try {
    await a.goto(`${server.url}/?room=${room}`);
    await arm(a, '#join', '#remote-video');
    await a.click('#join');
    await a.waitForFunction(() => window.__duet?.phase === 'waiting', null, { timeout: RUN_TIMEOUT_MS });
    await b.goto(`${server.url}/?room=${room}`);
    // The lobby has its preview running, as a person would see it before clicking.
    await b.waitForFunction(() => document.getElementById('preview-video').videoWidth > 0, null, { timeout: RUN_TIMEOUT_MS });
    await sleep(300);
    await arm(b, '#join', '#remote-video');
    await b.click('#join');
    const t0 = await b.evaluate(() => window.__bench.t0);
    const [fa, fb] = await Promise.all([firstFrame(a), firstFrame(b)]);
    return { first: fa - t0, second: fb - t0, both: Math.max(fa, fb) - t0 };
  } finally {
    await a.context().close();
    await b.context().close();
  }
}

// ---------------------------------------------------------------------------
// The seed app (express + socket.io): /?room=R, then "Connect Sig Server".

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function startSeed() {
  const port = await freePort();
  const child = spawn(process.execPath, ['server/server.js', '--port', String(port), '--host', '127.0.0.1'], {
    cwd: SEED_DIR,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const url = `https://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the seed app exited (${child.exitCode})`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) break;
    } catch {
      // not up yet
    }
    await sleep(200);
  }
  return {
    url,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', resolve);
        child.kill('SIGTERM');
      }),
  };
}

async function seedRun(browser, seed, i) {
  const room = `bench${i}${Math.random().toString(36).slice(2, 8)}`;
  const a = await (await newContext(browser)).newPage();
  const b = await (await newContext(browser)).newPage();
  try {
    await a.goto(`${seed.url}/?room=${room}`);
    await arm(a, '#connect', '#remotevideo');
    await a.click('#connect');
    await a.waitForFunction(() => document.body.dataset.state === 'joined', null, { timeout: RUN_TIMEOUT_MS });
    await b.goto(`${seed.url}/?room=${room}`);
    await sleep(300);
    await arm(b, '#connect', '#remotevideo');
    await b.click('#connect');
    const t0 = await b.evaluate(() => window.__bench.t0);
    const [fa, fb] = await Promise.all([firstFrame(a), firstFrame(b)]);
    return { first: fa - t0, second: fb - t0, both: Math.max(fa, fb) - t0 };
  } finally {
    await a.context().close();
    await b.context().close();
  }
}

// ---------------------------------------------------------------------------

/** Nearest-rank percentile of sorted values. */
function percentile(sorted, p) {
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1];
}

function summary(runs) {
  const pick = (key) => runs.map((r) => r[key]).sort((x, y) => x - y);
  const out = {};
  for (const key of ['both', 'first', 'second']) {
    const v = pick(key);
    out[key] = { median: percentile(v, 50), p95: percentile(v, 95), min: v[0], max: v.at(-1) };
  }
  return out;
}

const ms = (x) => `${Math.round(x)} ms`;

async function main() {
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0'; // the seed app's self-signed certificate (health check only)
  const haveSeed = existsSync(path.join(SEED_DIR, 'server', 'server.js')) && existsSync(path.join(SEED_DIR, 'node_modules'));
  const ca = TRUSTED_CERT ? await makeTrustedLocalhost() : null;
  const extraArgs = [...(NO_TURN ? ['--no-turn'] : []), ...(ca ? ['--cert', ca.cert, '--key', ca.key] : [])];
  const server = await startServer({ extraArgs });
  const baseline = BASELINE_BIN ? await startServer({ extraArgs, bin: path.resolve(BASELINE_BIN) }) : null;
  const seed = haveSeed ? await startSeed() : null;
  const browser = await launchBrowser({ args: ca ? [`--ignore-certificate-errors-spki-list=${ca.caSpki}`] : [] });
  const results = { duet: [], baseline: [], seed: [] };
  try {
    // One warm-up run each (first page loads, codec set-up), not counted.
    await duetRun(browser, server, 'warm');
    if (baseline) await duetRun(browser, baseline, 'warm');
    if (seed) await seedRun(browser, seed, 'warm');
    for (let i = 0; i < RUNS; i++) {
      const d = await duetRun(browser, server, i);
      results.duet.push(d);
      let line = `run ${String(i + 1).padStart(2)}: duet ${ms(d.both)} (first ${ms(d.first)}, second ${ms(d.second)})`;
      if (baseline) {
        const b = await duetRun(browser, baseline, i);
        results.baseline.push(b);
        line += `   baseline ${ms(b.both)}`;
      }
      if (seed) {
        const s = await seedRun(browser, seed, i);
        results.seed.push(s);
        line += `   seed ${ms(s.both)} (first ${ms(s.first)}, second ${ms(s.second)})`;
      }
      console.log(line);
    }
  } finally {
    await browser.close();
    await server.stop();
    await baseline?.stop();
    await seed?.stop();
    if (ca) await rm(ca.dir, { recursive: true, force: true });
  }

  const duet = summary(results.duet);
  const seedSummary = seed ? summary(results.seed) : null;
  const mode = `${NO_TURN ? ', --no-turn' : ''}${TRUSTED_CERT ? ', trusted certificate' : ''}`;
  console.log(`\nDuet (${duetBinary()}${mode}), ${RUNS} runs: median ${ms(duet.both.median)}, p95 ${ms(duet.both.p95)} (min ${ms(duet.both.min)}, max ${ms(duet.both.max)})`);
  const baselineSummary = baseline ? summary(results.baseline) : null;
  if (baselineSummary) {
    console.log(`Baseline (${BASELINE_BIN}), ${RUNS} runs: median ${ms(baselineSummary.both.median)}, p95 ${ms(baselineSummary.both.p95)} (min ${ms(baselineSummary.both.min)}, max ${ms(baselineSummary.both.max)})`);
    console.log(`Ratio Duet / baseline: median ${(duet.both.median / baselineSummary.both.median).toFixed(2)}, p95 ${(duet.both.p95 / baselineSummary.both.p95).toFixed(2)}`);
  }
  if (seedSummary) {
    console.log(`Seed app (${SEED_DIR}), ${RUNS} runs: median ${ms(seedSummary.both.median)}, p95 ${ms(seedSummary.both.p95)} (min ${ms(seedSummary.both.min)}, max ${ms(seedSummary.both.max)})`);
    console.log(`Ratio Duet / seed: median ${(duet.both.median / seedSummary.both.median).toFixed(2)}, p95 ${(duet.both.p95 / seedSummary.both.p95).toFixed(2)}`);
  } else {
    console.log(`Seed app not found at ${SEED_DIR} (or its node_modules are missing): measured Duet only.`);
  }
  await writeFile(
    OUT,
    JSON.stringify({ date: new Date().toISOString(), runs: RUNS, noTurn: NO_TURN, trustedCert: TRUSTED_CERT, duet: { summary: duet, runs: results.duet }, baseline: baselineSummary && { bin: BASELINE_BIN, summary: baselineSummary, runs: results.baseline }, seed: seedSummary && { summary: seedSummary, runs: results.seed } }, null, 2) + '\n',
  );
  console.log(`\nRaw figures: ${path.relative(process.cwd(), OUT)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
