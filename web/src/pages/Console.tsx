// The VGA console: noVNC fills the viewport and scales the guest's screen to it. Toolbar:
// Ctrl-Alt-Del, paste as key presses (for passwords and commands: the text is typed, not put
// on a clipboard the guest cannot see), an on-screen keyboard for phones (a focused input
// brings it up; what is typed there is sent as keys), full screen. Touch works through
// noVNC's own gesture handling. When the VM stops, the page says so and reconnects when it
// runs again; when the connection drops while it runs (a live migration moved it), it
// reconnects by itself with a fresh ticket, to whichever host runs it now.
import { useEffect, useRef, useState } from 'react';
import { Link } from 'wouter';
import RFB from '@novnc/novnc';
import { consoleUrl } from '../api';
import { useVm } from '../queries';
import { Dialog, ErrorBox } from '../components/ui';

type Status = 'connecting' | 'connected' | 'stopped' | 'reconnecting' | 'error';

const SPECIAL: Record<string, number> = { '\n': 0xff0d, '\r': 0xff0d, '\t': 0xff09, '\b': 0xff08 };
/** X keysym of a character: Latin-1 maps to itself, the rest by the Unicode rule. */
export const keysymOf = (ch: string): number => {
  const special = SPECIAL[ch];
  if (special) return special;
  const u = ch.codePointAt(0)!;
  return u >= 0x20 && u <= 0xff ? u : 0x01000000 | u;
};

export function typeText(rfb: RFB, text: string): void {
  for (const ch of text.replace(/\r\n/g, '\n')) {
    const k = keysymOf(ch);
    rfb.sendKey(k, null, true);
    rfb.sendKey(k, null, false);
  }
}

export function ConsolePage({ name }: { name: string }) {
  const { vm, error } = useVm(name);
  const screen = useRef<HTMLDivElement>(null);
  const frame = useRef<HTMLDivElement>(null);
  const rfbRef = useRef<RFB | null>(null);
  const [status, setStatus] = useState<Status>('connecting');
  const [failure, setFailure] = useState<unknown>(null);
  const [pasteOpen, setPasteOpen] = useState(false);
  const [pasteText, setPasteText] = useState('');
  const kbd = useRef<HTMLInputElement>(null);
  const running = vm?.state === 'running' || vm?.state === 'paused';
  const vmId = vm?.id;
  const host = vm?.host;

  useEffect(() => {
    if (!vmId || !screen.current || !running) return;
    let closed = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let attempt = 0;
    const connect = async () => {
      try {
        const url = await consoleUrl(vmId, 'vnc');
        if (closed || !screen.current) return;
        const rfb = new RFB(screen.current, url, { shared: true });
        rfb.scaleViewport = true;
        rfb.resizeSession = false;
        rfb.background = '#000';
        rfbRef.current = rfb;
        rfb.addEventListener('connect', () => {
          attempt = 0;
          setFailure(null);
          setStatus('connected');
        });
        rfb.addEventListener('disconnect', () => {
          rfbRef.current = null;
          if (closed) return;
          setStatus('reconnecting');
          retry = setTimeout(() => void connect(), Math.min(500 * 2 ** attempt++, 5000));
        });
      } catch (err) {
        if (closed) return;
        setFailure(err);
        setStatus('error');
        retry = setTimeout(() => void connect(), Math.min(1000 * 2 ** attempt++, 10_000));
      }
    };
    void connect();
    return () => {
      closed = true;
      clearTimeout(retry);
      rfbRef.current?.disconnect();
      rfbRef.current = null;
    };
    // A new host (after a migration) or a new run: connect afresh.
  }, [vmId, running, host]);

  if (!vm) return <ErrorBox error={error} />;
  const shown: Status = running ? status : 'stopped';
  const up = shown === 'connected';
  return (
    <div className="console" ref={frame}>
      <div className="console-bar" role="toolbar" aria-label="Console controls">
        <Link href={`/vms/${encodeURIComponent(vm.name)}`} className="button">
          ← {vm.name}
        </Link>
        <span className={`badge console-${shown}`} role="status" aria-live="polite">
          {shown === 'stopped' ? `stopped (${vm.state})` : shown}
        </span>
        <button type="button" disabled={!up} onClick={() => rfbRef.current?.sendCtrlAltDel()}>
          Ctrl-Alt-Del
        </button>
        <button type="button" disabled={!up} onClick={() => setPasteOpen(true)}>
          Paste
        </button>
        <button type="button" disabled={!up} onClick={() => kbd.current?.focus()}>
          Keyboard
        </button>
        <button
          type="button"
          onClick={() =>
            document.fullscreenElement ? void document.exitFullscreen() : void frame.current?.requestFullscreen()
          }
        >
          Full screen
        </button>
        <input
          ref={kbd}
          className="osk"
          aria-label="On-screen keyboard input"
          autoCapitalize="off"
          autoComplete="off"
          autoCorrect="off"
          spellCheck={false}
          value=""
          onChange={(e) => rfbRef.current && typeText(rfbRef.current, e.target.value)}
          onKeyDown={(e) => {
            const k = e.key === 'Enter' ? 0xff0d : e.key === 'Backspace' ? 0xff08 : e.key === 'Tab' ? 0xff09 : 0;
            if (k && rfbRef.current) {
              e.preventDefault();
              rfbRef.current.sendKey(k, null, true);
              rfbRef.current.sendKey(k, null, false);
            }
          }}
        />
      </div>
      {shown === 'error' && <ErrorBox error={failure} />}
      <div className="console-screen" ref={screen} data-testid="vnc-screen" aria-label={`Screen of ${vm.name}`}>
        {shown === 'stopped' && <p className="overlay">The VM is {vm.state}. The console reconnects when it runs.</p>}
      </div>
      <Dialog title="Paste as key presses" open={pasteOpen} onClose={() => setPasteOpen(false)}>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            if (rfbRef.current) typeText(rfbRef.current, pasteText);
            setPasteText('');
            setPasteOpen(false);
          }}
        >
          <label className="field">
            <span>Text to type</span>
            <textarea rows={4} value={pasteText} onChange={(e) => setPasteText(e.target.value)} />
          </label>
          <button
            type="button"
            onClick={() => void navigator.clipboard?.readText().then(setPasteText, () => undefined)}
          >
            From clipboard
          </button>
          <button type="submit" className="primary">
            Type it
          </button>
        </form>
      </Dialog>
    </div>
  );
}
