// The worst-case chance that an attacker who never sees a user's mail guesses
// one of that account's codes within a day, from any number of addresses,
// computed from the code policies and the per-username limits:
//
// - the attacker can have codes sent (their own bound flows, or the seed paths)
//   at most S_p times a day per purpose: the send limits per username;
// - each code takes at most its attempts; wrong guesses against live codes are
//   counted per username, and past that limit a code takes only its first
//   attempt (so that an owner's fresh code still works: nobody is locked out);
// - so the wrong guesses of a day are at most
//   min(Σ S_p·A_p, F + Σ S_p), each right with chance 1/N_p, N_p = |alphabet|^length.
//
// Limits are fixed windows: in any 24 hours a limit of `max` per window W counts
// at most (⌈24h/W⌉ + 1)·max events. An administrator's recovery code is not
// counted: it is redeemed only through its flow id, which is not guessable.
import type { CodePolicy, Limit } from "./policy.ts";
import type { Purpose } from "./purpose.ts";

const DAY_MS = 86_400_000;

/** The most events a set of fixed-window limits lets through in any 24 hours (Infinity without limits). */
export function mostPerDay(limits: readonly Limit[]): number {
  let most = Number.POSITIVE_INFINITY;
  for (const l of limits) most = Math.min(most, (Math.ceil(DAY_MS / l.windowMs) + 1) * l.max);
  return most;
}

export interface GuessInputs {
  policies: Record<Purpose, CodePolicy>;
  sendPerUsername: readonly Limit[];
  verifyFailuresPerUsername: readonly Limit[];
}

export interface GuessChance {
  /** The worst-case chance of one right guess in a day. */
  chance: number;
  /** Codes an attacker can have sent per purpose in a day, and wrong guesses counted per username. */
  sendsPerDay: number;
  failuresPerDay: number;
}

export function worstDailyGuessChance(inputs: GuessInputs): GuessChance {
  const sendsPerDay = mostPerDay(inputs.sendPerUsername);
  const failuresPerDay = mostPerDay(inputs.verifyFailuresPerUsername);
  const policies = Object.values(inputs.policies);
  const space = (p: CodePolicy) => p.alphabet.length ** p.length;
  const smallest = Math.min(...policies.map(space));
  const uncapped = policies.reduce((sum, p) => sum + (sendsPerDay * p.maxAttempts) / space(p), 0);
  const capped = failuresPerDay / smallest + policies.reduce((sum, p) => sum + sendsPerDay / space(p), 0);
  const bound = Math.min(uncapped, capped);
  // A bound of 1 or more (no limit at all gives Infinity) means the attacker may well succeed.
  return { chance: Number.isNaN(bound) ? 1 : Math.min(1, bound), sendsPerDay, failuresPerDay };
}

/** "1 in 12,500", for people. */
export function oneIn(chance: number): string {
  if (chance >= 1) return "1 in 1 (the limits do not bound the guesses)";
  return `1 in ${Math.round(1 / chance).toLocaleString("en-US")}`;
}

