// Every send of a kind answers no sooner than the 90th percentile of the recent sends
// of that kind that queued mail (src/rules/answer-times.ts). The clock and the wait are
// the test's: what is checked is which wait is asked for, not how long it took.
import { describe, expect, it } from "vitest";
import { AnswerTimes } from "../src/rules/answer-times.ts";

function times() {
  let now = 0;
  const waits: { ms: number; signal: AbortSignal }[] = [];
  const answerTimes = new AnswerTimes({ now: () => now, waitUntil: async (due, signal) => void waits.push({ ms: due - now, signal }) });
  /** A send that queued mail, started at `from`, whose work is done at `to`. */
  const timed = (kind: string, from: number, to: number) => ((now = to), answerTimes.record(kind, from));
  /** A send, started at `from`, held once its work is done at `to`: the wait it asks for (0: none). */
  const held = async (kind: string, from: number, to: number, signal?: AbortSignal) => {
    const before = waits.length;
    now = to;
    await answerTimes.hold(kind, from, signal);
    return waits.length > before ? waits.at(-1)!.ms : 0;
  };
  return { timed, held, waits };
}

describe("answer times", () => {
  it("hold every send of a kind until the 90th percentile of its sends that queued mail", async () => {
    const { timed, held, waits } = times();
    // Ten sends of 1..10 ms: the 90th percentile of ten is the 9th (index 8).
    for (let ms = 1; ms <= 10; ms++) timed("login", 0, ms);
    const signal = new AbortController().signal;
    expect(await held("login", 100, 101, signal)).toBe(8); // one that queued nothing, done in 1 ms
    expect(waits.at(-1)!.signal).toBe(signal);
    expect(await held("login", 200, 203)).toBe(6); // one that did, done in 3
    expect(await held("login", 300, 309)).toBe(0); // slower than the percentile: answered as it is
    expect(await held("recovery", 400, 401)).toBe(0); // no recovery send has queued mail yet
  });

  it("follow the load: the percentile is taken again every 32 sends, over the last 256", async () => {
    const { timed, held } = times();
    for (let i = 0; i < 256; i++) timed("login", 0, 100);
    expect(await held("login", 0, 0)).toBe(100);
    for (let i = 0; i < 31; i++) timed("login", 0, 2);
    expect(await held("login", 0, 0)).toBe(100); // not yet taken again
    timed("login", 0, 2);
    expect(await held("login", 0, 0)).toBe(100); // 32 of 256 are faster: the 90th percentile is still 100
    for (let i = 0; i < 224; i++) timed("login", 0, 2); // every older one replaced
    expect(await held("login", 0, 0)).toBe(2);
  });
});
