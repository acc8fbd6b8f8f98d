import { useState, type FormEvent } from 'react';
import { useSession } from '../session';
import { ErrorBox, Field } from '../components/ui';

export function SignIn() {
  const { signIn, error, checking } = useSession();
  const [token, setTokenText] = useState('');
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (token.trim()) void signIn(token);
  };
  return (
    <main className="signin">
      <h1>flightdeck</h1>
      <form onSubmit={submit} aria-label="Sign in">
        <Field
          label="API token"
          help="The daemon's admin token is in DATA_DIR/token; make others with flightdeck token create. It is kept in this tab only."
        >
          <input
            type="password"
            autoComplete="current-password"
            value={token}
            onChange={(e) => setTokenText(e.target.value)}
            placeholder="fd_…"
            required
          />
        </Field>
        <button type="submit" className="primary" disabled={checking}>
          Sign in
        </button>
        <ErrorBox error={error} />
      </form>
    </main>
  );
}
