/**
 * Ordering of in-flight requests on one device, shared by every connection of a server.
 * QEMU pipelines up to 16 requests per connection and the device completes them in any
 * order, so: a write (or zero/trim) waits for every earlier request that overlaps it, a read
 * waits for earlier overlapping writes, and a flush waits for every earlier write. Requests
 * that touch different ranges run concurrently. The common case (no overlap) allocates
 * nothing beyond the Op record.
 */
export type OpKind = 'read' | 'write' | 'flush';

export class Op {
  /** Resolves when every earlier conflicting op has finished; null when there was none. */
  ready: Promise<void> | null = null;
  /** Earlier ops still blocking this one. */
  blockers = 0;
  /** Ops that wait for this one. */
  waiters: Op[] | null = null;
  release: (() => void) | null = null;

  constructor(
    readonly kind: OpKind,
    readonly start: number,
    readonly end: number,
  ) {}
}

export class IoOrder {
  private readonly active: Op[] = [];
  private idleWaiters: (() => void)[] = [];

  get inFlight(): number {
    return this.active.length;
  }

  /** Registers a request in arrival order; await `op.ready` (when set) before touching the device. */
  enter(kind: OpKind, start: number, end: number): Op {
    const op = new Op(kind, start, end);
    for (const prev of this.active) {
      if (conflicts(prev, op)) {
        (prev.waiters ??= []).push(op);
        op.blockers++;
      }
    }
    if (op.blockers > 0) op.ready = new Promise<void>((resolve) => (op.release = resolve));
    this.active.push(op);
    return op;
  }

  /** Marks an op finished (on success and on error alike) and wakes what waited for it. */
  leave(op: Op): void {
    const i = this.active.indexOf(op);
    if (i < 0) throw new Error('IoOrder.leave: op is not active');
    this.active.splice(i, 1);
    if (op.waiters) {
      for (const w of op.waiters) {
        if (--w.blockers === 0) w.release!();
      }
    }
    if (this.active.length === 0 && this.idleWaiters.length) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves when no op is in flight (used by fence and close). */
  idle(): Promise<void> {
    if (this.active.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

function conflicts(prev: Op, next: Op): boolean {
  if (next.kind === 'flush') return prev.kind === 'write';
  if (prev.kind === 'flush') return false;
  if (prev.kind === 'read' && next.kind === 'read') return false;
  return prev.start < next.end && next.start < prev.end;
}
