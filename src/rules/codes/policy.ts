// The code policy of an organization: the server's, with the organization's
// overrides applied; and how guessable its codes are under its limits.
import type { Config } from "../../config/config.ts";
import { worstDailyGuessChance, type GuessChance } from "../../domain/guess-chance.ts";
import { jsonDurationMs, type CodePolicySettings, type OrgSettings } from "../../domain/organization.ts";
import type { CodePolicy } from "../../domain/policy.ts";
import { purposes, type Purpose } from "../../domain/purpose.ts";
import { limitsOf } from "../limits/rate-limiter.ts";

const overrideOf = (settings: OrgSettings, purpose: Purpose): CodePolicySettings | undefined =>
  ({ login: settings.loginCode, registration: settings.registrationCode, recovery: settings.recoveryCode })[purpose];

/** The server's policy for a purpose, with the organization's overrides applied. */
export function effectivePolicy(config: Config, settings: OrgSettings, purpose: Purpose): CodePolicy {
  const base = config.codes[purpose];
  const o = overrideOf(settings, purpose);
  if (!o) return base;
  const alphabet = o.alphabet !== undefined && new Set(o.alphabet).size === o.alphabet.length ? o.alphabet : base.alphabet;
  return {
    length: o.length ?? base.length,
    alphabet,
    lifespanMs: jsonDurationMs(o.lifespan) ?? base.lifespanMs,
    maxAttempts: o.maxAttempts ?? base.maxAttempts,
  };
}

/** The worst-case daily guess chance under an organization's settings (see domain/guess-chance.ts). */
export function organizationGuessChance(config: Config, settings: OrgSettings): GuessChance {
  const limits = settings.rateLimits;
  return worstDailyGuessChance({
    policies: Object.fromEntries(purposes.map((p) => [p, effectivePolicy(config, settings, p)])) as Record<Purpose, CodePolicy>,
    sendPerUsername: limitsOf(limits?.sendPerUsername, config.rateLimits.sendPerUsername),
    verifyFailuresPerUsername: limitsOf(limits?.verifyFailuresPerUsername, config.rateLimits.verifyFailuresPerUsername),
  });
}
