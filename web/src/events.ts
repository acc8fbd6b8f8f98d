// Live state: the daemon's Server-Sent Events (/api/v1/events) patch TanStack Query's cache,
// so lists and pages change without a reload or a poll. EventSource cannot send a header, so
// the stream is read with fetch and parsed by eventsource-parser. Events are applied in
// batches (one render per 100 ms at most), which keeps a 10,000-VM fleet smooth.
import { createParser } from 'eventsource-parser';
import type { QueryClient } from '@tanstack/react-query';
import { getToken, toApiError, type ApiError } from './api';
import type { Protection, Task, Vm } from './types';

interface StoreEvent {
  op: 'put' | 'delete';
  key: string;
  value?: unknown;
}

type Pending = { type: string; e: StoreEvent };

export const qk = {
  vms: ['vms'] as const,
  hosts: ['hosts'] as const,
  tasks: ['tasks'] as const,
  task: (id: string) => ['task', id] as const,
};

function applyVm(list: Vm[], e: StoreEvent): Vm[] {
  const id = e.key.slice('vms/'.length);
  const i = list.findIndex((v) => v.id === id);
  if (e.op === 'delete') return i < 0 ? list : list.filter((v) => v.id !== id);
  const rec = e.value as Partial<Vm>;
  const next = [...list];
  if (i >= 0) next[i] = { ...list[i]!, ...rec };
  else {
    const state = rec.desired === 'stopped' ? 'stopped' : 'unknown';
    const v = { pid: null, lastError: null, restarts: 0, since: null, protection: null, state, ...rec } as Vm;
    const at = next.findIndex((x) => x.name.localeCompare(v.name) > 0);
    next.splice(at < 0 ? next.length : at, 0, v);
  }
  return next;
}

function applyStatus(list: Vm[], e: StoreEvent): Vm[] {
  const id = e.key.slice('status/vms/'.length);
  const i = list.findIndex((v) => v.id === id);
  if (i < 0 || e.op === 'delete') return list;
  const s = e.value as Pick<Vm, 'state' | 'pid' | 'lastError' | 'restarts' | 'since'>;
  const next = [...list];
  next[i] = { ...list[i]!, state: s.state, pid: s.pid, lastError: s.lastError, restarts: s.restarts, since: s.since };
  return next;
}

function applyProtection(list: Vm[], e: StoreEvent): Vm[] {
  const id = e.key.slice('protection/'.length);
  const i = list.findIndex((v) => v.id === id);
  if (i < 0) return list;
  const next = [...list];
  next[i] = { ...list[i]!, protection: e.op === 'delete' ? null : (e.value as Protection) };
  return next;
}

function applyTask(list: Task[] | undefined, t: Task): Task[] | undefined {
  if (!list) return list;
  const i = list.findIndex((x) => x.id === t.id);
  if (i >= 0) {
    const next = [...list];
    next[i] = t;
    return next;
  }
  return [t, ...list];
}

/** Streams events until `signal` aborts; reconnects after a broken stream. */
export async function streamEvents(qc: QueryClient, signal: AbortSignal, onAuthError: (e: ApiError) => void) {
  let pending: Pending[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = (): void => {
    timer = undefined;
    const batch = pending;
    pending = [];
    let vmsChanged = false;
    let vms = qc.getQueryData<Vm[]>(qk.vms);
    for (const { type, e } of batch) {
      if (type === 'host') {
        void qc.invalidateQueries({ queryKey: qk.hosts });
      } else if (type === 'task' && e.op === 'put') {
        const t = e.value as Task;
        qc.setQueryData<Task[]>(qk.tasks, (l) => applyTask(l, t));
        qc.setQueryData(qk.task(t.id), t);
      } else if (vms) {
        vms = type === 'vm' ? applyVm(vms, e) : type === 'status' ? applyStatus(vms, e) : applyProtection(vms, e);
        vmsChanged = true;
      }
    }
    if (vmsChanged && vms) {
      qc.setQueryData(qk.vms, vms);
      for (const v of vms) if (qc.getQueryData(['vm', v.name])) qc.setQueryData(['vm', v.name], v);
    }
  };
  let backoffMs = 500;
  while (!signal.aborted) {
    try {
      const res = await fetch('/api/v1/events?types=vm,status,task,protection,host', {
        headers: { authorization: `Bearer ${getToken() ?? ''}` },
        signal,
      });
      if (res.status === 401) {
        onAuthError(toApiError(401, await res.json().catch(() => null)));
        return;
      }
      if (!res.ok || !res.body) throw new Error(`events: HTTP ${res.status}`);
      // Whatever happened while the stream was down: read it again once.
      void qc.invalidateQueries();
      backoffMs = 500;
      const parser = createParser({
        onEvent: (ev) => {
          pending.push({ type: ev.event ?? 'message', e: JSON.parse(ev.data) as StoreEvent });
          timer ??= setTimeout(flush, 100);
        },
      });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(value);
      }
    } catch {
      if (signal.aborted) return;
    }
    await new Promise((r) => setTimeout(r, backoffMs));
    backoffMs = Math.min(backoffMs * 2, 10_000);
  }
}
