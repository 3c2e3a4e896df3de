// An organization and its settings. The settings are kept as their JSON
// encoding (the protobuf JSON of codegate.v1.OrganizationSettings, durations as
// strings like "600s"), which is what the database stores and what the API
// takes: this type names the fields the rules read.

/** A code policy override: unset fields keep the server's. */
export interface CodePolicySettings {
  length?: number;
  alphabet?: string;
  /** A JSON duration, e.g. "600s". */
  lifespan?: string;
  maxAttempts?: number;
}

export interface LimitSettings {
  max: number;
  /** A JSON duration, e.g. "3600s". */
  window: string;
}

export interface RateLimitSettings {
  sendPerUsername?: LimitSettings[];
  sendPerAddress?: LimitSettings[];
  verifyFailuresPerUsername?: LimitSettings[];
  verifyFailuresPerAddress?: LimitSettings[];
}

export interface OrgSettings {
  selfServiceSignup?: boolean;
  senderName?: string;
  senderAddress?: string;
  loginCode?: CodePolicySettings;
  registrationCode?: CodePolicySettings;
  recoveryCode?: CodePolicySettings;
  notifyUnknownRecovery?: boolean;
  rateLimits?: RateLimitSettings;
  /** BCP 47: the mails' language when the caller's has no template; English when unset. */
  defaultLocale?: string;
  /** Mail a link beside the code, per purpose. */
  mailLinks?: { login?: boolean; registration?: boolean; recovery?: boolean };
  /** Where this service's pages hand the proof token (in the URL's fragment). */
  returnUrl?: string;
  /** The channel of each purpose's codes, by the names of codegate.v1.DeliveryChannel; SMTP when unset. */
  delivery?: { login?: string; registration?: string; recovery?: string };
}

export interface Org {
  id: string;
  tenantId: string;
  name: string;
  settings: OrgSettings;
  createdAt: Date;
}

/** A JSON duration ("600s", "1.5s") in milliseconds; undefined when it is not one. */
export function jsonDurationMs(text: string | undefined): number | undefined {
  const m = /^(-?\d+)(?:\.(\d{1,9}))?s$/.exec(text ?? "");
  if (!m) return undefined;
  return Number(m[1]) * 1000 + Math.floor(Number((m[2] ?? "0").padEnd(9, "0")) / 1e6);
}
