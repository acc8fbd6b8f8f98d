// OVA import: upload the package (progress bar), read what the daemon found in it (virtual
// systems, properties, license texts), and only then import: the EULA must be accepted and
// the properties filled before anything is created.
import { useState } from 'react';
import { useLocation } from 'wouter';
import { fmtBytes, upload } from '../api';
import { useTaskCall } from '../queries';
import { ErrorBox, Field } from '../components/ui';

interface Inspected {
  upload: string;
  eulas: string[];
  configurations: string[];
  systems: {
    id: string;
    name: string;
    vcpus: number;
    memoryBytes?: number;
    os?: string;
    properties: {
      key: string;
      fullKey: string;
      type: string;
      label?: string;
      description?: string;
      defaultValue?: string;
      userConfigurable: boolean;
      password: boolean;
    }[];
  }[];
  warnings: string[];
}

export function ImportOva() {
  const [sent, setSent] = useState<{ done: number; total: number } | null>(null);
  const [err, setErr] = useState<unknown>(null);
  const [pkg, setPkg] = useState<Inspected | null>(null);
  const [props, setProps] = useState<Record<string, string>>({});
  const [accept, setAccept] = useState(false);
  const [name, setName] = useState('');
  const call = useTaskCall();
  const [, go] = useLocation();
  return (
    <div className="page-form">
      <h1>Import an OVA appliance</h1>
      {!pkg && (
        <form aria-label="Upload OVA" onSubmit={(e) => e.preventDefault()}>
          <Field label="OVA file">
            <input
              type="file"
              accept=".ova"
              onChange={(e) => {
                const f = e.target.files?.[0];
                if (!f) return;
                setErr(null);
                upload<Inspected>('/appliances/upload', f, (done, total) => setSent({ done, total })).then(
                  (p) => {
                    setPkg(p);
                    setProps(
                      Object.fromEntries(
                        p.systems.flatMap((s) =>
                          s.properties.filter((x) => x.userConfigurable).map((x) => [x.fullKey, x.defaultValue ?? '']),
                        ),
                      ),
                    );
                  },
                  (x: unknown) => setErr(x),
                );
              }}
            />
          </Field>
          {sent && <progress max={sent.total} value={sent.done} aria-label="Upload progress" />}
          <ErrorBox error={err} />
        </form>
      )}
      {pkg && (
        <form
          aria-label="Appliance settings"
          onSubmit={(e) => {
            e.preventDefault();
            call.mutate(
              {
                method: 'POST',
                path: `/appliances/uploads/${pkg.upload}/import`,
                body: {
                  ...(name ? { name } : {}),
                  acceptEula: accept,
                  prop: Object.entries(props).map(([k, v]) => `${k}=${v}`),
                },
              },
              { onSuccess: (t) => go(`/tasks/${t.id}`) },
            );
          }}
        >
          <h2>What is in it</h2>
          <ul>
            {pkg.systems.map((s) => (
              <li key={s.id}>
                <strong>{s.name}</strong>: {s.vcpus} CPU, {fmtBytes(s.memoryBytes)}
                {s.os ? `, ${s.os}` : ''}
              </li>
            ))}
          </ul>
          {pkg.warnings.map((w) => (
            <p key={w} className="hint">
              {w}
            </p>
          ))}
          {pkg.eulas.length > 0 && (
            <section aria-label="License agreement">
              <h2>License agreement</h2>
              {pkg.eulas.map((t, i) => (
                <pre key={i} className="eula" tabIndex={0}>
                  {t}
                </pre>
              ))}
              <label className="radio">
                <input type="checkbox" checked={accept} onChange={(e) => setAccept(e.target.checked)} /> I accept the
                license agreement
              </label>
            </section>
          )}
          {Object.keys(props).length > 0 && <h2>Properties</h2>}
          {pkg.systems.flatMap((s) =>
            s.properties
              .filter((p) => p.userConfigurable)
              .map((p) => (
                <Field key={p.fullKey} label={p.label ?? p.key} help={`${p.description ?? ''} (${p.type})`}>
                  <input
                    type={p.password ? 'password' : 'text'}
                    value={props[p.fullKey] ?? ''}
                    onChange={(e) => setProps({ ...props, [p.fullKey]: e.target.value })}
                  />
                </Field>
              )),
          )}
          <Field label="VM name (optional)">
            <input value={name} onChange={(e) => setName(e.target.value)} />
          </Field>
          <ErrorBox error={call.error} />
          <button type="submit" className="primary" disabled={pkg.eulas.length > 0 && !accept}>
            Import
          </button>
        </form>
      )}
    </div>
  );
}
