/**
 * A runner in its own process, for tests that SIGKILL the runner: reads a job from argv[2]
 * (JSON), starts the VM (and stops it for op "start-stop"), and kills itself with SIGKILL at the
 * named fault point, exactly as a crashed daemon would die. Prints "STARTED <pid>" when up.
 */
import { VmRunner } from '../../src/host/runner.js';
import type { VmSpecInput } from '../../src/qemu/spec.js';

interface Job {
  runDir: string;
  dataDir: string;
  spec: VmSpecInput;
  op: 'start' | 'start-stop' | 'start-shutdown';
  fault?: string;
}

const job = JSON.parse(process.argv[2]!) as Job;
const runner = new VmRunner({
  runDir: job.runDir,
  dataDir: job.dataDir,
  accel: 'tcg',
  faultPoint: (p) => {
    if (p === job.fault) process.kill(process.pid, 'SIGKILL');
  },
});
const st = await runner.start(job.spec);
process.stdout.write(`STARTED ${st.pid}\n`);
if (job.op === 'start-stop') await runner.stop(job.spec.name!);
if (job.op === 'start-shutdown') await runner.shutdown(job.spec.name!, { timeoutMs: 60_000 });
process.stdout.write('DONE\n');
// stay alive (holding the runner lock) until the test kills us
setInterval(() => undefined, 1000);
