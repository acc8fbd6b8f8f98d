/**
 * The lab's state file (`LAB_ROOT/<prefix>/lab.json`): what `lab up` built, so that `down`,
 * `exec`, `fail` and `heal` work from any later process. It is written before anything is
 * created and rewritten atomically at each step, so a crashed `up` leaves a file that `down`
 * can act on.
 */
import { readFile } from 'node:fs/promises';
import { FdError, isErrno } from '../core/errors.js';
import { writeFileAtomic } from '../core/atomic-file.js';
import { stateFile } from './names.js';

export type FailMode = 'kill' | 'partition' | 'freeze';
export const FAIL_MODES: readonly FailMode[] = ['kill', 'partition', 'freeze'];

export interface LabHost {
  name: string;
  /** 1-based position; fixes the IP and the link name. */
  index: number;
  netns: string;
  ip: string;
  /** https://IP:8420 (the daemon serves TLS beyond localhost). */
  apiUrl: string;
  dataDir: string;
  /** This host's admin token (every token works on every host: they live in the shared etcd). */
  token: string;
  /** Root-namespace end of the host's veth. */
  veth: string;
  /** Client URL of the etcd member this host runs, when it is one of the first three. */
  etcdMember: string | null;
}

export interface LabState {
  version: 1;
  prefix: string;
  /** 'creating' until `up` finished: a lab in that state is torn down, never used. */
  phase: 'creating' | 'up';
  subnet: string;
  bridge: string;
  gatewayIp: string;
  hosts: LabHost[];
  etcdEndpoints: string[];
  /** Accelerator the lab's daemons were told to use (probed once for all of them). */
  accel: string;
  /** Each host's processes see only its own data dir under the lab dir (`--isolate-dirs`). */
  isolateDirs?: boolean;
  /** Hosts failed on purpose and how; heal removes the entry. */
  failures: Record<string, FailMode>;
  createdAt: string;
}

export async function readState(prefix: string): Promise<LabState | undefined> {
  try {
    return JSON.parse(await readFile(stateFile(prefix), 'utf8')) as LabState;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    if (err instanceof SyntaxError) {
      throw new FdError('FD_LAB_STATE_CORRUPT', `${stateFile(prefix)} is not valid JSON`, {
        hint: `"flightdeck lab down --prefix ${prefix}" still removes the lab by its names`,
        cause: err,
      });
    }
    throw err;
  }
}

export async function writeState(state: LabState): Promise<void> {
  await writeFileAtomic(stateFile(state.prefix), JSON.stringify(state, null, 2) + '\n');
}
