// The shell: sign-in until a token is good, then the navigation, the pages and the task panel.
import { Link, Route, Switch, useLocation } from 'wouter';
import { useSession } from './session';
import { SignIn } from './pages/SignIn';
import { Fleet } from './pages/Fleet';
import { VmPage } from './pages/VmPage';
import { ConsolePage } from './pages/Console';
import { SerialPage } from './pages/Serial';
import { CreateVm } from './pages/CreateVm';
import { ImportOva } from './pages/ImportOva';
import { TasksPage, TaskPanel } from './pages/Tasks';

export function App() {
  const { session, signOut, checking, can } = useSession();
  const [loc] = useLocation();
  if (!session) return checking ? <p className="center">Signing in…</p> : <SignIn />;
  const fullscreen = /\/(console|serial)$/.test(loc);
  return (
    <div className={fullscreen ? 'app app-console' : 'app'}>
      <header className="top">
        <Link href="/" className="brand">
          flightdeck
        </Link>
        <nav aria-label="Main">
          <Link href="/">Fleet</Link>
          {can('write') && <Link href="/create">Create VM</Link>}
          {can('write') && <Link href="/import">Import OVA</Link>}
          <Link href="/tasks">Tasks</Link>
        </nav>
        <span className="who" title={`signed in on ${session.host}`}>
          {session.token.name} <span className="badge">{session.token.role}</span>
        </span>
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main>
        <Switch>
          <Route path="/" component={Fleet} />
          <Route path="/create" component={CreateVm} />
          <Route path="/import" component={ImportOva} />
          <Route path="/tasks">{() => <TasksPage />}</Route>
          <Route path="/tasks/:id">{(p) => <TasksPage openId={p.id} />}</Route>
          <Route path="/vms/:name/console">{(p) => <ConsolePage name={decodeURIComponent(p.name)} />}</Route>
          <Route path="/vms/:name/serial">{(p) => <SerialPage name={decodeURIComponent(p.name)} />}</Route>
          <Route path="/vms/:name">{(p) => <VmPage name={decodeURIComponent(p.name)} />}</Route>
          <Route>
            <p>
              No such page. <Link href="/">Back to the fleet</Link>
            </p>
          </Route>
        </Switch>
      </main>
      {!fullscreen && <TaskPanel />}
    </div>
  );
}
