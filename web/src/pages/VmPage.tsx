// One VM: summary with a live screenshot, hardware, protection and HA, its tasks, and graphs
// of the last hour. The buttons are the actions its state allows and the role permits.
import { useEffect, useState, useSyncExternalStore } from 'react';
import { Link, useLocation } from 'wouter';
import { useQuery } from '@tanstack/react-query';
import { api, fmtBytes, fmtDuration, getToken } from '../api';
import { useSession } from '../session';
import { useHosts, useTaskCall, useTasks, useVm, type Action } from '../queries';
import { Dialog, ErrorBox, Field, StateBadge, TaskState } from '../components/ui';
import { MigrateDialog } from './Fleet';
import { Graphs } from './Graphs';
import type { Vm } from '../types';

const TABS = ['Summary', 'Hardware', 'Protection', 'Tasks', 'Graphs'] as const;
type Tab = (typeof TABS)[number];

function Screenshot({ vm }: { vm: Vm }) {
  const live = vm.state === 'running' || vm.state === 'paused';
  const shot = useQuery({
    queryKey: ['screenshot', vm.id],
    enabled: live,
    refetchInterval: 5000,
    queryFn: async () => {
      const res = await fetch(`/api/v1/vms/${vm.id}/screenshot`, {
        headers: { authorization: `Bearer ${getToken()}` },
      });
      if (!res.ok) return null;
      return URL.createObjectURL(await res.blob());
    },
  });
  useEffect(() => () => void (shot.data && URL.revokeObjectURL(shot.data)), [shot.data]);
  if (!live) return <div className="screen-off">{vm.state}</div>;
  return shot.data ? (
    <img className="screen" src={shot.data} alt={`Screen of ${vm.name}`} />
  ) : (
    <div className="screen-off">…</div>
  );
}

/** The time now, to the second, re-rendering as it passes (for the uptime). */
const subscribeSecond = (cb: () => void) => {
  const t = setInterval(cb, 1000);
  return () => clearInterval(t);
};
const nowSecond = () => Math.floor(Date.now() / 1000) * 1000;
const useNow = () => useSyncExternalStore(subscribeSecond, nowSecond);

function actionsFor(vm: Vm): Action[] {
  switch (vm.state) {
    case 'running':
      return ['shutdown', 'stop', 'pause', 'reboot'];
    case 'paused':
      return ['resume', 'stop'];
    case 'stopped':
    case 'crashed':
      return ['start'];
    default:
      return ['stop'];
  }
}

