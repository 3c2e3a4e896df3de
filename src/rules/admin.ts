// What administrators do, by the rules: organizations held to the server's
// bound on guessing, identities created pending, disabled with their codes,
// recovery codes handed over in person, and codes invalidated.
import type { Config } from "../config/config.ts";
import { FailedPrecondition, InvalidArgument, NotFound } from "../domain/errors.ts";
import type { Audit } from "../domain/events.ts";
import { oneIn } from "../domain/guess-chance.ts";
import type { Identity, IdentityState } from "../domain/identity.ts";
import type { Org, OrgSettings } from "../domain/organization.ts";
import type { Purpose } from "../domain/purpose.ts";
import { formatMs } from "../lib/duration.ts";
import { recordEvent } from "../store/events.ts";
import { getIdentity, setIdentityPhoneNumber as storePhoneNumber, setIdentityState as storeIdentityState } from "../store/identities.ts";
import { notifyOrgChanged } from "../store/org-changes.ts";
import { createOrganization as storeOrganization, updateOrganizationSettings as storeSettings } from "../store/organizations.ts";
import type { Orm } from "../store/orm.ts";
import { organizationGuessChance } from "./codes/policy.ts";
import { newOrgId, newTenantId } from "./codes/random.ts";
import type { FlowDeps } from "./flows.ts";
import { canonicalLocale } from "./mail/locales.ts";
import type { OrgChanges } from "./org-changes.ts";

export interface AdminDeps extends FlowDeps {
  config: Config;
  orm: Orm;
  /** Told of every change of an organization (its caches forget it). */
  changes: OrgChanges;
}

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$|\.localhost$/i;

/** What is wrong with a return URL, or undefined: where the pages hand a proof token, so https (http for localhost only), no user info, no fragment. */
export function returnUrlProblem(text: string): string | undefined {
  const url = URL.parse(text);
  if (!url) return "an absolute URL, like https://app.example.com/codegate/return";
  if (url.protocol !== "https:" && !(url.protocol === "http:" && LOOPBACK.test(url.hostname))) {
    return "an https URL (http only for localhost): proof tokens never travel in clear text";
  }
  if (url.username || url.password) return "a URL without user name or password";
  if (text.includes("#")) return "a URL without a fragment: the token is handed in the fragment";
  return undefined;
}

/**
 * An organization's settings held to the rules: codes and limits within
 * MAX_GUESS_CHANCE, a default locale that is a language tag (kept canonical), a
 * safe return URL. Answers the settings to keep.
 */
export function checkedSettings(config: Config, settings: OrgSettings): OrgSettings {
  // The proto bounds an alphabet's length; that no character comes twice (counted in
  // UTF-16 units, as codes are drawn: a character past U+FFFF is two) is checked here.
  for (const [field, policy] of [["login_code", settings.loginCode], ["registration_code", settings.registrationCode], ["recovery_code", settings.recoveryCode]] as const) {
    const alphabet = policy?.alphabet;
    if (alphabet !== undefined && new Set(alphabet).size !== alphabet.length) {
      throw new InvalidArgument(`settings.${field}.alphabet`, "distinct characters, none of them twice nor past U+FFFF (no emoji)");
    }
  }
  const guess = organizationGuessChance(config, settings);
  if (guess.chance > config.maxGuessChance) {
    throw new InvalidArgument(
      "settings",
      `codes and limits that keep the worst-case chance of guessing an account's code within a day at most ${oneIn(config.maxGuessChance)} ` +
        `(these allow ${oneIn(guess.chance)}: ${guess.sendsPerDay} codes per purpose and ${guess.failuresPerDay} wrong guesses per username a day); ` +
        `lengthen the codes, widen their alphabets, or tighten send_per_username or verify_failures_per_username`,
    );
  }
  const out = { ...settings };
  if (settings.defaultLocale) {
    const locale = canonicalLocale(settings.defaultLocale);
    if (!locale) throw new InvalidArgument("settings.default_locale", "a BCP 47 language tag such as en, de or pt-BR");
    out.defaultLocale = locale;
  }
  if (settings.returnUrl) {
    const problem = returnUrlProblem(settings.returnUrl);
    if (problem) throw new InvalidArgument("settings.return_url", problem);
  }
  return out;
}

const DEFAULT_RECOVERY_MS = 3_600_000;
const MAX_RECOVERY_MS = 30 * 24 * 3_600_000;

