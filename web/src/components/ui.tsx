// Small shared pieces: the API error box, a modal dialog (native <dialog>: focus trap and Esc
// for free), task progress with rate and ETA, and the state badge.
import { cloneElement, useEffect, useId, useRef, type ReactElement, type ReactNode } from 'react';
import { ApiError, fmtBytes, fmtDuration } from '../api';
import type { Progress, Task, VmState } from '../types';

export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  const e = error instanceof ApiError ? error : new ApiError('FD_INTERNAL', String(error), undefined, 0);
  return (
    <div className="error" role="alert">
      <strong>{e.message}</strong>
      {e.hint && <div className="hint">{e.hint}</div>}
      <code className="code">{e.code}</code>
    </div>
  );
}

export function Dialog({
  title,
  open,
  onClose,
  children,
}: {
  title: string;
  open: boolean;
  onClose: () => void;
  children: ReactNode;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog ref={ref} onClose={onClose} aria-label={title}>
      <header className="dialog-head">
        <h2>{title}</h2>
        <button type="button" className="icon" aria-label="Close" onClick={onClose}>
          ✕
        </button>
      </header>
      {open && children}
    </dialog>
  );
}

export function ProgressLine({ p }: { p: Progress }) {
  const pct = p.total > 0 ? Math.min(100, (p.done / p.total) * 100) : 0;
  const amount =
    p.unit === 'bytes'
      ? `${fmtBytes(p.done)} of ${fmtBytes(p.total)}, ${fmtBytes(p.ratePerS)}/s`
      : `${p.done} of ${p.total}, ${p.ratePerS.toFixed(1)}/s`;
  return (
    <div className="progress">
      <progress max={100} value={pct} aria-label={`${Math.round(pct)}%`} />
      <span>
        {Math.round(pct)}% · {amount} · ETA {fmtDuration(p.etaS)}
        {p.message ? ` · ${p.message}` : ''}
      </span>
    </div>
  );
}

export function TaskState({ task }: { task: Task }) {
  return (
    <span className={`badge task-${task.state}`}>
      {task.state}
      {task.cancelRequested && task.state === 'running' ? ' (cancelling)' : ''}
    </span>
  );
}

export function StateBadge({ state }: { state: VmState }) {
  return <span className={`badge state-${state}`}>{state}</span>;
}

export function Field({ label, children, help }: { label: string; children: ReactElement; help?: string }) {
  // The help text describes the control without becoming part of its name.
  const id = useId();
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {cloneElement(children as ReactElement<Record<string, unknown>>, {
        id,
        ...(help ? { 'aria-describedby': `${id}-help` } : {}),
      })}
      {help && <small id={`${id}-help`}>{help}</small>}
    </div>
  );
}
