// The fleet: hosts with their capacity, and every VM in a virtualized list (only the rows in
// view are in the DOM, so 10,000 VMs scroll like 10), with search, filters, sort and bulk
// actions. Filtering and sorting happen here, on the SSE-fed cache: no reload.
import { useDeferredValue, useMemo, useRef, useState } from 'react';
import { Link } from 'wouter';
import { useVirtualizer } from '@tanstack/react-virtual';
import { fmtBytes } from '../api';
import { useSession } from '../session';
import { useHosts, useTaskCall, useVms } from '../queries';
import { Dialog, ErrorBox, StateBadge } from '../components/ui';
import { useMedia } from '../components/useMedia';
import type { Vm } from '../types';

type SortKey = 'name' | 'state' | 'host' | 'cpus' | 'memoryBytes';

const ipOf = (v: Vm): string =>
  v.nics
    .map((n) => n.ip)
    .filter(Boolean)
    .join(', ') || '—';
const haOf = (v: Vm): string =>
  [
    v.protection ? `${v.protection.state}${v.protection.standby ? ' → ' + v.protection.standby : ''}` : '',
    v.ha?.enabled ? 'HA' : '',
  ]
    .filter(Boolean)
    .join(' · ') || '—';

export function Fleet() {
  const vms = useVms();
  const hosts = useHosts();
  const { can } = useSession();
  const [q, setQ] = useState('');
  const [state, setState] = useState('');
  const [host, setHost] = useState('');
  const [group, setGroup] = useState('');
  const [sort, setSort] = useState<{ key: SortKey; dir: 1 | -1 }>({ key: 'name', dir: 1 });
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [migrateOpen, setMigrateOpen] = useState(false);
  const call = useTaskCall();
  const query = useDeferredValue(q.trim().toLowerCase());
  const phone = useMedia('(max-width: 700px)');

  const rows = useMemo(() => {
    const list = (vms.data ?? []).filter(
      (v) =>
        (!query || v.name.toLowerCase().includes(query) || v.id.startsWith(query) || ipOf(v).includes(query)) &&
        (!state || v.state === state) &&
        (!host || v.host === host) &&
        (!group || v.antiAffinity === group),
    );
    const k = sort.key;
    return k === 'name' && sort.dir === 1
      ? list
      : [...list].sort((a, b) => {
          const x = a[k];
          const y = b[k];
          return (
            (typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y))) * sort.dir
          );
        });
  }, [vms.data, query, state, host, group, sort]);

  const groups = useMemo(
    () => [...new Set((vms.data ?? []).map((v) => v.antiAffinity).filter((g): g is string => !!g))].sort(),
    [vms.data],
  );
  const parent = useRef<HTMLDivElement>(null);
  const rowHeight = phone ? 92 : 48;
  const virt = useVirtualizer({
    count: rows.length,
    getScrollElement: () => parent.current,
    estimateSize: () => rowHeight,
    overscan: 12,
  });

  const chosen = rows.filter((v) => selected.has(v.id));
  const toggle = (id: string) =>
    setSelected((s) => {
      const n = new Set(s);
      if (n.has(id)) n.delete(id);
      else n.add(id);
      return n;
    });
  const bulk = (verb: string) => {
    for (const v of chosen) {
      if (verb === 'delete') call.mutate({ method: 'DELETE', path: `/vms/${v.id}?force=true` });
      else call.mutate({ method: 'POST', path: `/vms/${v.id}/actions/${verb}`, body: {} });
    }
    if (verb === 'delete') setSelected(new Set());
  };
  const sortButton = (key: SortKey, label: string) => (
    <button
      type="button"
      className="sort"
      aria-sort={sort.key === key ? (sort.dir === 1 ? 'ascending' : 'descending') : 'none'}
      onClick={() => setSort((s) => ({ key, dir: s.key === key ? (-s.dir as 1 | -1) : 1 }))}
    >
      {label}
      {sort.key === key ? (sort.dir === 1 ? ' ▲' : ' ▼') : ''}
    </button>
  );

  return (
    <div className="fleet">
      <section aria-label="Hosts" className="hosts">
        <h2>Hosts</h2>
        <ErrorBox error={hosts.error} />
        <ul className="host-cards">
          {(hosts.data ?? []).map((h) => {
            const used = h.memoryBytes - h.freeMemoryBytes;
            const running = (vms.data ?? []).filter((v) => v.host === h.name && v.state === 'running');
            return (
              <li key={h.name} className={`card host-${h.state}`}>
                <strong>{h.name}</strong> <span className={`badge host-state-${h.state}`}>{h.state}</span>
                {h.leader && <span className="badge leader">leader</span>}
                <div>
                  {h.cpus} CPUs · {running.reduce((a, v) => a + v.cpus, 0)} vCPUs running · {h.accel}
                </div>
                <div>
                  memory {fmtBytes(used)} used, {fmtBytes(h.freeMemoryBytes)} free
                  <meter min={0} max={h.memoryBytes} value={used} aria-label={`${h.name} memory used`} />
                </div>
              </li>
            );
          })}
        </ul>
      </section>

      <section aria-label="Virtual machines" className="vms">
        <h2>
          VMs <span className="count">{vms.data ? `${rows.length} of ${vms.data.length}` : ''}</span>
        </h2>
        <div className="filters" role="search">
          <input
            type="search"
            aria-label="Search VMs"
            placeholder="Search by name, id or IP"
            value={q}
            onChange={(e) => setQ(e.target.value)}
          />
          <select aria-label="Filter by state" value={state} onChange={(e) => setState(e.target.value)}>
            <option value="">Any state</option>
            {['running', 'stopped', 'paused', 'starting', 'stopping', 'crashed', 'unknown'].map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
          <select aria-label="Filter by host" value={host} onChange={(e) => setHost(e.target.value)}>
            <option value="">Any host</option>
            {(hosts.data ?? []).map((h) => (
              <option key={h.name}>{h.name}</option>
            ))}
          </select>
          <select aria-label="Filter by group" value={group} onChange={(e) => setGroup(e.target.value)}>
            <option value="">Any group</option>
            {groups.map((g) => (
              <option key={g}>{g}</option>
            ))}
          </select>
        </div>
        {can('write') && (
          <div className="bulk" role="toolbar" aria-label="Bulk actions">
            <span>{chosen.length} selected</span>
            {(['start', 'shutdown', 'stop'] as const).map((verb) => (
              <button key={verb} type="button" disabled={!chosen.length} onClick={() => bulk(verb)}>
                {verb[0]!.toUpperCase() + verb.slice(1)}
              </button>
            ))}
            <button type="button" disabled={!chosen.length} onClick={() => setMigrateOpen(true)}>
              Migrate
            </button>
            <button
              type="button"
              className="danger"
              disabled={!chosen.length}
              onClick={() => confirm(`Delete ${chosen.length} VM(s) and their disks?`) && bulk('delete')}
            >
              Delete
            </button>
          </div>
        )}
        <ErrorBox error={vms.error ?? call.error} />
        <div className="vm-head" role="row">
          {can('write') && (
            <input
              type="checkbox"
              aria-label="Select all shown"
              checked={rows.length > 0 && chosen.length === rows.length}
              onChange={(e) => setSelected(e.target.checked ? new Set(rows.map((v) => v.id)) : new Set())}
            />
          )}
          {sortButton('name', 'Name')}
          {sortButton('state', 'State')}
          {sortButton('host', 'Host')}
          {sortButton('cpus', 'CPUs')}
          {sortButton('memoryBytes', 'Memory')}
          <span>IP</span>
          <span>Mirror / HA</span>
        </div>
        <div ref={parent} className="vm-scroll" data-testid="vm-list">
          <div style={{ height: virt.getTotalSize(), position: 'relative' }}>
            {virt.getVirtualItems().map((item) => {
              const v = rows[item.index]!;
              return (
                <div
                  key={v.id}
                  className="vm-row"
                  style={{ transform: `translateY(${item.start}px)`, height: rowHeight }}
                  data-state={v.state}
                >
                  {can('write') && (
                    <input
                      type="checkbox"
                      aria-label={`Select ${v.name}`}
                      checked={selected.has(v.id)}
                      onChange={() => toggle(v.id)}
                    />
                  )}
                  <Link href={`/vms/${encodeURIComponent(v.name)}`} className="vm-name">
                    {v.name}
                  </Link>
                  <StateBadge state={v.state} />
                  <span>{v.host}</span>
                  <span>{v.cpus} CPU</span>
                  <span>{fmtBytes(v.memoryBytes)}</span>
                  <span>{ipOf(v)}</span>
                  <span>{haOf(v)}</span>
                </div>
              );
            })}
          </div>
        </div>
        {vms.data && rows.length === 0 && <p>No VM matches.</p>}
      </section>
      <MigrateDialog open={migrateOpen} onClose={() => setMigrateOpen(false)} vms={chosen} />
    </div>
  );
}

