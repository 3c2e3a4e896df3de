// Reads the server's configuration from environment variables. Every variable is
// checked at start; all problems are reported together, each naming the variable
// and what was expected, so that a bad deployment fails before it serves anything.
import type { Limit } from "../domain/policy.ts";
import { formatMs, parseDuration } from "../lib/duration.ts";
import { mailAddress } from "../lib/mail-address.ts";

/** The largest count of a rate limit: counters are PostgreSQL integers. */
export const MAX_LIMIT = 2_147_483_647;

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

type Env = Record<string, string | undefined>;

/** Collects typed values and problems from an environment. */
export class EnvReader {
  readonly problems: string[] = [];
  private readonly env: Env;
  constructor(env: Env) {
    this.env = env;
  }

  raw(name: string): string | undefined {
    const v = this.env[name];
    return v === undefined || v.trim() === "" ? undefined : v.trim();
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  /** A plain mail address (local@domain). */
  address(name: string, fallback: string): string {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    try {
      mailAddress(v);
    } catch {
      this.problems.push(`${name}=${JSON.stringify(v)}: expected a mail address such as no-reply@example.com`);
      return fallback;
    }
    return v;
  }

  int(name: string, fallback: number, min: number, max: number): number {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    if (!/^-?\d+$/.test(v) || Number(v) < min || Number(v) > max) {
      this.problems.push(`${name}=${JSON.stringify(v)}: expected a whole number from ${min} to ${max}`);
      return fallback;
    }
    return Number(v);
  }

  bool(name: string, fallback: boolean): boolean {
    const v = this.raw(name)?.toLowerCase();
    if (v === undefined) return fallback;
    if (["1", "true", "yes", "on"].includes(v)) return true;
    if (["0", "false", "no", "off"].includes(v)) return false;
    this.problems.push(`${name}=${JSON.stringify(v)}: expected true or false`);
    return fallback;
  }

  oneOf<T extends string>(name: string, fallback: T, allowed: readonly T[]): T {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    if (!(allowed as readonly string[]).includes(v)) {
      this.problems.push(`${name}=${JSON.stringify(v)}: expected one of ${allowed.join(", ")}`);
      return fallback;
    }
    return v as T;
  }

  /** A duration such as `90s`, `10m`, `24h` or `1500ms`; answers milliseconds. */
  duration(name: string, fallbackMs: number, minMs: number, maxMs: number): number {
    const v = this.raw(name);
    if (v === undefined) return fallbackMs;
    const ms = parseDuration(v);
    if (ms === undefined || ms < minMs || ms > maxMs) {
      this.problems.push(
        `${name}=${JSON.stringify(v)}: expected a duration like 90s, 10m or 24h, from ${formatMs(minMs)} to ${formatMs(maxMs)}`,
      );
      return fallbackMs;
    }
    return ms;
  }

  /** Rate limits like `1/30s,5/1h` (at most 1 per 30 seconds and 5 per hour); `off` for none. */
  limits(name: string, fallback: string): Limit[] {
    const text = this.raw(name) ?? fallback;
    if (text === "off") return [];
    const out: Limit[] = [];
    for (const part of text.split(",").map((p) => p.trim())) {
      const m = /^(\d+)\/(.+)$/.exec(part);
      const windowMs = m ? parseDuration(m[2]) : undefined;
      if (!m || Number(m[1]) < 1 || Number(m[1]) > MAX_LIMIT || windowMs === undefined || windowMs < 1000 || out.some((l) => l.windowMs === windowMs)) {
        this.problems.push(
          `${name}=${JSON.stringify(text)}: expected limits like 1/30s,5/1h (count from 1 to ${MAX_LIMIT}/duration, window at least 1s, each window once), or off`,
        );
        return [];
      }
      out.push({ max: Number(m[1]), windowMs });
    }
    return out;
  }

  /** A chance like `1/10000` or `0.0001`, from 0 to 1. */
  chance(name: string, fallback: number): number {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const m = /^1\/(\d+(?:\.\d+)?)$/.exec(v);
    const value = m ? 1 / Number(m[1]) : /^\d*\.?\d+(e-?\d+)?$/i.test(v) ? Number(v) : Number.NaN;
    if (!(value >= 0 && value <= 1)) {
      this.problems.push(`${name}=${JSON.stringify(v)}: expected a chance like 1/10000 or 0.0001`);
      return fallback;
    }
    return value;
  }

  url(name: string, protocols: readonly string[]): URL | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    try {
      const u = new URL(v);
      if (!protocols.includes(u.protocol)) throw new Error();
      return u;
    } catch {
      // The value may hold a password: name the variable, never echo it.
      this.problems.push(`${name}: expected a URL starting with ${protocols.map((p) => `${p}//`).join(" or ")}`);
      return undefined;
    }
  }

  problem(message: string): void {
    this.problems.push(message);
  }
}