export function VmPage({ name }: { name: string }) {
  const { vm, error, isLoading } = useVm(name);
  const { can } = useSession();
  const [tab, setTab] = useState<Tab>('Summary');
  const [dialog, setDialog] = useState<'' | 'migrate' | 'protect' | 'ha' | 'failover'>('');
  const call = useTaskCall();
  const [, go] = useLocation();
  const now = useNow();
  if (isLoading) return <p>Loading…</p>;
  if (!vm) return <ErrorBox error={error ?? new Error(`no VM ${name}`)} />;
  const act = (a: Action) => call.mutate({ method: 'POST', path: `/vms/${vm.id}/actions/${a}`, body: {} });
  const live = vm.state === 'running' || vm.state === 'paused';
  return (
    <article className="vm-page">
      <header className="vm-title">
        <h1>{vm.name}</h1>
        <StateBadge state={vm.state} />
        <div className="actions" role="toolbar" aria-label="VM actions">
          {can('write') &&
            actionsFor(vm).map((a) => (
              <button key={a} type="button" onClick={() => act(a)} disabled={call.isPending}>
                {a[0]!.toUpperCase() + a.slice(1)}
              </button>
            ))}
          {can('write') && (
            <Link href={`/vms/${encodeURIComponent(vm.name)}/console`} className="button primary">
              Console
            </Link>
          )}
          {can('write') && (
            <Link href={`/vms/${encodeURIComponent(vm.name)}/serial`} className="button">
              Serial
            </Link>
          )}
          {can('write') && vm.state === 'running' && (
            <button type="button" onClick={() => setDialog('migrate')}>
              Migrate
            </button>
          )}
          {can('write') && (
            <button
              type="button"
              className="danger"
              onClick={() => {
                if (!confirm(`Delete ${vm.name} and its disks?`)) return;
                call.mutate({ method: 'DELETE', path: `/vms/${vm.id}?force=true` }, { onSuccess: () => go('/') });
              }}
            >
              Delete
            </button>
          )}
        </div>
      </header>
      <ErrorBox error={call.error} />
      {vm.lastError && <p className="error">{vm.lastError}</p>}
      <div role="tablist" aria-label="VM details" className="tabs">
        {TABS.map((t) => (
          <button key={t} role="tab" type="button" aria-selected={tab === t} onClick={() => setTab(t)}>
            {t}
          </button>
        ))}
      </div>
      <section role="tabpanel" aria-label={tab}>
        {tab === 'Summary' && (
          <div className="summary">
            <Screenshot vm={vm} />
            <dl>
              <dt>State</dt>
              <dd>
                {vm.state} (desired {vm.desired})
              </dd>
              <dt>Host</dt>
              <dd>{vm.host}</dd>
              <dt>Uptime</dt>
              <dd>{live && vm.since ? fmtDuration(Math.max(0, now - Date.parse(vm.since)) / 1000) : '—'}</dd>
              <dt>IP addresses</dt>
              <dd>{vm.nics.map((n) => n.ip ?? `DHCP on ${n.network}`).join(', ') || 'no NIC'}</dd>
              <dt>CPUs / memory</dt>
              <dd>
                {vm.cpus} / {fmtBytes(vm.memoryBytes)}
              </dd>
              <dt>Image</dt>
              <dd>{vm.image ?? '—'}</dd>
              <dt>Restart policy</dt>
              <dd>
                {vm.restartPolicy}, {vm.restarts} restarts
              </dd>
              <dt>Id</dt>
              <dd>
                <code>{vm.id}</code>
              </dd>
            </dl>
          </div>
        )}
        {tab === 'Hardware' && <Hardware vm={vm} />}
        {tab === 'Protection' && (
          <div>
            <h2>Mirroring</h2>
            {vm.protection ? (
              <dl>
                <dt>State</dt>
                <dd>{vm.protection.state}</dd>
                <dt>Standby</dt>
                <dd>{vm.protection.standby ?? '— (looking for one)'}</dd>
                <dt>Since</dt>
                <dd>{new Date(vm.protection.since).toLocaleString()}</dd>
                {vm.protection.progress && (
                  <>
                    <dt>Initial sync</dt>
                    <dd>
                      <progress
                        max={vm.protection.progress.total}
                        value={vm.protection.progress.done}
                        aria-label="Initial sync"
                      />
                    </dd>
                  </>
                )}
                {vm.protection.lastError && (
                  <>
                    <dt>Last error</dt>
                    <dd>{vm.protection.lastError}</dd>
                  </>
                )}
              </dl>
            ) : (
              <p>Not protected: its disks are on {vm.host} only.</p>
            )}
            {can('write') && (
              <div className="actions">
                {!vm.protection && (
                  <button type="button" onClick={() => setDialog('protect')}>
                    Protect
                  </button>
                )}
                {vm.protection && (
                  <button
                    type="button"
                    onClick={() => call.mutate({ method: 'POST', path: `/vms/${vm.id}/actions/unprotect`, body: {} })}
                  >
                    Unprotect
                  </button>
                )}
                {vm.protection?.state === 'protected' && (
                  <button type="button" onClick={() => setDialog('failover')}>
                    Failover
                  </button>
                )}
              </div>
            )}
            <h2>High availability</h2>
            <p>
              {vm.ha?.enabled
                ? `On: priority ${vm.ha.priority}, at most ${vm.ha.maxRestarts} crash restarts in 10 minutes`
                : 'Off'}
            </p>
            {can('write') && (
              <button type="button" onClick={() => setDialog('ha')}>
                HA settings
              </button>
            )}
          </div>
        )}
        {tab === 'Tasks' && <VmTasks vm={vm} />}
        {tab === 'Graphs' && <Graphs vm={vm} />}
      </section>
      <MigrateDialog open={dialog === 'migrate'} onClose={() => setDialog('')} vms={[vm]} />
      <ProtectDialog open={dialog === 'protect'} onClose={() => setDialog('')} vm={vm} />
      <HaDialog open={dialog === 'ha'} onClose={() => setDialog('')} vm={vm} />
      <Dialog title={`Failover ${vm.name}`} open={dialog === 'failover'} onClose={() => setDialog('')}>
        <p>
          {vm.name} moves to its standby {vm.protection?.standby} with nothing written lost; the mirror then runs the
          other way.
        </p>
        <button
          type="button"
          className="primary"
          onClick={() => {
            call.mutate({ method: 'POST', path: `/vms/${vm.id}/actions/failover`, body: {} });
            setDialog('');
          }}
        >
          Fail over now
        </button>
      </Dialog>
    </article>
  );
}

