/**
 * Where the lab's etcd raft leader is, and moving it. A failed host that is also the etcd leader
 * costs an etcd election on top of the lease expiry (etcd extends every lease when a new leader
 * takes over), so the bench records the raft leader of each round and, by default, puts it on
 * the flightdeck leader's host first: every mode then measures a primary that is an etcd follower.
 */
import type { Lab } from '../../src/lab/lab.js';
import { requestJson } from '../../src/lab/http.js';
import { waitFor } from '../../src/core/process.js';

interface Status {
  header?: { member_id?: string };
  leader?: string;
}

async function statuses(lab: Lab): Promise<{ host: string; endpoint: string; id: string; leader: string }[]> {
  const out = [];
  for (const h of lab.hosts) {
    if (!h.etcdMember) continue;
    const res = await requestJson<Status>({ url: h.etcdMember }, 'POST', '/v3/maintenance/status', {}, 2000).catch(
      () => undefined,
    );
    const id = res?.body.header?.member_id;
    if (res?.status === 200 && id && res.body.leader)
      out.push({ host: h.name, endpoint: h.etcdMember, id, leader: res.body.leader });
  }
  return out;
}

/** The lab host whose etcd member leads the raft group now (null: none answers). */
export async function etcdLeaderHost(lab: Lab): Promise<string | null> {
  const st = await statuses(lab);
  const leaderId = st[0]?.leader;
  return st.find((s) => s.id === leaderId)?.host ?? null;
}

/** Makes `host`'s etcd member the raft leader (a no-op when it is). */
export async function moveEtcdLeader(lab: Lab, host: string): Promise<void> {
  const st = await statuses(lab);
  const target = st.find((s) => s.host === host);
  const current = st.find((s) => s.id === st[0]?.leader);
  if (!target || !current) throw new Error(`etcd status: no answer from ${host} or from the leader`);
  if (current.host === host) return;
  const res = await requestJson(
    { url: current.endpoint },
    'POST',
    '/v3/maintenance/transfer-leadership',
    { targetID: target.id },
    10_000,
  );
  if (res.status !== 200)
    throw new Error(`etcd transfer-leadership to ${host}: ${res.status} ${JSON.stringify(res.body)}`);
  await waitFor('etcd leadership moved', async () => ((await etcdLeaderHost(lab)) === host ? true : undefined), {
    timeoutMs: 10_000,
    intervalMs: 100,
  });
}
