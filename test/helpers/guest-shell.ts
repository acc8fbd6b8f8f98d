/**
 * The tiny guest's shell on its serial console, for tests that act inside a guest (change its
 * MAC or address, write a file, open a connection). Commands go in through the serial socket;
 * their end and exit status come back as an `FD-SH <token> <status> #` line in the serial log.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { waitFor } from '../../src/core/process.js';

export interface GuestShell {
  /** Runs `cmd` in the guest's shell; resolves with its exit status and the console text it printed. */
  run(cmd: string, timeoutMs?: number): Promise<{ status: number; output: string }>;
  close(): void;
}

export async function guestShell(paths: { serial: string; serialLog: string }): Promise<GuestShell> {
  const sock: Socket = await new Promise((resolve, reject) => {
    const s = connect(paths.serial);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
  sock.on('data', () => undefined); // the log file has it all
  const logText = () => readFile(paths.serialLog, 'latin1').catch(() => '');
  // busybox init's askfirst: Enter starts the shell; wait until it answers a command
  sock.write('\r');
  const shell: GuestShell = {
    async run(cmd, timeoutMs = 60_000) {
      const token = randomBytes(4).toString('hex');
      const start = (await logText()).length;
      sock.write(`${cmd}; echo "FD-SH ${token} $? #"\r`);
      const re = new RegExp(`FD-SH ${token} (\\d+) #`);
      return waitFor(
        `guest shell: ${cmd}`,
        async () => {
          const text = (await logText()).slice(start);
          // the echoed command line holds the token too, but not a digit status before " #"
          const m = re.exec(text);
          return m ? { status: Number(m[1]), output: text.slice(0, m.index) } : undefined;
        },
        { timeoutMs, intervalMs: 100 },
      );
    },
    close: () => sock.destroy(),
  };
  await waitFor(
    'guest shell prompt',
    async () => {
      try {
        return (await shell.run('true', 5000)).status === 0 ? true : undefined;
      } catch {
        sock.write('\r');
        return undefined;
      }
    },
    { timeoutMs: 90_000, intervalMs: 100 },
  );
  return shell;
}
