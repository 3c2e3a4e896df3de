// What administrators do, by the rules: organizations held to the server's
// bound on guessing, identities created pending, disabled with their codes,
// recovery codes handed over in person, and codes invalidated.
import type { Config } from "../config/config.ts";
import { FailedPrecondition, InvalidArgument, NotFound } from "../domain/errors.ts";
import { oneIn } from "../domain/guess-chance.ts";
import type { Identity, IdentityState } from "../domain/identity.ts";
import type { Org, OrgSettings } from "../domain/organization.ts";
import type { Purpose } from "../domain/purpose.ts";
import { formatMs } from "../lib/duration.ts";
import { getIdentity, setIdentityState as storeIdentityState } from "../store/identities.ts";
import { createOrganization as storeOrganization } from "../store/organizations.ts";
import type { Orm } from "../store/orm.ts";
import { organizationGuessChance } from "./codes/policy.ts";
import { newOrgId, newTenantId } from "./codes/random.ts";
import type { FlowDeps } from "./flows.ts";

export interface AdminDeps extends FlowDeps {
  config: Config;
  orm: Orm;
}

const DEFAULT_RECOVERY_MS = 3_600_000;
const MAX_RECOVERY_MS = 30 * 24 * 3_600_000;

/** A new organization, refused when its settings would let codes be guessed above MAX_GUESS_CHANCE. */
export async function createOrganization(deps: AdminDeps, req: { name: string; tenantId: string; settings: OrgSettings }): Promise<Org> {
  const guess = organizationGuessChance(deps.config, req.settings);
  if (guess.chance > deps.config.maxGuessChance) {
    throw new InvalidArgument(
      "settings",
      `codes and limits that keep the worst-case chance of guessing an account's code within a day at most ${oneIn(deps.config.maxGuessChance)} ` +
        `(these allow ${oneIn(guess.chance)}: ${guess.sendsPerDay} codes per purpose and ${guess.failuresPerDay} wrong guesses per username a day); ` +
        `lengthen the codes, widen their alphabets, or tighten send_per_username or verify_failures_per_username`,
    );
  }
  return storeOrganization(deps.orm, { id: newOrgId(), tenantId: req.tenantId || newTenantId(), name: req.name, settings: req.settings, createdAt: deps.clock.now() });
}

export async function identityById(deps: AdminDeps, identityId: string): Promise<Identity> {
  const identity = await getIdentity(deps.orm, identityId);
  if (!identity) throw new NotFound(`identity ${identityId}`);
  return identity;
}

/** Sets an identity's state; a disabled identity's codes die with it. */
export async function setIdentityState(deps: AdminDeps, identityId: string, state: IdentityState): Promise<Identity> {
  const identity = await storeIdentityState(deps.orm, identityId, state);
  if (!identity) throw new NotFound(`identity ${identityId}`);
  if (state === "disabled") await deps.codes.invalidate(identity.orgId, identity.id, undefined);
  return identity;
}

/**
 * A recovery code for an administrator to hand over, with the link of the
 * recovery page; bound to "admin": redeemed through the link's flow id only, and
 * nothing public replaces it. `lifespanMs` undefined: the default hour.
 */
export async function createRecoveryCode(deps: AdminDeps, identityId: string, lifespanMs: number | undefined) {
  const lifespan = lifespanMs ?? DEFAULT_RECOVERY_MS;
  if (lifespan <= 0 || lifespan > MAX_RECOVERY_MS) {
    throw new InvalidArgument("expires_in", `expected a positive duration of at most ${formatMs(MAX_RECOVERY_MS)} (30 days), like 1h30m or 90s`);
  }
  const identity = await identityById(deps, identityId);
  if (identity.state !== "active") throw new FailedPrecondition(`identity ${identity.id} is ${identity.state}; only an active identity can recover`);
  const org = await deps.orgs.resolve(identity.orgId, "");
  if (!org) throw new NotFound(`organization ${identity.orgId}`);
  const issued = await deps.codes.issue({ org, purpose: "recovery", target: { identityId: identity.id, username: identity.username }, requiredState: "active", lifespanMs: lifespan, adminIssued: true });
  if (!issued.written) throw new NotFound(`identity ${identity.id}`);
  return { code: issued.code, expiresAt: issued.expiresAt, link: `${deps.config.publicUrl}/recovery?flow=${issued.id}` };
}

/** Kills an identity's live codes (of one purpose, or all); answers how many. */
export async function invalidateCodes(deps: AdminDeps, identityId: string, purpose: Purpose | undefined): Promise<number> {
  const identity = await identityById(deps, identityId);
  return deps.codes.invalidate(identity.orgId, identity.id, purpose);
}
