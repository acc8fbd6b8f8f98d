/** One runner per run dir: a lock file naming its process, taken over when that is dead. */
import { open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { FdError, isErrno } from '../../core/errors.js';
import { identify, isRunning, type ProcIdentity } from '../pidfile.js';

export const runnerLockPath = (runDir: string): string => join(runDir, '.runner.lock');

/** One runner per run dir: two would both "repair" the same VM. */
export async function takeRunnerLock(runDir: string): Promise<void> {
  const path = runnerLockPath(runDir);
  const me = identify(process.pid)!;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(path, 'wx');
      await fh.writeFile(JSON.stringify(me));
      await fh.close();
      return;
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
    }
    let holder: ProcIdentity | undefined;
    try {
      holder = JSON.parse(await readFile(path, 'utf8')) as ProcIdentity;
    } catch (err) {
      if (!isErrno(err, 'ENOENT') && !(err instanceof SyntaxError)) throw err;
    }
    if (holder && isRunning(holder) && holder.pid !== process.pid)
      throw new FdError('FD_RUNNER_BUSY', `another runner (pid ${holder.pid}) manages ${runDir}`, {
        hint: 'stop the other flightdeck daemon first',
      });
    if (holder && holder.pid === process.pid) {
      throw new FdError('FD_RUNNER_BUSY', `another VmRunner in this process already manages ${runDir}`);
    }
    await unlink(path).catch(() => undefined); // stale: its owner is dead
  }
  throw new FdError('FD_RUNNER_BUSY', `could not take the runner lock in ${runDir}`);
}