/** A new organization, refused when its settings would let codes be guessed above MAX_GUESS_CHANCE; recorded in the event trail. */
export async function createOrganization(deps: AdminDeps, req: { name: string; tenantId: string; settings: OrgSettings }, audit: Audit = {}): Promise<Org> {
  const settings = checkedSettings(deps.config, req.settings);
  const org: Org = { id: newOrgId(), tenantId: req.tenantId || newTenantId(), name: req.name, settings, createdAt: deps.clock.now() };
  return storeOrganization(deps.sql, org, audit);
}

/** Replaces an organization's settings, by the rules of creation; every process forgets its cached copy. */
export async function updateOrganizationSettings(deps: AdminDeps, orgId: string, settings: OrgSettings, audit: Audit = {}): Promise<Org> {
  const checked = checkedSettings(deps.config, settings);
  const org = await deps.sql.transaction(async (tx) => {
    const updated = await storeSettings(tx, orgId, checked);
    if (updated) {
      await recordEvent(tx, { orgId, type: "organization.settings_updated", occurredAt: deps.clock.now() }, audit);
      await notifyOrgChanged(tx, orgId);
    }
    return updated;
  });
  if (!org) throw new NotFound(`organization ${orgId}`);
  deps.changes.changed(orgId);
  return org;
}

export async function identityById(deps: AdminDeps, identityId: string): Promise<Identity> {
  const identity = await getIdentity(deps.orm, identityId);
  if (!identity) throw new NotFound(`identity ${identityId}`);
  return identity;
}

/** Sets (empty: removes) an identity's phone number, E.164 as the API checked it. */
export async function setIdentityPhoneNumber(deps: AdminDeps, identityId: string, phoneNumber: string, audit: Audit = {}): Promise<Identity> {
  const found = await identityById(deps, identityId);
  const identity = await storePhoneNumber(deps.sql, found.orgId, identityId, phoneNumber || null, deps.clock.now(), audit);
  if (!identity) throw new NotFound(`identity ${identityId}`);
  return identity;
}

/** Sets an identity's state; a disabled identity's codes die with it, in the same statement, which records it in the event trail. */
export async function setIdentityState(deps: AdminDeps, identityId: string, state: IdentityState, audit: Audit = {}): Promise<Identity> {
  const found = await identityById(deps, identityId);
  const identity = await storeIdentityState(deps.sql, found.orgId, identityId, state, deps.clock.now(), audit);
  if (!identity) throw new NotFound(`identity ${identityId}`);
  return identity;
}

/**
 * A recovery code for an administrator to hand over, with the link of the
 * recovery page; bound to "admin": redeemed through the link's flow id only, and
 * nothing public replaces it. The identity's earlier recovery codes (mailed, bound
 * to an application's flow, or an administrator's) die in the same transaction,
 * recorded in the trail: the recovery the administrator hands over is the only one
 * live. `lifespanMs` undefined: the default hour.
 */
export async function createRecoveryCode(deps: AdminDeps, identityId: string, lifespanMs: number | undefined, audit: Audit = {}) {
  const lifespan = lifespanMs ?? DEFAULT_RECOVERY_MS;
  if (lifespan <= 0 || lifespan > MAX_RECOVERY_MS) {
    throw new InvalidArgument("expires_in", `expected a positive duration of at most ${formatMs(MAX_RECOVERY_MS)} (30 days), like 1h30m or 90s`);
  }
  const identity = await identityById(deps, identityId);
  if (identity.state !== "active") throw new FailedPrecondition(`identity ${identity.id} is ${identity.state}; only an active identity can recover`);
  const org = await deps.orgs.resolve(identity.orgId, "");
  if (!org) throw new NotFound(`organization ${identity.orgId}`);
  const issued = await deps.sql.transaction(async (tx) => {
    await deps.codes.invalidate(org.id, identity.id, "recovery", audit, tx);
    const code = await deps.codes.issue({ org, purpose: "recovery", target: { identityId: identity.id, username: identity.username }, requiredState: "active", lifespanMs: lifespan, adminIssued: true, audit }, tx);
    // No longer active (disabled meanwhile): nothing is killed either.
    if (!code.written) throw new NotFound(`identity ${identity.id}`);
    return code;
  });
  return { code: issued.code, expiresAt: issued.expiresAt, link: `${deps.config.publicUrl}/recovery?flow=${issued.id}` };
}

/** Kills an identity's live codes (of one purpose, or all); answers how many. */
export async function invalidateCodes(deps: AdminDeps, identityId: string, purpose: Purpose | undefined, audit: Audit = {}): Promise<number> {
  const identity = await identityById(deps, identityId);
  return deps.codes.invalidate(identity.orgId, identity.id, purpose, audit);
}
