// Debian's pebble (an ACME test CA) and pebble-challtestsrv (its DNS server,
// answering every name with 127.0.0.1), started on free loopback ports for a
// test that needs a certificate issued over ACME, as `duet serve --acme` gets
// one from Let's Encrypt. Pebble's own HTTPS uses a certificate from the test's
// CA (certs.js), which duet is told to trust with --acme-ca.

import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import dgram from 'node:dgram';

/** A TCP port of 127.0.0.1 that is free now (and for UDP too when `udp`). */
export async function freePort({ udp = false } = {}) {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const port = await new Promise((resolve, reject) => {
      const server = net.createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port: p } = server.address();
        server.close(() => resolve(p));
      });
    });
    if (!udp) return port;
    const free = await new Promise((resolve) => {
      const socket = dgram.createSocket('udp4');
      socket.once('error', () => resolve(false));
      socket.bind(port, '127.0.0.1', () => socket.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port on loopback');
}

function get(url, ca) {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => (response.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: ${response.statusCode}`))));
      })
      .on('error', reject);
  });
}

/**
 * Starts pebble validating TLS-ALPN-01 on `tlsPort` of the names it is asked
 * for, all resolving to 127.0.0.1. `listener` is { cert, key, caPem } for its
 * own HTTPS (from certs.js).
 */
export async function startPebble({ tlsPort, listener, dir }) {
  const dnsPort = await freePort({ udp: true });
  const acmePort = await freePort();
  const managementPort = await freePort();
  const config = {
    pebble: {
      listenAddress: `127.0.0.1:${acmePort}`,
      managementListenAddress: `127.0.0.1:${managementPort}`,
      certificate: listener.cert,
      privateKey: listener.key,
      httpPort: 5002,
      tlsPort,
      ocspResponderURL: '',
      externalAccountBindingRequired: false,
    },
  };
  const configPath = path.join(dir, 'pebble.json');
  await writeFile(configPath, JSON.stringify(config));
  const children = [
    spawn('/usr/bin/pebble-challtestsrv', ['-dns01', `127.0.0.1:${dnsPort}`, '-defaultIPv4', '127.0.0.1', '-defaultIPv6', '',
      '-http01', '', '-https01', '', '-tlsalpn01', '', '-management', `127.0.0.1:${await freePort()}`], { stdio: 'ignore' }),
    spawn('/usr/bin/pebble', ['-config', configPath, '-dnsserver', `127.0.0.1:${dnsPort}`], {
      stdio: 'ignore',
      env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0' },
    }),
  ];
  const stop = async () => {
    await Promise.all(children.map((child) => new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', resolve);
      child.kill('SIGKILL');
    })));
  };
  const ca = await import('node:fs').then((fs) => fs.readFileSync(listener.caPem));
  const directory = `https://127.0.0.1:${acmePort}/dir`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      await get(directory, ca);
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`pebble did not start: ${error.message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  const management = `https://127.0.0.1:${managementPort}`;
  return {
    directory,
    stop,
    /** PEM of pebble's root and intermediate (made anew at every start). */
    root: () => get(`${management}/roots/0`, ca),
    intermediate: () => get(`${management}/intermediates/0`, ca),
  };
}
