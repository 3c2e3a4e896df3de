// The rate limits of the public flows. They key on the username as typed
// (normalized), whether or not an account exists, so a limit reveals nothing.
import type { HandlerContext } from "@connectrpc/connect";
import { addressKey, clientAddress, parseTrustedProxies, type TrustedProxies } from "../abuse/client-address.ts";
import { limitsOf, rateLimited, type LimitedKey, type RateLimiter } from "../abuse/rate-limiter.ts";
import { normalizeUsername } from "../codes/engine.ts";
import type { Config, Purpose } from "../config/config.ts";
import { clientAddressKey, forwardedForKey } from "../transport/rpc.ts";
import type { Org } from "./organizations.ts";

export class FlowLimits {
  private readonly limiter: RateLimiter;
  private readonly config: Config;
  private readonly trustedProxies: TrustedProxies;
  constructor(limiter: RateLimiter, config: Config) {
    this.limiter = limiter;
    this.config = config;
    this.trustedProxies = parseTrustedProxies(config.trustedProxies).proxies;
  }

  /** What the per-address limits of a call count: its client's address, an IPv6 client by its /64. */
  private addressOf(ctx: HandlerContext): string {
    return addressKey(clientAddress(ctx.values.get(clientAddressKey), ctx.values.get(forwardedForKey), this.trustedProxies));
  }

  /** The limits of one code send: per username as typed and purpose, and per client address. */
  sendKeys(org: Org | undefined, purpose: Purpose, username: string, ctx: HandlerContext): LimitedKey[] {
    const overrides = org?.settings.rateLimits;
    const defaults = this.config.rateLimits;
    return [
      { key: `send:${purpose}:${normalizeUsername(username)}`, limits: limitsOf(overrides?.sendPerUsername, defaults.sendPerUsername) },
      { key: `send-from:${this.addressOf(ctx)}`, limits: limitsOf(overrides?.sendPerAddress, defaults.sendPerAddress) },
    ];
  }

  /**
   * Counts a hit on the keys and throws resource_exhausted when over a limit.
   * `orgKey` is the organization as the request named it, known or not.
   */
  async enforce(orgKey: string, keys: LimitedKey[]): Promise<void> {
    const wait = await this.limiter.hit(orgKey, keys);
    if (wait > 0) throw rateLimited(wait);
  }

  /** The limits of wrong codes from the call's client address, per organization (or, for a flow id alone, across them). */
  verifyAddressKeys(org: Org | undefined, ctx: HandlerContext): LimitedKey[] {
    const limits = limitsOf(org?.settings.rateLimits?.verifyFailuresPerAddress, this.config.rateLimits.verifyFailuresPerAddress);
    return [{ key: `failed-from:${this.addressOf(ctx)}`, limits }];
  }

  /**
   * Counts a failed admin authentication from the call's client address (across
   * organizations) and answers how long that address must wait: 0 within the limit.
   */
  async adminAuthFailed(ctx: HandlerContext): Promise<{ address: string; waitMs: number }> {
    const address = this.addressOf(ctx);
    const waitMs = await this.limiter.hit("", [{ key: `admin-auth-failed-from:${address}`, limits: this.config.rateLimits.adminAuthFailuresPerAddress }]);
    return { address, waitMs };
  }

  /** The limits of wrong codes for a username; none without an organization or username. */
  verifyKeys(org: Org | undefined, username: string | undefined): LimitedKey[] {
    if (!org || !username) return [];
    const limits = limitsOf(org.settings.rateLimits?.verifyFailuresPerUsername, this.config.rateLimits.verifyFailuresPerUsername);
    return [{ key: `failed:${normalizeUsername(username)}`, limits }];
  }
}
