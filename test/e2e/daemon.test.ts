/**
 * End to end through the real CLI against a real daemon, a real etcd and real tiny guests:
 * the README tour, auth, bad input, concurrency, and SIGKILL of the daemon mid-operation.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import WebSocket from 'ws';
import { TestDaemon, pidsUnder } from '../helpers/daemon.js';
import { sleep, waitFor } from '../../src/core/process.js';
import { parseProbeLine } from '../../src/host/images/probes.js';

interface Vm {
  id: string;
  name: string;
  state: string;
  desired: string;
  pid: number | null;
  lastError?: string | null;
}
interface Task {
  id: string;
  state: string;
  error: { code: string } | null;
}

let d: TestDaemon;

before(async () => {
  d = await TestDaemon.start();
  // The image is cached per machine: the first build on a fresh machine downloads two packages.
  const r = await d.cli(['image', 'build', 'tiny', '--probes']);
  assert.equal(r.code, 0, r.stderr + r.stdout);
});
after(async () => {
  await d?.dispose();
});

/** QEMU processes running for a VM id (the one unforgivable bug is two). */
async function qemusOf(id: string): Promise<number[]> {
  const pids = await pidsUnder(join(d.dataDir, 'run', id));
  const out: number[] = [];
  for (const pid of pids) {
    const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
    if (comm.startsWith('qemu-system')) out.push(pid);
  }
  return out;
}

async function heartbeats(name: string): Promise<number[]> {
  const logs = await d.json<{ serial: string[] }>(['vm', 'logs', name, '--lines', '400']);
  return logs.serial.map(parseProbeLine).flatMap((e) => (e?.kind === 'heartbeat' ? [Number(e.seq)] : []));
}

test('the tour: create, start, heartbeat, console, shutdown, delete', async () => {
  const created = await d.json<{ state: string; result: Vm }>([
    'vm',
    'create',
    'tour',
    '--image',
    'tiny',
    '--memory',
    '128M',
  ]);
  assert.equal(created.state, 'succeeded');
  assert.equal(created.result.state, 'stopped');
  const started = await d.json<Task>(['vm', 'start', 'tour']);
  assert.equal(started.state, 'succeeded');
  await waitFor(
    'guest heartbeat on the serial log',
    async () => ((await heartbeats('tour')).length > 3 ? true : undefined),
    { timeoutMs: 60_000, intervalMs: 300 },
  );
  const vm = await d.json<Vm>(['vm', 'show', 'tour']);
  assert.equal(vm.state, 'running');
  // for people: sizes in units, the disk chain over the image, the NIC
  const shown = await d.cli(['vm', 'show', 'tour']);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /^memory: +128 MiB$/m);
  assert.match(shown.stdout, /^DISKS\n.*SIZE.*CHAIN\n.*\.vhd -> .*\(image tiny\)$/m);
  assert.match(shown.stdout, /^NICS\n.*MAC.*ADDRESS\n.*52:54:00/m);
  const logs = await d.cli(['vm', 'logs', 'tour', '--lines', '5']);
  assert.match(logs.stdout, /^--- serial console ---$/m, 'vm logs prints lines, not a JSON array');
  assert.deepEqual(await qemusOf(vm.id), [vm.pid]);

  // The serial console over the API's WebSocket shows live heartbeat lines.
  const ws = new WebSocket(d.url.replace('http', 'ws') + `/api/v1/vms/${vm.id}/console`, {
    headers: { authorization: `Bearer ${d.token}` },
  });
  let text = '';
  ws.on('message', (b: Buffer) => (text += b.toString()));
  await waitFor('heartbeat through the console', () => (/FD-HB \d+/.test(text) ? true : undefined), {
    timeoutMs: 20_000,
  });
  ws.close();

  const human = await d.cli(['vm', 'list']);
  assert.match(human.stdout, /^NAME\s+STATE/m);
  assert.match(human.stdout, /tour\s+running/);

  const stopped = await d.json<Task & { result: { state: string } }>(['vm', 'shutdown', 'tour', '--timeout', '30s']);
  assert.equal(stopped.result.state, 'stopped');
  assert.deepEqual(await qemusOf(vm.id), []);
  const del = await d.json<Task>(['vm', 'delete', 'tour']);
  assert.equal(del.state, 'succeeded');
  const missing = await d.cli(['vm', 'show', 'tour']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /FD_VM_NOT_FOUND/);
});

