/** Schema pieces that several contracts share. */
import { z } from 'zod';

/** An object whose shape the OpenAPI document leaves open. */
export const Loose = z.looseObject({});

const BoolText = z.union([z.boolean(), z.enum(['true', 'false'])]);
const toBool = (v: boolean | 'true' | 'false'): boolean => v === true || v === 'true';

/** A boolean that also arrives as "true"/"false" (query strings, CLI options). */
export const Bool = BoolText.transform(toBool);

/** A Bool that defaults to false. */
export const flag = (description: string) => BoolText.default(false).transform(toBool).describe(description);

export const VmRef = z.string().min(1).max(64).describe('VM name or id');

/** A VM as views show it (the full record, its state and the table's summary columns). */
export const VmOut = z.looseObject({ id: z.string(), name: z.string(), state: z.string(), desired: z.string() });

/** A task record, as `?wait=true` or a task call answers it. */
export const TaskOut = z.looseObject({ id: z.string(), state: z.string(), title: z.string() });
