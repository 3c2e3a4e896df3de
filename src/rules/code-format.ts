// What a public client may know of an organization's codes before any flow:
// their length, alphabet and lifespan for one purpose, as new codes are made
// (the server's policy with the organization's overrides). Nothing of any
// account, and not the attempts a code allows.
import type { Config } from "../config/config.ts";
import type { Purpose } from "../domain/purpose.ts";
import { effectivePolicy } from "./codes/policy.ts";
import type { OrgRef } from "./flows.ts";
import type { OrgDirectory } from "./organizations.ts";

export interface CodeFormat {
  length: number;
  alphabet: string;
  lifespanMs: number;
}

/**
 * The format of the codes of the organization `ref` names, for `purpose`. An
 * unknown organization (or an org_id and a tenant_id that do not belong
 * together) gets the server's own policy, as an organization without overrides
 * does: like the send calls, the answer does not say whether it exists.
 */
export async function codeFormat(deps: { config: Config; orgs: OrgDirectory }, ref: OrgRef, purpose: Purpose): Promise<CodeFormat> {
  const org = await deps.orgs.resolve(ref.orgId, ref.tenantId);
  const { length, alphabet, lifespanMs } = effectivePolicy(deps.config, org?.settings ?? {}, purpose);
  return { length, alphabet, lifespanMs };
}
