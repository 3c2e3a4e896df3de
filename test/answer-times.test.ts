// Every call of a kind is held until the 90th percentile of the recent calls of that
// kind that did the work (src/rules/answer-times.ts), plus a millisecond for the timer,
// a wait armed when the call starts.
// The clock and the timers are the test's: what is checked is which wait is armed and
// when it is cleared, not how long anything took.
import { describe, expect, it } from "vitest";
import { AnswerTimes } from "../src/rules/answer-times.ts";

function times() {
  let now = 0;
  const armed: { ms: number; cancelled: boolean; pass: () => void }[] = [];
  const answerTimes = new AnswerTimes({
    now: () => now,
    arm: (ms) => {
      const wait = { ms, cancelled: false, pass: () => {} };
      armed.push(wait);
      return { passed: new Promise<void>((resolve) => (wait.pass = resolve)), cancel: () => void (wait.cancelled = true) };
    },
  });
  /** A call that did the work (of `group`), started at `from` and done at `to`. */
  const worked = (kind: string, from: number, to: number, group?: string) => {
    now = from;
    const hold = answerTimes.hold(kind);
    now = to;
    hold.record(group);
    hold.cancel();
  };
  /** The wait a call of `kind` starting now is armed with (0: none). */
  const armedFor = (kind: string) => {
    const before = armed.length;
    answerTimes.hold(kind).cancel();
    return armed.length > before ? armed.at(-1)!.ms : 0;
  };
  return { answerTimes, worked, armedFor, armed, at: (ms: number) => (now = ms) };
}

describe("answer times", () => {
  it("arm every call of a kind, at its start, with the 90th percentile of the calls of its kind that did the work", () => {
    const { worked, armedFor } = times();
    // Ten of 1..10 ms: the 90th percentile of ten is the 9th (index 8).
    for (let ms = 1; ms <= 10; ms++) worked("login", 100 * ms, 100 * ms + ms);
    expect(armedFor("login")).toBe(9 + 1);
  });

  it("hold every call of a kind to the longest hold, 250 ms, until one of its calls has done the work: the first that does answers with the others", () => {
    const { worked, armedFor } = times();
    expect(armedFor("login")).toBe(250);
    worked("login", 0, 30);
    expect(armedFor("login")).toBe(30 + 1);
    expect(armedFor("recovery")).toBe(250); // another kind's times are its own
  });

  it("let a call answer when its wait has passed, and clear the wait however the call ends", async () => {
    const { answerTimes, worked, armed } = times();
    worked("login", 0, 5);
    const held = answerTimes.hold("login");
    let answered = false;
    const answer = held.passed().then(() => (answered = true));
    await Promise.resolve();
    expect(answered).toBe(false);
    armed.at(-1)!.pass();
    await answer;
    held.cancel();
    expect(armed.at(-1)!.cancelled).toBe(true);
    const refused = answerTimes.hold("login"); // a call that ends otherwise (refused, failed, right) only cancels
    refused.cancel();
    expect(armed.at(-1)!.cancelled).toBe(true);
  });

  it("follow the load: the percentile is taken again every 32 calls, over the last 256", () => {
    const { worked, armedFor } = times();
    for (let i = 0; i < 256; i++) worked("login", 0, 100);
    expect(armedFor("login")).toBe(100 + 1);
    for (let i = 0; i < 32; i++) worked("login", 0, 2);
    expect(armedFor("login")).toBe(100 + 1); // taken again: 32 of 256 are faster, the 90th percentile is still 100
    for (let i = 0; i < 224; i++) worked("login", 0, 2); // every older one replaced
    expect(armedFor("login")).toBe(2 + 1);
  });

  it("take each of the first 32 durations at once", () => {
    const { worked, armedFor } = times();
    for (let i = 1; i <= 32; i++) {
      worked("login", 0, i);
      expect(armedFor("login"), `after ${i}`).toBe(Math.floor(0.9 * (i - 1)) + 1 + 1);
    }
  });

  it("hold a kind to its slowest group: many cheap calls do not pull the hold below the dear ones", () => {
    const { worked, armedFor } = times();
    for (let i = 0; i < 10; i++) worked("recovery", 0, 20, "code");
    for (let i = 0; i < 256; i++) worked("recovery", 0, 2, "notice");
    expect(armedFor("recovery")).toBe(20 + 1);
  });

  it("never hold a call longer than 250 ms, however slow the calls that did the work were", () => {
    const { worked, armedFor } = times();
    worked("login", 0, 10_000);
    expect(armedFor("login")).toBe(250);
  });
});
