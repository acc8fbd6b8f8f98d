// Create a VM (image or ISO, CPUs, memory, disk, network, cloud-init), and upload an ISO or a
// disk image with a progress bar (the daemon then imports it as a task).
import { useState, type FormEvent } from 'react';
import { useLocation } from 'wouter';
import { useQueryClient } from '@tanstack/react-query';
import { upload } from '../api';
import { useImages, useNetworks, useTaskCall } from '../queries';
import { ErrorBox, Field } from '../components/ui';
import type { Task } from '../types';

export function CreateVm() {
  const images = useImages();
  const networks = useNetworks();
  const call = useTaskCall();
  const [, go] = useLocation();
  const [f, setF] = useState({
    name: '',
    source: 'image:tiny',
    cpus: 1,
    memory: '256M',
    diskSize: '',
    network: 'default',
    user: '',
    sshKey: '',
    hostname: '',
    password: '',
    start: true,
  });
  const set = (k: keyof typeof f) => (e: { target: { value: string } }) => setF({ ...f, [k]: e.target.value });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const [kind, src] = f.source.split(':') as ['image' | 'iso' | 'none', string];
    const ci = Object.fromEntries(
      (['user', 'sshKey', 'hostname', 'password'] as const).filter((k) => f[k]).map((k) => [k, f[k]]),
    );
    call.mutate(
      {
        method: 'POST',
        path: '/vms',
        body: {
          name: f.name,
          ...(kind === 'image' ? { image: src } : kind === 'iso' ? { iso: src } : {}),
          cpus: f.cpus,
          memory: f.memory,
          ...(f.diskSize ? { diskSize: f.diskSize } : {}),
          network: f.network,
          ...(Object.keys(ci).length ? { cloudInit: ci } : {}),
          start: f.start,
        },
      },
      { onSuccess: (t) => go(`/tasks/${t.id}`) },
    );
  };
  return (
    <div className="page-form">
      <h1>Create VM</h1>
      <form onSubmit={submit} aria-label="Create VM">
        <Field label="Name">
          <input required value={f.name} onChange={set('name')} pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,62}" />
        </Field>
        <Field label="Boot from">
          <select value={f.source} onChange={set('source')}>
            {(images.data ?? []).map((i) => (
              <option key={i.name} value={`${i.kind === 'iso' ? 'iso' : 'image'}:${i.name}`}>
                {i.kind === 'iso' ? 'ISO' : 'image'} {i.name}
              </option>
            ))}
            <option value="none:">empty disk (network boot)</option>
          </select>
        </Field>
        <Field label="CPUs">
          <input
            type="number"
            min={1}
            max={64}
            value={f.cpus}
            onChange={(e) => setF({ ...f, cpus: Number(e.target.value) })}
          />
        </Field>
        <Field label="Memory" help="e.g. 256M, 2G">
          <input required value={f.memory} onChange={set('memory')} />
        </Field>
        <Field label="Disk size" help="empty: the image's size; needed for an ISO install, e.g. 16G">
          <input value={f.diskSize} onChange={set('diskSize')} />
        </Field>
        <Field label="Network">
          <select value={f.network} onChange={set('network')}>
            {(networks.data ?? []).map((n) => (
              <option key={n.name}>{n.name}</option>
            ))}
            <option value="none">none</option>
          </select>
        </Field>
        <fieldset>
          <legend>Cloud-init (cloud images)</legend>
          <Field label="User">
            <input value={f.user} onChange={set('user')} autoComplete="off" />
          </Field>
          <Field label="SSH key">
            <input value={f.sshKey} onChange={set('sshKey')} autoComplete="off" />
          </Field>
          <Field label="Hostname">
            <input value={f.hostname} onChange={set('hostname')} autoComplete="off" />
          </Field>
          <Field label="Password">
            <input type="password" value={f.password} onChange={set('password')} autoComplete="new-password" />
          </Field>
        </fieldset>
        <label className="radio">
          <input type="checkbox" checked={f.start} onChange={(e) => setF({ ...f, start: e.target.checked })} /> Start it
          once created
        </label>
        <ErrorBox error={call.error} />
        <button type="submit" className="primary" disabled={call.isPending}>
          Create
        </button>
      </form>
      <UploadImage />
    </div>
  );
}

function UploadImage() {
  const qc = useQueryClient();
  const [file, setFile] = useState<File | null>(null);
  const [name, setName] = useState('');
  const [sent, setSent] = useState<{ done: number; total: number } | null>(null);
  const [err, setErr] = useState<unknown>(null);
  const [, go] = useLocation();
  return (
    <form
      aria-label="Upload an ISO or disk image"
      onSubmit={(e) => {
        e.preventDefault();
        if (!file) return;
        setErr(null);
        upload<Task>(`/images/${encodeURIComponent(name)}/upload`, file, (done, total) =>
          setSent({ done, total }),
        ).then(
          (t) => {
            void qc.invalidateQueries({ queryKey: ['images'] });
            go(`/tasks/${t.id}`);
          },
          (x: unknown) => {
            setErr(x);
            setSent(null);
          },
        );
      }}
    >
      <h2>Upload an ISO or a disk image</h2>
      <Field label="File" help="ISO, qcow2, raw, VMDK or VHD: disks are converted to VHD">
        <input
          type="file"
          required
          onChange={(e) => {
            const x = e.target.files?.[0] ?? null;
            setFile(x);
            if (x && !name) setName(x.name.replace(/\.[^.]+$/, '').replace(/[^A-Za-z0-9._-]/g, '-'));
          }}
        />
      </Field>
      <Field label="Image name">
        <input required value={name} onChange={(e) => setName(e.target.value)} />
      </Field>
      {sent && <progress max={sent.total} value={sent.done} aria-label="Upload progress" />}
      {sent && <span>{Math.round((sent.done / Math.max(1, sent.total)) * 100)}% sent</span>}
      <ErrorBox error={err} />
      <button type="submit" disabled={!file || !!sent}>
        Upload
      </button>
    </form>
  );
}