test('auth: no token, a wrong token and a revoked token are refused; a viewer cannot start VMs', async () => {
  const none = await d.api('GET', '/api/v1/vms', undefined, null);
  assert.equal(none.status, 401);
  assert.equal((none.body as { error: { code: string } }).error.code, 'FD_UNAUTHORIZED');
  assert.equal((await d.api('GET', '/api/v1/vms', undefined, 'fd_000000000000_wrongwrongwrongwrongwrong')).status, 401);

  const viewer = await d.json<{ token: string; info: { id: string } }>([
    'token',
    'create',
    'watcher',
    '--role',
    'viewer',
  ]);
  assert.equal((await d.api('GET', '/api/v1/vms', undefined, viewer.token)).status, 200);
  const denied = await d.api('POST', '/api/v1/vms/x/actions/start', {}, viewer.token);
  assert.equal(denied.status, 403);
  await d.json(['token', 'revoke', viewer.info.id]);
  assert.equal((await d.api('GET', '/api/v1/vms', undefined, viewer.token)).status, 401);
  // The CLI without the token file's token: a remote URL with a bad token.
  const r = await d.cli(['vm', 'list', '--url', d.url, '--token', 'nope']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /FD_UNAUTHORIZED/);
});

test('bad input is a 4xx with a stable code and changes nothing', async () => {
  const before = (await d.api('GET', '/api/v1/vms')).body as Vm[];
  const cases: [string, string, unknown, number, string][] = [
    ['POST', '/api/v1/vms', '{"name": "x", ', 400, 'FD_BAD_JSON'],
    ['POST', '/api/v1/vms', { name: 'ok1', image: 'tiny', colour: 'red' }, 400, 'FD_BAD_REQUEST'],
    ['POST', '/api/v1/vms', { name: 'a'.repeat(64), image: 'tiny' }, 400, 'FD_BAD_REQUEST'],
    ['POST', '/api/v1/vms', { name: '../etc', image: 'tiny' }, 400, 'FD_BAD_REQUEST'],
    ['POST', '/api/v1/vms', { name: 'ok2', image: 'tiny', memory: 'lots' }, 400, 'FD_BAD_REQUEST'],
    ['POST', '/api/v1/vms', { name: 'ok3', image: 'tiny', cpus: 'two' }, 400, 'FD_BAD_REQUEST'],
    ['POST', '/api/v1/vms', { name: 'ok4', image: 'nosuchimage' }, 404, 'FD_IMAGE_NOT_FOUND'],
    ['POST', '/api/v1/vms', [1, 2], 400, 'FD_BAD_JSON'],
    ['POST', '/api/v1/vms/nosuchvm/actions/start', {}, 404, 'FD_VM_NOT_FOUND'],
    ['GET', '/api/v1/nosuchthing', undefined, 404, 'FD_ROUTE_NOT_FOUND'],
  ];
  for (const [method, path, body, status, code] of cases) {
    const r = await d.api(method, path, body);
    assert.equal(r.status, status, `${method} ${path} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
    assert.equal((r.body as { error: { code: string } }).error.code, code, JSON.stringify(r.body));
    assert.ok((r.body as { error: { message: string } }).error.message.length > 5);
  }
  assert.deepEqual(
    ((await d.api('GET', '/api/v1/vms')).body as Vm[]).map((v) => v.name),
    before.map((v) => v.name),
  );

  await d.json(['vm', 'create', 'busy', '--image', 'tiny', '--memory', '128M', '--start', 'true']);
  const again = await d.api('POST', '/api/v1/vms/busy/actions/start', {});
  assert.equal(again.status, 409);
  assert.equal((again.body as { error: { code: string } }).error.code, 'FD_VM_ALREADY_RUNNING');
  const del = await d.api('DELETE', '/api/v1/vms/busy');
  assert.equal(del.status, 409);
  assert.equal((del.body as { error: { code: string } }).error.code, 'FD_VM_RUNNING');
  assert.equal((await d.json<Vm>(['vm', 'show', 'busy'])).state, 'running');
  const forced = await d.api('DELETE', '/api/v1/vms/busy?force=true&wait=true');
  assert.equal(forced.status, 200);
  assert.equal((forced.body as Task).state, 'succeeded');
});

test('20 parallel starts and stops on 5 VMs end consistent: every VM as its record says, one QEMU at most', async () => {
  const names = ['c1', 'c2', 'c3', 'c4', 'c5'];
  for (const n of names) await d.json(['vm', 'create', n, '--image', 'tiny', '--memory', '128M']);
  const ops = Array.from({ length: 20 }, (_, i) => ({ name: names[i % 5]!, verb: i % 3 === 0 ? 'stop' : 'start' }));
  const results = await Promise.all(
    ops.map((o) => d.api('POST', `/api/v1/vms/${o.name}/actions/${o.verb}?wait=true`, {})),
  );
  for (const r of results) assert.ok([200, 409].includes(r.status), JSON.stringify(r.body));
  for (const n of names) {
    // Settled: the state the host reports is the state the record asks for.
    const vm = await waitFor(
      `${n} settled`,
      async () => {
        const v = await d.json<Vm>(['vm', 'show', n]);
        return (v.desired === 'running' && v.state === 'running') || (v.desired === 'stopped' && v.state === 'stopped')
          ? v
          : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    const q = await qemusOf(vm.id);
    assert.equal(q.length, vm.state === 'running' ? 1 : 0, `${n}: ${vm.state} with QEMU pids ${q.join(',')}`);
  }
  for (const n of names) await d.json(['vm', 'delete', n, '--force', 'true']);
});

test('daemon SIGKILL: running VMs keep running (same pid), an interrupted task is failed, state is truthful', async () => {
  await d.json(['vm', 'create', 'survivor', '--image', 'tiny', '--memory', '128M', '--start', 'true']);
  const vm = await d.json<Vm>(['vm', 'show', 'survivor']);
  await waitFor('survivor heartbeat', async () => ((await heartbeats('survivor')).length > 0 ? true : undefined), {
    timeoutMs: 60_000,
    intervalMs: 300,
  });
  const hbBefore = Math.max(...(await heartbeats('survivor')));

  // Kill the daemon right after a start task was accepted.
  await d.json(['vm', 'create', 'halfway', '--image', 'tiny', '--memory', '128M']);
  const accepted = await d.api('POST', '/api/v1/vms/halfway/actions/start', {});
  assert.equal(accepted.status, 202);
  d.kill();
  await sleep(300);
  await d.startProcess();

  const after = await d.json<Vm>(['vm', 'show', 'survivor']);
  assert.equal(after.state, 'running');
  assert.equal(after.pid, vm.pid, 'the daemon reattached to the same QEMU');
  await waitFor(
    'heartbeat continues',
    async () => (Math.max(...(await heartbeats('survivor'))) > hbBefore + 5 ? true : undefined),
    { timeoutMs: 30_000, intervalMs: 300 },
  );

  const task = await d.json<Task>(['task', 'show', (accepted.body as Task).id]);
  assert.notEqual(task.state, 'running', 'no task stays running after a restart');
  const half = await waitFor(
    'halfway settled',
    async () => {
      const v = await d.json<Vm>(['vm', 'show', 'halfway']);
      return v.state === 'running' || v.state === 'stopped' ? v : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 300 },
  );
  assert.equal((await qemusOf(half.id)).length, half.state === 'running' ? 1 : 0);
  await d.json(['vm', 'delete', 'survivor', '--force', 'true']);
  await d.json(['vm', 'delete', 'halfway', '--force', 'true']);
});

test('live events: a VM created and a task finishing arrive as Server-Sent Events', async () => {
  const ctl = new AbortController();
  const res = await fetch(d.url + '/api/v1/events', {
    headers: { authorization: `Bearer ${d.token}` },
    signal: ctl.signal,
  });
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  let text = '';
  const reader = (async () => {
    const dec = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) text += dec.decode(chunk);
    } catch {
      // aborted below
    }
  })();
  await d.json(['vm', 'create', 'evented', '--image', 'tiny', '--memory', '128M']);
  await waitFor(
    'vm and task events',
    () =>
      /event: vm\ndata: .*"name":"evented"/.test(text) && /event: task\ndata: .*"state":"succeeded"/.test(text)
        ? true
        : undefined,
    { timeoutMs: 10_000 },
  );
  ctl.abort();
  await reader;
  await d.json(['vm', 'delete', 'evented']);
});

test('OpenAPI, docs and metrics are served', async () => {
  await d.json(['vm', 'create', 'metered', '--image', 'tiny', '--memory', '128M']);
  const doc = (await d.api('GET', '/api/v1/openapi.json')).body as {
    paths: Record<string, Record<string, { operationId: string }>>;
  };
  assert.equal(doc.paths['/api/v1/vms/{id}/actions/start']?.['post']?.operationId, 'vm.start');
  assert.equal(doc.paths['/api/v1/vms']?.['get']?.operationId, 'vm.list');
  // Swagger UI from the package on this host: the page, its script naming the document, the bundle
  const docs = await fetch(d.url + '/api/docs');
  assert.match(await docs.text(), /swagger-ui-bundle\.js/);
  assert.match(await (await fetch(d.url + '/api/docs/init.js')).text(), /\/api\/v1\/openapi\.json/);
  const bundle = await fetch(d.url + '/api/docs/assets/swagger-ui-bundle.js');
  assert.equal(bundle.status, 200);
  assert.match((await bundle.text()).slice(0, 200_000), /SwaggerUIBundle/);
  assert.equal((await fetch(d.url + '/api/docs/assets/..%2F..%2Fpackage.json')).status, 404, 'only the named files');
  const metrics = await fetch(d.url + '/metrics', {
    headers: { authorization: `Bearer ${d.token}`, 'x-request-id': 'test-req-1' },
  });
  assert.equal(metrics.headers.get('x-request-id'), 'test-req-1', 'a sane client request id is kept');
  const text = await metrics.text();
  // HELP and TYPE on every metric family; process metrics; a latency histogram per route
  const families = new Set(
    [...text.matchAll(/^([a-z_:][a-z0-9_:]*?)(?:_bucket|_sum|_count)?(?:\{| )/gm)].map((m) => m[1]!),
  );
  for (const f of families) {
    const base = [...families].find((x) => x !== f && f.startsWith(x + '_')) ?? f;
    assert.match(text, new RegExp(`^# HELP (${f}|${base}) `, 'm'), `HELP for ${f}`);
    assert.match(text, new RegExp(`^# TYPE (${f}|${base}) `, 'm'), `TYPE for ${f}`);
  }
  assert.match(text, /^process_cpu_user_seconds_total \d/m);
  assert.match(text, /^# TYPE flightdeck_api_request_seconds histogram/m);
  assert.match(text, /flightdeck_host_memory_free_bytes\{host="[^"]+"\} \d+/);
  assert.match(text, /flightdeck_api_request_seconds_count\{method="GET",route="\/api\/v1\/vms\/:id"\} \d+/);
  assert.match(text, /flightdeck_vm_state\{vm="[^"]+",host="[^"]+",state="stopped"\} 1/);
});

test('HA restarts a crashed VM within its budget, then leaves it down and says why', async () => {
  await d.json(['vm', 'create', 'crashy', '--image', 'tiny', '--memory', '128M']);
  const ha = await d.json<{ ha: { enabled: boolean; maxRestarts: number } }>([
    'vm',
    'ha',
    'crashy',
    '--enable',
    '--max-restarts',
    '2',
  ]);
  assert.deepEqual([ha.ha.enabled, ha.ha.maxRestarts], [true, 2]);
  await d.json(['vm', 'start', 'crashy']);
  const { id } = await d.json<Vm>(['vm', 'show', 'crashy']);
  let last = 0;
  for (let i = 0; i < 3; i++) {
    const [pid] = await waitFor(
      'a new QEMU for crashy',
      async () => {
        const q = await qemusOf(id);
        if (q.length !== 1 || q[0] === last) return undefined;
        // Killed once it runs (a kill during its start is a failed start, also counted).
        const v = await d.json<Vm>(['vm', 'show', 'crashy']);
        return v.state === 'running' && v.pid === q[0] ? q : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 100 },
    ).catch(async (err: Error) => {
      const vm = await d.cli(['vm', 'show', 'crashy', '--json']);
      throw new Error(`kill ${i + 1}: ${err.message}; VM: ${vm.stdout}; daemon log:\n${d.log.slice(-3000)}`);
    });
    last = pid!;
    process.kill(last, 'SIGKILL');
  }
  let seen: Vm | undefined;
  const down = await waitFor(
    'the restart budget spent',
    async () => {
      const v = (seen = await d.json<Vm>(['vm', 'show', 'crashy']));
      return v.state === 'crashed' && /gave up/.test(v.lastError ?? '') ? v : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 200 },
  ).catch((err: Error) => {
    throw new Error(`${err.message}; last seen: ${JSON.stringify(seen)}; QEMUs ${JSON.stringify(last)}`);
  });
  assert.equal(down.desired, 'running');
  await sleep(1500);
  assert.deepEqual(await qemusOf(id), [], 'no restart after the budget');
  // Mirroring needs a second host: refused with a code, nothing recorded.
  const prot = await d.cli(['vm', 'protect', 'crashy']);
  assert.equal(prot.code, 1);
  assert.match(prot.stderr, /FD_NO_STANDBY_HOST/);
  assert.equal((await d.json<{ protection: unknown }>(['vm', 'show', 'crashy'])).protection, null);
  await d.json(['vm', 'delete', 'crashy', '--force', 'true']);
});
