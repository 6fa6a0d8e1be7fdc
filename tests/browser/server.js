// Starts the `duet` binary under test and stops it again.
//
//   const server = await startServer();   // { url: 'https://127.0.0.1:PORT', stop(), output() }
//   ...
//   await server.stop();
//
// The binary is target/debug/duet (relative to the repository root) unless the
// DUET_BIN environment variable names another one. Each server gets a fresh data
// directory, removed on stop(). Only the child process started here is ever signalled.
// Its output is kept (server.output()); DUET_TEST_VERBOSE=1 echoes it as it comes;
// DUET_TEST_WEB_DIR=web serves web/ from disk instead of the embedded copy.

import { spawn } from 'node:child_process';
import { get } from 'node:https';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const LISTENING = /listening on https:\/\/(\S+)/;
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;
const START_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 5_000;
const KEEP_LINES = 200;

export function duetBinary() {
  const bin = process.env.DUET_BIN || path.join('target', 'debug', 'duet');
  return path.resolve(REPO_ROOT, bin);
}

/**
 * Starts `duet serve` on 127.0.0.1 with a random port and waits until it listens.
 * `bin` runs another binary than duetBinary() (a benchmark's baseline); `listen`
 * another address than a free port of 127.0.0.1.
 */
export async function startServer({ extraArgs = [], env = {}, bin = duetBinary(), listen = '127.0.0.1:0' } = {}) {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'duet-browser-test-'));
  // DUET_TEST_WEB_DIR=web serves the page from disk (--web-dir) instead of the copy
  // embedded in the binary: handy while editing web/ without rebuilding.
  const webDir = process.env.DUET_TEST_WEB_DIR ? ['--web-dir', path.resolve(REPO_ROOT, process.env.DUET_TEST_WEB_DIR)] : [];
  // The embedded STUN/TURN relay listens on a free port (tests may run servers side by
  // side) and may relay to loopback, where the test browsers are.
  const turn = ['--turn-listen', '127.0.0.1:0', '--allow-peer', '127.0.0.0/8'];
  const args = ['serve', '--listen', listen, '--data-dir', dataDir, ...turn, ...webDir, ...extraArgs];
  // The server reads DUET_* variables (DUET_CONFIG, DUET_LISTEN, …): none of the
  // caller's may leak in, only what the test passes in `env`.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('DUET_')));
  const child = spawn(bin, args, {
    cwd: REPO_ROOT,
    env: { ...inherited, NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  const lines = [];
  const verbose = Boolean(process.env.DUET_TEST_VERBOSE);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  // Make sure the child never outlives this test process.
  const killOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  const url = await new Promise((resolve, reject) => {
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(value);
    };
    const describe = () => `${bin} ${args.join(' ')}\n--- its output ---\n${lines.join('\n')}`;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(new Error(`the server did not say "listening on https://…" within ${START_TIMEOUT_MS} ms:\n${describe()}`));
    }, START_TIMEOUT_MS);

    const watch = (stream, name) => {
      let pending = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        pending += chunk;
        let nl;
        while ((nl = pending.indexOf('\n')) !== -1) {
          const line = pending.slice(0, nl).replace(ANSI, '');
          pending = pending.slice(nl + 1);
          lines.push(line);
          if (lines.length > KEEP_LINES) lines.shift();
          if (verbose) process.stderr.write(`[duet ${name}] ${line}\n`);
          const m = LISTENING.exec(line);
          if (m) {
            const hostPort = m[1].replace(/[",')\]}]+$/, '');
            finish(null, new URL('https://' + hostPort).origin);
          }
        }
      });
    };
    // The brief is stdout; stderr is watched too so a logger change cannot hang the tests.
    watch(child.stdout, 'stdout');
    watch(child.stderr, 'stderr');

    child.once('error', (err) => finish(new Error(`could not start ${bin}: ${err.message}`)));
    exited.then(({ code, signal }) =>
      finish(new Error(`the server exited (code ${code}, signal ${signal}) before listening:\n${describe()}`)),
    );
  }).catch(async (err) => {
    process.removeListener('exit', killOnExit);
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  });

  let stopping = null;
  async function stop() {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        let timer;
        const killed = await Promise.race([
          exited.then(() => false),
          new Promise((resolve) => {
            timer = setTimeout(() => resolve(true), STOP_GRACE_MS);
          }),
        ]);
        clearTimeout(timer);
        if (killed) {
          child.kill('SIGKILL');
          await exited;
        }
      }
      process.removeListener('exit', killOnExit);
      await rm(dataDir, { recursive: true, force: true });
      return exited;
    })();
    return stopping;
  }

  return { url, pid: child.pid, dataDir, stop, output: () => lines.join('\n') };
}

/** The server's /metrics text (its self-signed certificate accepted). */
export function scrapeMetrics(server) {
  return new Promise((resolve, reject) => {
    get(`${server.url}/metrics`, { rejectUnauthorized: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

/** The value of one sample (`name` or `name{labels}` exactly as exposed) in a scrape, 0 if absent. */
export function sample(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1).split(' ')[0]) : 0;
}