function Hardware({ vm }: { vm: Vm }) {
  const disks = useQuery({
    queryKey: ['vm-disks', vm.id, vm.disks.map((d) => d.diskId).join()],
    queryFn: () => Promise.all(vm.disks.map((d) => api<Record<string, unknown>>('GET', `/disks/${d.diskId}`))),
  });
  return (
    <div>
      <h2>Disks</h2>
      <ErrorBox error={disks.error} />
      <ul>
        {(disks.data ?? []).map((d, i) => (
          <li key={i}>
            <strong>{String(d['name'] ?? vm.disks[i]?.diskId)}</strong> {String(d['format'] ?? '')} ·{' '}
            {fmtBytes(Number(d['sizeBytes']))}
            {d['baseImage'] ? ` · over image ${String(d['baseImage'])}` : ''}
            {Array.isArray(d['chain']) && (
              <ol className="chain" aria-label="Chain">
                {(d['chain'] as { path?: string; type?: string }[]).map((c, j) => (
                  <li key={j}>
                    {c.type ?? ''} {c.path ?? ''}
                  </li>
                ))}
              </ol>
            )}
          </li>
        ))}
      </ul>
      <h2>Network</h2>
      <ul>
        {vm.nics.map((n) => (
          <li key={n.id}>
            {n.mac} on {n.network}
            {n.ip ? ` · ${n.ip}` : ''}
          </li>
        ))}
      </ul>
      <h2>CD-ROM</h2>
      <ul>
        {vm.cdroms.map((c) => (
          <li key={c.id}>
            {c.image ?? c.path ?? 'empty'} ({c.bus})
          </li>
        ))}
        {vm.cdroms.length === 0 && <li>none</li>}
      </ul>
      <h2>Machine</h2>
      <p>
        {vm.machine}, {vm.firmware}, boot {vm.boot.join(', ') || 'kernel'}
      </p>
    </div>
  );
}

function VmTasks({ vm }: { vm: Vm }) {
  const tasks = useTasks();
  const mine = (tasks.data ?? []).filter((t) => t.target?.id === vm.id || t.target?.name === vm.name);
  return (
    <ul className="task-list">
      {mine.map((t) => (
        <li key={t.id}>
          <Link href={`/tasks/${t.id}`}>{t.title}</Link> <TaskState task={t} />{' '}
          <time dateTime={t.createdAt}>{new Date(t.createdAt).toLocaleString()}</time>
        </li>
      ))}
      {mine.length === 0 && <li>No task yet.</li>}
    </ul>
  );
}

function ProtectDialog({ open, onClose, vm }: { open: boolean; onClose: () => void; vm: Vm }) {
  const hosts = useHosts();
  const call = useTaskCall();
  const [standby, setStandby] = useState('');
  const choices = (hosts.data ?? []).filter((h) => h.state === 'online' && h.name !== vm.host);
  return (
    <Dialog title={`Protect ${vm.name}`} open={open} onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          call.mutate(
            { method: 'POST', path: `/vms/${vm.id}/actions/protect`, body: standby ? { standby } : {} },
            { onSuccess: onClose },
          );
        }}
      >
        <Field label="Standby host">
          <select value={standby} onChange={(e) => setStandby(e.target.value)}>
            <option value="">Any host with room</option>
            {choices.map((h) => (
              <option key={h.name} value={h.name}>
                {h.name} ({fmtBytes(h.freeMemoryBytes)} free)
              </option>
            ))}
          </select>
        </Field>
        {choices.length === 0 && <p>There is no other online host: protection needs a second host.</p>}
        <ErrorBox error={call.error} />
        <button type="submit" className="primary">
          Protect
        </button>
      </form>
    </Dialog>
  );
}

function HaDialog({ open, onClose, vm }: { open: boolean; onClose: () => void; vm: Vm }) {
  const call = useTaskCall();
  const [enabled, setEnabled] = useState(vm.ha?.enabled ?? false);
  const [priority, setPriority] = useState(vm.ha?.priority ?? 0);
  const [maxRestarts, setMax] = useState(vm.ha?.maxRestarts ?? 3);
  return (
    <Dialog title={`High availability of ${vm.name}`} open={open} onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          call.mutate(
            {
              method: 'POST',
              path: `/vms/${vm.id}/ha`,
              body: { ...(enabled ? { enable: true } : { disable: true }), priority, maxRestarts },
            },
            { onSuccess: onClose },
          );
        }}
      >
        <label className="radio">
          <input type="checkbox" checked={enabled} onChange={(e) => setEnabled(e.target.checked)} /> Restart after a
          crash or a lost host
        </label>
        <Field label="Priority (higher first)">
          <input
            type="number"
            min={0}
            max={1000}
            value={priority}
            onChange={(e) => setPriority(Number(e.target.value))}
          />
        </Field>
        <Field label="Crash restarts within 10 minutes">
          <input type="number" min={0} max={100} value={maxRestarts} onChange={(e) => setMax(Number(e.target.value))} />
        </Field>
        <ErrorBox error={call.error} />
        <button type="submit" className="primary">
          Save
        </button>
      </form>
    </Dialog>
  );
}
