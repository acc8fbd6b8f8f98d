/**
 * `flightdeck cluster join URL --token T --advertise IP`: run on a new host before its daemon
 * starts. It asks a member (any host of the cluster) to admit this one, starts this host's
 * etcd member when it gets one, and writes cluster.json so `flightdeck serve` joins. The
 * member's self-signed certificate is checked against --fingerprint when given (printed
 * otherwise, so it can be compared with `openssl x509 -fingerprint -sha256` on the member).
 */
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { hostname } from 'node:os';
import { FdError } from '../../core/errors.js';
import { createLogger } from '../../core/log.js';
import { memberPorts } from '../../cluster/clustering/etcd-process.js';
import { joinCluster, type JoinAnswer } from '../../cluster/clustering/membership.js';
import { argString, defineCommand, optString, type CommandDef } from '../command.js';
import { DEFAULT_DATA_DIR } from '../api-client.js';

const DEFAULT_PORT = 8420;

function post(
  url: URL,
  token: string,
  body: unknown,
  fingerprint?: string,
): Promise<{ status: number; body: unknown; fingerprint?: string }> {
  const payload = Buffer.from(JSON.stringify(body));
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const r = send(
      url,
      {
        method: 'POST',
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'content-length': payload.length,
        },
        ...(url.protocol === 'https:' ? { rejectUnauthorized: false } : {}),
      },
      (res) => {
        const fp =
          url.protocol === 'https:' ? (res.socket as TLSSocket).getPeerCertificate().fingerprint256 : undefined;
        if (fingerprint && fp && fp.replace(/:/g, '').toLowerCase() !== fingerprint.replace(/:/g, '').toLowerCase()) {
          res.destroy();
          reject(
            new FdError('FD_CLUSTER_FINGERPRINT', `the member's certificate is ${fp}, not ${fingerprint}`, {
              hint: 'check the URL and the fingerprint',
            }),
          );
          return;
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let parsed: unknown = null;
          try {
            parsed = JSON.parse(Buffer.concat(chunks).toString());
          } catch {
            parsed = Buffer.concat(chunks).toString();
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, ...(fp ? { fingerprint: fp } : {}) });
        });
      },
    );
    r.on('error', (err) =>
      reject(new FdError('FD_DAEMON_UNREACHABLE', `cannot reach ${url.origin}: ${err.message}`, { cause: err })),
    );
    r.end(payload);
  });
}

export const clusterJoinCommands: CommandDef[] = [
  defineCommand({
    noun: 'cluster',
    verb: 'join',
    summary: 'join this host to a cluster (run before starting its daemon)',
    args: [{ name: 'url', description: 'API URL of any host of the cluster', required: true }],
    options: {
      token: { type: 'string', description: 'an admin token of the cluster', value: 'TOKEN' },
      advertise: { type: 'string', description: 'IPv4 address other hosts reach this host on', value: 'IP' },
      'host-name': { type: 'string', description: 'name of this host (default: hostname)', value: 'NAME' },
      fingerprint: { type: 'string', description: "SHA-256 fingerprint of the member's certificate", value: 'HEX' },
    },
    async run(ctx, input) {
      const url = argString(input, 'url').replace(/\/$/, '');
      const token = optString(input, 'token') ?? ctx.global.token;
      const advertise = optString(input, 'advertise');
      if (!token)
        throw new FdError('FD_CLI_BAD_ARGS', 'missing --token', {
          hint: 'create one on a member: flightdeck token create join --role admin',
        });
      if (!advertise) throw new FdError('FD_CLI_BAD_ARGS', 'missing --advertise IP');
      const dataDir = ctx.global.dataDir ?? DEFAULT_DATA_DIR;
      const hostName = optString(input, 'host-name') ?? hostname();
      const ports = await memberPorts(dataDir);
      const res = await post(
        new URL(url + '/api/v1/cluster/members'),
        token,
        { name: hostName, peerUrl: `http://${advertise}:${ports.peer}` },
        optString(input, 'fingerprint'),
      );
      if (res.status >= 400) {
        const e = (res.body as { error?: { code?: `FD_${string}`; message?: string; hint?: string } }).error;
        throw new FdError(
          e?.code ?? 'FD_CLUSTER_JOIN_REFUSED',
          e?.message ?? `HTTP ${res.status}`,
          e?.hint ? { hint: e.hint } : {},
        );
      }
      const answer = res.body as JoinAnswer;
      ctx.say(
        answer.member
          ? 'admitted as an etcd member; starting it'
          : 'admitted as an etcd client (the cluster has its members)',
      );
      const cfg = await joinCluster({
        dataDir,
        answer,
        advertise,
        apiPort: DEFAULT_PORT,
        hostName,
        log: createLogger({ level: 'warn' }),
      });
      ctx.say(`now start the daemon: flightdeck serve --data-dir ${dataDir}   (or: systemctl restart flightdeck)`);
      return {
        hostName,
        member: answer.member,
        etcd: cfg.etcd,
        listen: cfg.listen,
        ...(res.fingerprint ? { memberFingerprint: res.fingerprint } : {}),
      };
    },
  }),
];
