// A certificate authority of the test's own and a certificate for localhost
// signed by it, made with the openssl command line tool, so the server can be
// given a certificate (`--cert`, `--key`) that Chromium is told to trust
// (`--ignore-certificate-errors-spki-list` with the CA's key hash). Chromium
// refuses TURN over TLS with a certificate it does not trust, so `turns:` can
// only be tested this way (or with an ACME certificate).

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Makes a CA and a leaf for `localhost` and 127.0.0.1 in a new temporary directory.
 * @returns {Promise<{ dir: string, cert: string, key: string, caSpki: string }>}
 *   cert: the chain (leaf then CA), key: the leaf's key, caSpki: base64 SHA-256 of
 *   the CA's SubjectPublicKeyInfo (what Chromium's SPKI list takes).
 */
export async function makeTrustedLocalhost() {
  const dir = await mkdtemp(path.join(tmpdir(), 'duet-test-ca-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(
    ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Duet test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    dir,
  );
  openssl(['req', ...ec, '-keyout', 'key.pem', '-out', 'leaf.csr', '-subj', '/CN=localhost'], dir);
  await writeFile(
    path.join(dir, 'leaf.ext'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n',
  );
  openssl(
    ['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.pem',
      '-days', '2', '-extfile', 'leaf.ext'],
    dir,
  );
  const chain = (await readFile(path.join(dir, 'leaf.pem'), 'utf8')) + (await readFile(path.join(dir, 'ca.pem'), 'utf8'));
  await writeFile(path.join(dir, 'chain.pem'), chain);
  const caSpki = spkiHash(path.join(dir, 'ca.pem'));
  return { dir, cert: path.join(dir, 'chain.pem'), key: path.join(dir, 'key.pem'), caPem: path.join(dir, 'ca.pem'), caSpki };
}

/** Base64 SHA-256 of the SubjectPublicKeyInfo of the certificate in `pemPath`. */
export function spkiHash(pemPath) {
  const spkiDer = execFileSync('sh', ['-c', 'openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform der', 'sh', pemPath]);
  return createHash('sha256').update(spkiDer).digest('base64');
}