/** Target hosts the API allows: online, not the VM's own, with room for its memory. */
export function MigrateDialog({ open, onClose, vms }: { open: boolean; onClose: () => void; vms: Vm[] }) {
  const hosts = useHosts();
  const call = useTaskCall();
  const [to, setTo] = useState('');
  const need = Math.max(0, ...vms.map((v) => v.memoryBytes));
  const targets = (hosts.data ?? []).filter(
    (h) => h.state === 'online' && h.freeMemoryBytes >= need && vms.some((v) => v.host !== h.name),
  );
  return (
    <Dialog title={`Migrate ${vms.length === 1 ? vms[0]!.name : `${vms.length} VMs`}`} open={open} onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          for (const v of vms)
            call.mutate({ method: 'POST', path: `/vms/${v.id}/actions/migrate`, body: to ? { to } : {} });
          onClose();
        }}
      >
        <fieldset>
          <legend>Target host</legend>
          <label className="radio">
            <input type="radio" name="to" value="" checked={to === ''} onChange={() => setTo('')} /> Placement chooses
          </label>
          {targets.map((h) => (
            <label key={h.name} className="radio">
              <input type="radio" name="to" value={h.name} checked={to === h.name} onChange={() => setTo(h.name)} />
              {h.name} ({fmtBytes(h.freeMemoryBytes)} free)
            </label>
          ))}
          {targets.length === 0 && <p>No other online host has room.</p>}
        </fieldset>
        <p>Running VMs move live with their disks; the task panel shows the progress.</p>
        <button type="submit" className="primary" disabled={targets.length === 0}>
          Migrate
        </button>
      </form>
    </Dialog>
  );
}
