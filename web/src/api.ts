// The one way the UI talks to the daemon: the public API, with the token from session storage
// in a header (never in a URL), and the API's errors kept whole (code, message, hint).
const TOKEN_KEY = 'flightdeck.token';

export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly hint: string | undefined,
    readonly status: number,
  ) {
    super(message);
  }
}

export const getToken = (): string | null => sessionStorage.getItem(TOKEN_KEY);
export const setToken = (t: string | null): void =>
  t === null ? sessionStorage.removeItem(TOKEN_KEY) : sessionStorage.setItem(TOKEN_KEY, t);

/** Called when the API says the token is no longer good (revoked while signed in). */
let onUnauthorized: (err: ApiError) => void = () => undefined;
export const setUnauthorizedHandler = (f: (err: ApiError) => void): void => {
  onUnauthorized = f;
};

export function toApiError(status: number, body: unknown): ApiError {
  const e = (body as { error?: { code?: string; message?: string; hint?: string } } | null)?.error;
  return new ApiError(
    e?.code ?? 'FD_HTTP_' + status,
    e?.message ?? `the daemon answered HTTP ${status}`,
    e?.hint,
    status,
  );
}

export async function api<T>(method: string, path: string, body?: unknown, token = getToken()): Promise<T> {
  let res: Response;
  try {
    res = await fetch('/api/v1' + path, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (err) {
    throw new ApiError(
      'FD_DAEMON_UNREACHABLE',
      `cannot reach the daemon: ${(err as Error).message}`,
      'is it running?',
      0,
    );
  }
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!res.ok) {
    const err = toApiError(res.status, parsed);
    if (res.status === 401 && token === getToken()) onUnauthorized(err);
    throw err;
  }
  return parsed as T;
}

/** Uploads a file as the raw body, reporting bytes sent (fetch cannot report upload progress). */
export function upload<T>(path: string, file: Blob, onProgress: (sent: number, total: number) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/v1' + path);
    const token = getToken();
    if (token) xhr.setRequestHeader('authorization', `Bearer ${token}`);
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.total || file.size);
    xhr.onerror = () => reject(new ApiError('FD_UPLOAD_FAILED', 'the upload broke off', 'send it again', 0));
    xhr.onload = () => {
      let body: unknown = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body as T);
      else reject(toApiError(xhr.status, body));
    };
    xhr.send(file);
  });
}

/** A single-use console ticket, then the WebSocket URL that takes it. */
export async function consoleUrl(vmId: string, channel: 'vnc' | 'console'): Promise<string> {
  const { ticket } = await api<{ ticket: string }>('POST', `/vms/${encodeURIComponent(vmId)}/console-ticket`);
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/api/v1/vms/${encodeURIComponent(vmId)}/${channel}?ticket=${encodeURIComponent(ticket)}`;
}

export const fmtBytes = (n: number | null | undefined): string => {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${u[i]}`;
};

export const fmtDuration = (s: number | null | undefined): string => {
  if (s === null || s === undefined || !Number.isFinite(s)) return '—';
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${Math.floor(s % 60)}s`;
  return `${Math.floor(s)}s`;
};
