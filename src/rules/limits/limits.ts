// The rate limits of the public flows. They key on the username as typed
// (normalized), whether or not an account exists, so a limit reveals nothing;
// the client address is the call's, as the server resolved it (lib/address.ts).
import type { Config } from "../../config/config.ts";
import { RateLimited } from "../../domain/errors.ts";
import { normalizeUsername } from "../../domain/identity.ts";
import type { Org } from "../../domain/organization.ts";
import type { Purpose } from "../../domain/purpose.ts";
import type { LimitedKey } from "../../domain/rate-limits.ts";
import { limitsOf, type RateLimiter } from "./rate-limiter.ts";

export class FlowLimits {
  private readonly limiter: RateLimiter;
  private readonly config: Config;
  constructor(limiter: RateLimiter, config: Config) {
    this.limiter = limiter;
    this.config = config;
  }

  /** The limits of one code send: per username as typed and purpose, and per client address. */
  sendKeys(org: Org | undefined, purpose: Purpose, username: string, address: string): LimitedKey[] {
    const overrides = org?.settings.rateLimits;
    const defaults = this.config.rateLimits;
    return [
      { key: `send:${purpose}:${normalizeUsername(username)}`, limits: limitsOf(overrides?.sendPerUsername, defaults.sendPerUsername) },
      { key: `send-from:${address}`, limits: limitsOf(overrides?.sendPerAddress, defaults.sendPerAddress) },
    ];
  }

  /**
   * Counts a hit on the keys and throws RateLimited when over a limit.
   * `orgKey` is the organization as the request named it, known or not.
   */
  async enforce(orgKey: string, keys: LimitedKey[]): Promise<void> {
    const wait = await this.limiter.hit(orgKey, keys);
    if (wait > 0) throw new RateLimited(wait);
  }

  /** The limits of wrong codes from a client address, per organization (or, for a flow id alone, across them). */
  verifyAddressKeys(org: Org | undefined, address: string): LimitedKey[] {
    const limits = limitsOf(org?.settings.rateLimits?.verifyFailuresPerAddress, this.config.rateLimits.verifyFailuresPerAddress);
    return [{ key: `failed-from:${address}`, limits }];
  }

  /** Counts a failed admin authentication from a client address (across organizations); answers how long it must wait: 0 within the limit. */
  adminAuthFailed(address: string): Promise<number> {
    return this.limiter.hit("", [{ key: `admin-auth-failed-from:${address}`, limits: this.config.rateLimits.adminAuthFailuresPerAddress }]);
  }

  /** The limits of wrong codes for a username; none without an organization or username. */
  verifyKeys(org: Org | undefined, username: string | undefined): LimitedKey[] {
    if (!org || !username) return [];
    const limits = limitsOf(org.settings.rateLimits?.verifyFailuresPerUsername, this.config.rateLimits.verifyFailuresPerUsername);
    return [{ key: `failed:${normalizeUsername(username)}`, limits }];
  }
}
