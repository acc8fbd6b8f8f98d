/**
 * One lock per key (a VM id): work on one key runs one piece after another, in the order it
 * was asked for, while work on different keys runs side by side. A piece that fails does not
 * stop the ones queued behind it. This is how parallel API calls on one VM end in a
 * consistent state without any of them being refused.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `fn` once every earlier piece for `key` has settled. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn);
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /** Runs `fn` holding every key's lock, taken in sorted order so two callers never deadlock. */
  runAll<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    const [first, ...rest] = [...new Set(keys)].sort();
    if (first === undefined) return fn();
    return this.run(first, () => this.runAll(rest, fn));
  }

  /** Whether some piece of work holds or waits for `key`. */
  busy(key: string): boolean {
    return this.tails.has(key);
  }

  /** Resolves once everything queued so far has settled (shutdown). */
  async settled(): Promise<void> {
    await Promise.all([...this.tails.values()]);
  }
}
