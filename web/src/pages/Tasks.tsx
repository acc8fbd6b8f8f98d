// Tasks as in Proxmox's task log: running ones with progress, rate and ETA and a cancel
// button; any task's full log. The panel at the bottom shows the latest few on every page.
import { useState } from 'react';
import { Link } from 'wouter';
import { api } from '../api';
import { useSession } from '../session';
import { useTask, useTasks } from '../queries';
import { ErrorBox, ProgressLine, TaskState } from '../components/ui';
import type { Task } from '../types';

function CancelButton({ task }: { task: Task }) {
  const { can } = useSession();
  const [err, setErr] = useState<unknown>(null);
  if (!can('write') || task.state !== 'running') return null;
  return (
    <>
      <button
        type="button"
        disabled={task.cancelRequested}
        onClick={() => api('POST', `/tasks/${task.id}/actions/cancel`, {}).catch(setErr)}
      >
        Cancel
      </button>
      <ErrorBox error={err} />
    </>
  );
}

function TaskRow({ t }: { t: Task }) {
  return (
    <li className="task">
      <div>
        <Link href={`/tasks/${t.id}`}>{t.title}</Link> <TaskState task={t} /> <small>on {t.host}</small>{' '}
        <time dateTime={t.createdAt}>{new Date(t.createdAt).toLocaleTimeString()}</time> <CancelButton task={t} />
      </div>
      {t.state === 'running' && t.progress && <ProgressLine p={t.progress} />}
      {t.error && (
        <div className="hint">
          {t.error.message} <code>{t.error.code}</code>
        </div>
      )}
    </li>
  );
}

function TaskDetail({ id }: { id: string }) {
  const t = useTask(id);
  if (t.error) return <ErrorBox error={t.error} />;
  if (!t.data) return <p>Loading…</p>;
  const task = t.data;
  return (
    <section aria-label="Task" className="task-detail">
      <h2>
        {task.title} <TaskState task={task} />
      </h2>
      <p>
        {task.operation} on {task.host}, started {new Date(task.createdAt).toLocaleString()}
        {task.finishedAt ? `, finished ${new Date(task.finishedAt).toLocaleString()}` : ''}
      </p>
      <CancelButton task={task} />
      {task.progress && task.state === 'running' && <ProgressLine p={task.progress} />}
      {task.error && (
        <div className="error" role="alert">
          <strong>{task.error.message}</strong>
          {task.error.hint && <div className="hint">{task.error.hint}</div>}
          <code className="code">{task.error.code}</code>
        </div>
      )}
      <h3>Log</h3>
      <pre className="log" tabIndex={0} aria-label="Task log">
        {task.log.map((l) => `${l.t.slice(11, 23)}  ${l.msg}`).join('\n') || '(empty)'}
      </pre>
    </section>
  );
}

export function TasksPage({ openId }: { openId?: string }) {
  const tasks = useTasks();
  return (
    <div className="tasks-page">
      {openId && <TaskDetail id={openId} />}
      <h1>Tasks</h1>
      <ErrorBox error={tasks.error} />
      <ul className="task-list">
        {(tasks.data ?? []).map((t) => (
          <TaskRow key={t.id} t={t} />
        ))}
      </ul>
    </div>
  );
}

export function TaskPanel() {
  const tasks = useTasks();
  const [open, setOpen] = useState(true);
  const list = tasks.data ?? [];
  const running = list.filter((t) => t.state === 'running');
  const shown = [...running, ...list.filter((t) => t.state !== 'running')].slice(0, 4);
  return (
    <aside className="task-panel" aria-label="Recent tasks">
      <button type="button" aria-expanded={open} onClick={() => setOpen(!open)}>
        Tasks ({running.length} running)
      </button>
      {open && (
        <ul className="task-list">
          {shown.map((t) => (
            <TaskRow key={t.id} t={t} />
          ))}
        </ul>
      )}
    </aside>
  );
}
