/** Schema pieces and routes that several operation modules share. */
import { z } from 'zod';
import type { OpContext, Route } from '../operation.js';

/** An object whose shape the OpenAPI document leaves open. */
export const Loose = z.looseObject({});

const BoolText = z.union([z.boolean(), z.enum(['true', 'false'])]);
const toBool = (v: boolean | 'true' | 'false'): boolean => v === true || v === 'true';

/** A boolean that also arrives as "true"/"false" (query strings, CLI options). */
export const Bool = BoolText.transform(toBool);

/** A Bool that defaults to false. */
export const flag = (description: string) => BoolText.default(false).transform(toBool).describe(description);

/** Calls about a VM run on the host that owns it. */
export const ownerOf = async (ctx: OpContext, input: { id: string }): Promise<Route> => ({
  host: (await ctx.svc.vms.find(input.id)).value.host,
});
