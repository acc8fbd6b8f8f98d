/**
 * Which etcd endpoints a host's clients use. A host that runs an etcd member talks to that
 * member only: cut off, the member loses quorum and calls fail there (as they must, and the
 * fence keeper fences); when another member dies or is cut off, no call of this host sits on
 * a connection to it (etcd3 spreads calls over every endpoint, and a call on a partitioned
 * member hangs until gRPC keepalives notice, 15 s, longer than the fence deadline).
 */
export function localFirst(endpoints: string[], myAddress: string): string[] {
  const bare = (h: string): string => h.replace(/^\[|\]$/g, '');
  const me = bare(myAddress.includes('://') ? new URL(myAddress).hostname : myAddress);
  const local = endpoints.filter((e) => {
    const h = bare(new URL(e).hostname);
    return h === me || h === 'localhost' || h === '127.0.0.1' || h === '::1';
  });
  return local.length ? local : endpoints;
}
