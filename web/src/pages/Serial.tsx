// The serial console in a terminal (xterm.js), over the same ticketed WebSocket as the CLI's
// `vm console`. Selection copies, Ctrl/Cmd-V and the Paste button paste; it reconnects when
// the VM runs again or moved.
import { useEffect, useRef, useState } from 'react';
import { Link } from 'wouter';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { consoleUrl } from '../api';
import { useVm } from '../queries';
import { ErrorBox } from '../components/ui';

export function SerialPage({ name }: { name: string }) {
  const { vm, error } = useVm(name);
  const el = useRef<HTMLDivElement>(null);
  const term = useRef<Terminal | null>(null);
  const ws = useRef<WebSocket | null>(null);
  const [status, setStatus] = useState('connecting');
  const running = vm?.state === 'running' || vm?.state === 'paused';
  const vmId = vm?.id;
  const host = vm?.host;

  useEffect(() => {
    if (!el.current) return;
    const t = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 5000 });
    const fit = new FitAddon();
    t.loadAddon(fit);
    t.open(el.current);
    fit.fit();
    term.current = t;
    const ro = new ResizeObserver(() => fit.fit());
    ro.observe(el.current);
    const enc = new TextEncoder();
    const sub = t.onData((d) => ws.current?.readyState === WebSocket.OPEN && ws.current.send(enc.encode(d)));
    return () => {
      sub.dispose();
      ro.disconnect();
      t.dispose();
      term.current = null;
    };
  }, []);

  useEffect(() => {
    if (!vmId || !running) return;
    let closed = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const connect = async () => {
      try {
        const s = new WebSocket(await consoleUrl(vmId, 'console'));
        s.binaryType = 'arraybuffer';
        ws.current = s;
        s.onopen = () => {
          setStatus('connected');
          term.current?.focus();
        };
        s.onmessage = (m) => term.current?.write(new Uint8Array(m.data as ArrayBuffer));
        s.onclose = () => {
          if (closed) return;
          setStatus('reconnecting');
          retry = setTimeout(() => void connect(), 1000);
        };
      } catch {
        if (!closed) retry = setTimeout(() => void connect(), 2000);
      }
    };
    void connect();
    return () => {
      closed = true;
      clearTimeout(retry);
      ws.current?.close();
      ws.current = null;
    };
  }, [vmId, running, host]);

  if (!vm) return <ErrorBox error={error} />;
  return (
    <div className="console">
      <div className="console-bar" role="toolbar" aria-label="Serial console controls">
        <Link href={`/vms/${encodeURIComponent(vm.name)}`} className="button">
          ← {vm.name}
        </Link>
        <span className="badge" role="status" aria-live="polite">
          {running ? status : `stopped (${vm.state})`}
        </span>
        <button type="button" onClick={() => void navigator.clipboard?.writeText(term.current?.getSelection() ?? '')}>
          Copy
        </button>
        <button
          type="button"
          onClick={() =>
            void navigator.clipboard?.readText().then(
              (t) => term.current?.paste(t),
              () => undefined,
            )
          }
        >
          Paste
        </button>
      </div>
      <div className="terminal" ref={el} data-testid="serial-terminal" aria-label={`Serial console of ${vm.name}`} />
    </div>
  );
}
