/**
 * API tokens. A token is `fd_<id>_<secret>`; the store keeps only a SHA-256 of the secret, so
 * reading etcd does not give anyone a token. Lookups are cached and the cache follows a watch,
 * so a revoked token stops working at once without a store read on every request.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { FdError } from '../../core/errors.js';
import type { KvStore } from './kv.js';

export interface TokenRecord {
  id: string;
  name: string;
  hash: string;
  role: 'admin' | 'operator' | 'viewer';
  createdAt: string;
}

export type TokenInfo = Omit<TokenRecord, 'hash'>;

const hashSecret = (secret: string): string => createHash('sha256').update(secret).digest('hex');

export class TokenService {
  private cache = new Map<string, TokenRecord>();
  private stopWatch: (() => Promise<void>) | undefined;

  constructor(private readonly store: KvStore) {}

  async init(): Promise<void> {
    this.stopWatch = await this.store.watch<TokenRecord>('tokens/', (e) => {
      const id = e.key.slice('tokens/'.length);
      if (e.type === 'put') this.cache.set(id, e.value);
      else this.cache.delete(id);
    });
    for (const t of await this.store.list<TokenRecord>('tokens/')) this.cache.set(t.value.id, t.value);
  }

  async create(name: string, role: TokenRecord['role'] = 'admin'): Promise<{ token: string; info: TokenInfo }> {
    const id = randomBytes(6).toString('hex');
    const secret = randomBytes(24).toString('base64url');
    const rec: TokenRecord = { id, name, hash: hashSecret(secret), role, createdAt: new Date().toISOString() };
    await this.store.create(`tokens/${id}`, rec);
    this.cache.set(id, rec);
    const { hash: _hash, ...info } = rec;
    return { token: `fd_${id}_${secret}`, info };
  }

  async list(): Promise<TokenInfo[]> {
    return (await this.store.list<TokenRecord>('tokens/')).map(({ value: { hash: _h, ...info } }) => info);
  }

  async revoke(idOrName: string): Promise<TokenInfo> {
    const all = await this.store.list<TokenRecord>('tokens/');
    const t = all.find((x) => x.value.id === idOrName) ?? all.find((x) => x.value.name === idOrName);
    if (!t)
      throw new FdError('FD_TOKEN_NOT_FOUND', `no token ${idOrName}`, {
        hint: 'list tokens with "flightdeck token list"',
      });
    await this.store.remove(t.key);
    this.cache.delete(t.value.id);
    const { hash: _h, ...info } = t.value;
    return info;
  }

  /** The token's record when `token` is valid, else undefined. */
  async verify(token: string): Promise<TokenRecord | undefined> {
    const m = /^fd_([0-9a-f]{12})_([A-Za-z0-9_-]{20,64})$/.exec(token);
    if (!m) return undefined;
    let rec = this.cache.get(m[1]!);
    if (!rec) {
      rec = (await this.store.get<TokenRecord>(`tokens/${m[1]}`))?.value;
      if (!rec) return undefined;
      this.cache.set(rec.id, rec);
    }
    const a = Buffer.from(rec.hash, 'hex');
    const b = Buffer.from(hashSecret(m[2]!), 'hex');
    return a.length === b.length && timingSafeEqual(a, b) ? rec : undefined;
  }

  async close(): Promise<void> {
    await this.stopWatch?.();
  }
}
