/**
 * The CLI's client of the REST API. It finds a local daemon through its data dir (daemon.json
 * names the URL, `token` holds the admin token, 0600) or a remote one through --url + --token.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readFile, stat } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { FdError, isErrno } from '../core/errors.js';

export const DEFAULT_DATA_DIR = '/var/lib/flightdeck';

export interface DaemonInfo {
  url: string;
  pid: number;
  host: string;
  /** PEM of the daemon's self-signed certificate when it serves TLS. */
  certPath?: string;
}

export interface ApiResponse<T> {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: T;
}

export class ApiClient {
  constructor(
    readonly url: string,
    private readonly token: string,
    private readonly ca?: string,
  ) {}

  static async resolve(global: { dataDir?: string; url?: string; token?: string }): Promise<ApiClient> {
    if (global.url) {
      if (!global.token) {
        throw new FdError('FD_CLI_NO_TOKEN', `no token for ${global.url}`, {
          hint: 'pass --token or set FLIGHTDECK_TOKEN',
        });
      }
      const ca = process.env['FLIGHTDECK_CA'] ? await readFile(process.env['FLIGHTDECK_CA'], 'utf8') : undefined;
      return new ApiClient(global.url.replace(/\/$/, ''), global.token, ca);
    }
    const dataDir = global.dataDir ?? DEFAULT_DATA_DIR;
    let info: DaemonInfo;
    try {
      info = JSON.parse(await readFile(join(dataDir, 'daemon.json'), 'utf8')) as DaemonInfo;
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      throw new FdError('FD_DAEMON_NOT_RUNNING', `no flightdeck daemon has run with data dir ${dataDir}`, {
        hint: 'start one with "flightdeck serve" (or pass --data-dir / --url)',
      });
    }
    const token = global.token ?? (await readFile(join(dataDir, 'token'), 'utf8')).trim();
    const ca = info.certPath ? await readFile(info.certPath, 'utf8') : undefined;
    return new ApiClient(info.url, token, ca);
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<ApiResponse<T>> {
    const url = new URL(this.url + path);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const r = req(
        url,
        {
          method,
          headers: {
            authorization: `Bearer ${this.token}`,
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
          ...(this.ca ? { ca: this.ca } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            let parsed: unknown = null;
            try {
              parsed = text ? JSON.parse(text) : null;
            } catch {
              parsed = text;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed as T });
          });
        },
      );
      r.on('error', (err) =>
        reject(
          new FdError('FD_DAEMON_UNREACHABLE', `cannot reach the daemon at ${this.url}: ${err.message}`, {
            hint: 'is "flightdeck serve" running? check the URL and data dir',
            cause: err,
          }),
        ),
      );
      if (payload) r.end(payload);
      else r.end();
    });
  }

  /** Streams a file as an application/octet-stream body (image uploads), with progress. */
  async upload<T>(
    path: string,
    file: string,
    onProgress?: (sentBytes: number, totalBytes: number) => void,
  ): Promise<ApiResponse<T>> {
    const { size } = await stat(file);
    const url = new URL(this.url + path);
    const req = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const r = req(
        url,
        {
          method: 'POST',
          headers: {
            authorization: `Bearer ${this.token}`,
            'content-type': 'application/octet-stream',
            'content-length': size,
          },
          ...(this.ca ? { ca: this.ca } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            let body: unknown = text;
            try {
              body = JSON.parse(text);
            } catch {
              // keep the text
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: body as T });
          });
        },
      );
      r.on('error', (err) =>
        reject(new FdError('FD_DAEMON_UNREACHABLE', `upload to ${this.url} failed: ${err.message}`, { cause: err })),
      );
      let sent = 0;
      const src = createReadStream(file);
      src.on('data', (c) => {
        sent += c.length;
        onProgress?.(sent, size);
      });
      src.on('error', reject);
      src.pipe(r);
    });
  }

  /** Calls and throws the API's error as an FdError on a non-2xx answer. */
  async ok<T>(method: string, path: string, body?: unknown): Promise<ApiResponse<T>> {
    return throwIfError(await this.call<T>(method, path, body));
  }

  wsUrl(path: string): string {
    return this.url.replace(/^http/, 'ws') + path;
  }

  get authHeader(): string {
    return `Bearer ${this.token}`;
  }

  get caPem(): string | undefined {
    return this.ca;
  }
}

/** Turns an API error answer into the FdError it carries. */
export function throwIfError<T>(res: ApiResponse<T>): ApiResponse<T> {
  if (res.status >= 400) {
    const e = (res.body as { error?: { code?: string; message?: string; hint?: string; details?: unknown } } | null)
      ?.error;
    throw new FdError((e?.code as `FD_${string}`) ?? 'FD_API_ERROR', e?.message ?? `HTTP ${res.status}`, {
      ...(e?.hint ? { hint: e.hint } : {}),
      status: res.status,
      details: e?.details,
    });
  }
  return res;
}
