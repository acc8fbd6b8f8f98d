/**
 * The REST routes, one per bound contract: the input parsed with the contract's schema (path
 * parameters, then the query string or the JSON body), the caller's permission checked, the
 * call relayed to the host that must run it (the contract's route), then the handler's answer
 * (or its task: 202 with the task's Location, or the finished task with ?wait=true).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { API_BASE, inputInQuery, type Contract, type Permission } from '../core/contract.js';
import { FdError, isFdError } from '../core/errors.js';
import type { TokenRecord } from '../cluster/state/tokens.js';
import { badInput } from './errors.js';
import { forwardTo } from './forward.js';
import { isStartedElsewhere, type Binding, type TaskPlan } from './handler.js';
import type { Services } from './services.js';
import { actorOf, targetOfRoute } from './audit-hook.js';

/** The host that must run a call of `c` with this input; undefined: the one that received it. */
async function routeOf(svc: Services, c: Contract, input: Record<string, unknown>): Promise<string | undefined> {
  if (!c.route) return undefined;
  const value = input[c.route.field];
  if (c.route.to === 'owner') return (await svc.vms.find(String(value))).value.host;
  if (c.route.to === 'host') {
    const name = String(value);
    if (!svc.hosts.record(name))
      throw new FdError('FD_HOST_NOT_FOUND', `no host ${name}`, { hint: 'list hosts with "flightdeck host list"' });
    return name;
  }
  // first-owner: the first of a list, when it names a VM (a group name is answered where it landed).
  const first = Array.isArray(value) ? value[0] : value;
  if (first === undefined) return undefined;
  try {
    return (await svc.vms.find(String(first))).value.host;
  } catch (err) {
    if (isFdError(err, 'FD_VM_NOT_FOUND')) return undefined;
    throw err;
  }
}

function rawInput(c: Contract, req: FastifyRequest): Record<string, unknown> {
  const query = { ...(req.query as Record<string, unknown>) };
  delete query['wait'];
  const body = req.body;
  if (
    !inputInQuery(c.http.method) &&
    body !== undefined &&
    (typeof body !== 'object' || body === null || Array.isArray(body))
  )
    throw new FdError('FD_BAD_JSON', 'the request body must be a JSON object', { hint: 'send {"field": value, ...}' });
  return {
    ...(inputInQuery(c.http.method) ? query : { ...query, ...(body as object | undefined) }),
    ...(req.params as Record<string, string>),
  };
}

export function registerRoutes(
  app: FastifyInstance,
  svc: Services,
  bindings: Binding[],
  requireAuth: (req: FastifyRequest, perm: Permission) => Promise<TokenRecord>,
): void {
  for (const { contract: c, run } of bindings) {
    app.route({
      method: c.http.method,
      url: API_BASE + c.http.path,
      handler: async (req: FastifyRequest, reply: FastifyReply) => {
        req.audit = { operation: c.name, target: targetOfRoute(c.http.path, req.params) };
        const caller = await requireAuth(req, c.permission);
        const wait = (req.query as Record<string, unknown>)['wait'];
        const parsed = c.input.safeParse(rawInput(c, req));
        if (!parsed.success) throw badInput(parsed.error.issues);
        const input = parsed.data as Record<string, unknown>;
        const host = await routeOf(svc, c, input);
        if (host && host !== svc.hostName) {
          if (req.headers['x-flightdeck-forwarded-by'])
            throw new FdError('FD_OWNER_MOVED', `this call was relayed here but host ${host} owns the object now`, {
              hint: 'try again',
            });
          const fwd = await forwardTo(svc, host, req);
          for (const [k, v] of Object.entries(fwd.headers)) void reply.header(k, v);
          return reply.status(fwd.status).send(fwd.body);
        }
        const ctx = { svc, caller: caller.name, role: caller.role };
        if (!c.task) return reply.status(c.status ?? 200).send((await run(ctx, input)) ?? null);
        const plan = (await run(ctx, input)) as TaskPlan<unknown> | { startedElsewhere: never };
        const task = isStartedElsewhere(plan)
          ? plan.startedElsewhere
          : await svc.tasks.run(c.name, plan.title, plan.target, (t) => plan.work(t), { by: actorOf(req, caller) });
        req.audit = { ...req.audit, task: task.id, ...(task.target ? { target: task.target } : {}) };
        void reply.header('Location', `${API_BASE}/tasks/${task.id}`);
        if (wait === 'true' || wait === '1') return reply.status(200).send(await svc.tasks.wait(task.id));
        return reply.status(202).send(task);
      },
    });
  }
}
