// Who is signed in: the token lives in session storage (gone when the tab closes, never in a
// URL); /api/v1/session tells its name and role, and the role decides which buttons exist.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { useQueryClient } from '@tanstack/react-query';
import { ApiError, api, getToken, setToken, setUnauthorizedHandler } from './api';
import { streamEvents } from './events';
import type { Session } from './types';

interface SessionCtx {
  session: Session | null;
  /** Why the last sign-in failed, or why the session ended (the API's error). */
  error: ApiError | null;
  checking: boolean;
  signIn(token: string): Promise<void>;
  signOut(): void;
  can(perm: 'read' | 'write' | 'admin'): boolean;
}

const Ctx = createContext<SessionCtx | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const qc = useQueryClient();
  const [session, setSession] = useState<Session | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [checking, setChecking] = useState(() => getToken() !== null);

  const end = useCallback(
    (err: ApiError | null) => {
      setToken(null);
      setSession(null);
      setError(err);
      qc.clear();
    },
    [qc],
  );

  const signIn = useCallback(async (token: string) => {
    setChecking(true);
    try {
      const s = await api<Session>('GET', '/session', undefined, token.trim());
      setToken(token.trim());
      setError(null);
      setSession(s);
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError('FD_INTERNAL', String(err), undefined, 0));
      setToken(null);
    } finally {
      setChecking(false);
    }
  }, []);

  // A tab reloaded while signed in: check the stored token again.
  useEffect(() => {
    const t = getToken();
    if (t) void Promise.resolve().then(() => signIn(t));
  }, [signIn]);

  useEffect(() => setUnauthorizedHandler((err) => end(err)), [end]);

  useEffect(() => {
    if (!session) return;
    const ac = new AbortController();
    void streamEvents(qc, ac.signal, (err) => end(err));
    return () => ac.abort();
  }, [session, qc, end]);

  const value = useMemo<SessionCtx>(
    () => ({
      session,
      error,
      checking,
      signIn,
      signOut: () => end(null),
      can: (perm) => session?.permissions.includes(perm) ?? false,
    }),
    [session, error, checking, signIn, end],
  );
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}

export function useSession(): SessionCtx {
  const c = useContext(Ctx);
  if (!c) throw new Error('useSession outside SessionProvider');
  return c;
}
