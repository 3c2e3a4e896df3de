import type { CodePolicy as CodePolicyOverride, OrganizationSettings } from "../../gen/codegate/v1/types_pb.ts";
import type { CodePolicy, Config, Purpose } from "../config/config.ts";

const overrideOf = (settings: OrganizationSettings, purpose: Purpose): CodePolicyOverride | undefined =>
  ({ login: settings.loginCode, registration: settings.registrationCode, recovery: settings.recoveryCode })[purpose];

/** The server's policy for a purpose, with the organization's overrides applied. */
export function effectivePolicy(config: Config, settings: OrganizationSettings, purpose: Purpose): CodePolicy {
  const base = config.codes[purpose];
  const o = overrideOf(settings, purpose);
  if (!o) return base;
  const alphabet = o.alphabet !== undefined && new Set(o.alphabet).size === o.alphabet.length ? o.alphabet : base.alphabet;
  return {
    length: o.length ?? base.length,
    alphabet,
    lifespanMs: o.lifespan ? Number(o.lifespan.seconds) * 1000 + Math.floor(o.lifespan.nanos / 1e6) : base.lifespanMs,
    maxAttempts: o.maxAttempts ?? base.maxAttempts,
  };
}

