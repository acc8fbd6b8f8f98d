// Server state as TanStack Query hooks; SSE (events.ts) keeps them fresh, so none polls
// except the screenshot and the metrics, which have no events.
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { api } from './api';
import { qk } from './events';
import type { Host, Image, Network, Task, Vm, VmSample } from './types';

export const useVms = () => useQuery({ queryKey: qk.vms, queryFn: () => api<Vm[]>('GET', '/vms'), staleTime: 60_000 });
export const useHosts = () =>
  useQuery({ queryKey: qk.hosts, queryFn: () => api<Host[]>('GET', '/hosts'), refetchInterval: 15_000 });
export const useTasks = () =>
  useQuery({ queryKey: qk.tasks, queryFn: () => api<Task[]>('GET', '/tasks?limit=200'), staleTime: 60_000 });
export const useTask = (id: string) =>
  useQuery({ queryKey: qk.task(id), queryFn: () => api<Task>('GET', `/tasks/${encodeURIComponent(id)}`) });
export const useImages = () => useQuery({ queryKey: ['images'], queryFn: () => api<Image[]>('GET', '/images') });
export const useNetworks = () =>
  useQuery({ queryKey: ['networks'], queryFn: () => api<Network[]>('GET', '/networks') });

/** One VM by name: from the fleet list when it is loaded (SSE keeps it), else fetched. */
export function useVm(name: string) {
  const vms = useVms();
  const fromList = vms.data?.find((v) => v.name === name);
  const one = useQuery({
    queryKey: ['vm', name],
    queryFn: () => api<Vm>('GET', `/vms/${encodeURIComponent(name)}`),
    enabled: !fromList && !vms.isLoading,
  });
  return { vm: fromList ?? one.data, error: one.error ?? vms.error, isLoading: vms.isLoading || one.isLoading };
}

export const useVmMetrics = (vm: Vm | undefined) =>
  useQuery({
    queryKey: ['metrics', vm?.id],
    queryFn: () => api<{ intervalMs: number; samples: VmSample[] }>('GET', `/vms/${vm!.id}/metrics`),
    enabled: !!vm,
    refetchInterval: 10_000,
  });

export type Action = 'start' | 'shutdown' | 'stop' | 'pause' | 'resume' | 'reboot';

/** Runs an API call that answers a task; the task shows up in the task panel through SSE. */
export function useTaskCall() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: ({ method, path, body }: { method: string; path: string; body?: unknown }) =>
      api<Task>(method, path, body),
    onSuccess: (t) => {
      if (t && typeof t === 'object' && 'id' in t) {
        qc.setQueryData(qk.task(t.id), t);
        qc.setQueryData<Task[]>(qk.tasks, (l) => (l && !l.some((x) => x.id === t.id) ? [t, ...l] : l));
      }
    },
  });
}
