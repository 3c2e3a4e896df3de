// The delivery API's waiting claims without a server, under fake timers: which
// claim a message wakes, how a wake-up is handed on, what other servers are told,
// and that every wait (for a message, for hearing other servers) and DueLater's
// retry timer end and leave no timer behind. Apart from delivery-waits.test.ts,
// whose servers set timers of their own that fake timers would count and hold.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ManualClock } from "../src/domain/clock.ts";
import type { Channel } from "../src/domain/outbox.ts";
import { DueLater } from "../src/rules/delivery/due-later.ts";
import { DeliveryWaits, type Hearing } from "../src/rules/delivery/waits.ts";

describe("DeliveryWaits", () => {
  const never = new AbortController().signal;
  beforeEach(() => vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] }));
  afterEach(() => vi.useRealTimers());

  it("answers a wake-up that came during the look at once, and none once the wait's time is up", async () => {
    const waits = new DeliveryWaits();
    const during = waits.ticket(["sms"]);
    waits.wake(["sms"]);
    expect(await during.wait(1_000, never)).toBe(true);
    const late = waits.ticket(["sms"]);
    waits.wake(["sms"]);
    expect(await late.wait(0, never)).toBe(false);
    expect(waits.waiting).toBe(0);
  });

  it("wakes the claims of the channels a message was queued on, and only those", async () => {
    const waits = new DeliveryWaits();
    const sms = waits.ticket(["sms"]).wait(5_000, never);
    const mail = waits.ticket(["mail_api"]).wait(5_000, never);
    expect(waits.waiting).toBe(2);
    waits.wake(["sms", "smtp"]);
    expect(await sms).toBe(true);
    expect(waits.waiting).toBe(1);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await mail).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("wakes one waiting claim per message, the one waiting longest", async () => {
    const waits = new DeliveryWaits();
    const woken: string[] = [];
    const wait = (name: string) => waits.ticket(["sms"]).wait(5_000, never).then((w) => (w && woken.push(name), w));
    const [first, second, third] = [wait("first"), wait("second"), wait("third")];
    waits.wake(["sms"]);
    expect(await first).toBe(true);
    expect(waits.waiting).toBe(2);
    waits.wake(["sms", "sms"]);
    expect(await Promise.all([second, third])).toEqual([true, true]);
    expect(woken).toEqual(["first", "second", "third"]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("hands a wake-up on when the claim it woke will not look again: its caller left, its time was up, or it answers other messages", async () => {
    const waits = new DeliveryWaits();
    // Each first one is woken during its look (its ticket taken, its wait not begun), no claim waiting then;
    // the claim behind it begins to wait afterwards.
    const pair = () => {
      const looking = waits.ticket(["sms"]);
      waits.wake(["sms"]);
      const behind = waits.ticket(["sms"]).wait(5_000, never);
      expect(waits.waiting).toBe(1);
      return { looking, behind };
    };
    const left = new AbortController();
    left.abort();
    const caller = pair();
    expect(await caller.looking.wait(5_000, left.signal)).toBe(false);
    expect(await caller.behind).toBe(true);

    const late = pair();
    expect(await late.looking.wait(0, never)).toBe(false);
    expect(await late.behind).toBe(true);

    const answered = pair();
    answered.looking.drop(); // its look found messages, which it answers
    expect(await answered.behind).toBe(true);

    // One that looks again keeps its wake-up.
    const again = pair();
    expect(await again.looking.wait(5_000, never)).toBe(true);
    again.looking.drop();
    expect(waits.waiting).toBe(1);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await again.behind).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("wakes a waiting claim before one still looking, and tells other servers only of the messages no claim waiting here took, never of those it heard from them", async () => {
    const told: Channel[][] = [];
    let heard!: (channels: ReadonlySet<Channel>) => void;
    const waits = new DeliveryWaits(
      async (wake) => ((heard = wake), { close: async () => {} }),
      (channels) => told.push(channels),
    );
    await waits.ready();
    const looking = waits.ticket(["sms"]);
    const here = waits.ticket(["sms"]).wait(5_000, never);
    waits.wake(["sms"]);
    expect(await here).toBe(true);
    expect(told).toEqual([]);
    // With no claim waiting, the one still looking is woken, and other servers are told too.
    waits.wake(["sms", "mail_api"]);
    expect(looking.wokenFor).toEqual(["sms"]);
    expect(told).toEqual([["sms", "mail_api"]]);
    // Its look answers other messages: it hands the wake-up on here only (told already), where nobody waits.
    looking.drop();
    expect(told).toHaveLength(1);
    // Announced by another server: every server heard it, none is told again.
    heard(new Set(["sms"]));
    expect(told).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("ends a wait for hearing other servers at its time, with its call, and when the waits stop, leaving no timer behind", async () => {
    // A listening connection that never opens (no connect timeout).
    const waits = new DeliveryWaits(() => new Promise<Hearing>(() => {}));
    const timedOut = waits.heard(1_000, never);
    const call = new AbortController();
    const left = waits.heard(5_000, call.signal);
    const stopped = waits.heard(5_000, never);
    expect(vi.getTimerCount()).toBe(3);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await timedOut).toBe(false);
    call.abort();
    expect(await left).toBe(false);
    void waits.stop();
    expect(await stopped).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
    // A connection that opens during the wait ends it, and its timer.
    let open!: (hearing: Hearing) => void;
    const hearing = new DeliveryWaits(() => new Promise<Hearing>((resolve) => (open = resolve)));
    const opened = hearing.heard(5_000, never);
    expect(vi.getTimerCount()).toBe(1);
    open({ close: async () => {} });
    expect(await opened).toBe(true);
    expect(hearing.hearing).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("ends a wait when its call ends and when the waits stop, leaving no timer behind; a wait after the stop ends at once", async () => {
    const waits = new DeliveryWaits();
    const call = new AbortController();
    const left = waits.ticket(["sms"]).wait(5_000, call.signal);
    const stopped = waits.ticket(["sms"]).wait(5_000, never);
    expect(vi.getTimerCount()).toBe(2);
    call.abort();
    expect(await left).toBe(false);
    await waits.stop();
    expect(await stopped).toBe(false);
    expect(await waits.ticket(["sms"]).wait(5_000, never)).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
    expect(waits.waiting).toBe(0);
  });
});

describe("DueLater", () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] }));
  afterEach(() => vi.useRealTimers());

  it("rings for each message at its time, the earliest first, and for none once stopped, leaving no timer behind", async () => {
    const rung: string[][] = [];
    // The server's clock may stand still (a test's): the times are kept by the process's own.
    const clock = new ManualClock();
    const later = new DueLater((channels) => rung.push(channels), clock);
    const inMs = (ms: number) => new Date(clock.now().getTime() + ms);
    later.add("sms", inMs(1_000));
    later.add("mail_api", inMs(500));
    later.add("sms", inMs(1_000));
    await vi.advanceTimersByTimeAsync(400);
    expect(rung).toEqual([]);
    await vi.advanceTimersByTimeAsync(200);
    expect(rung).toEqual([["mail_api"]]);
    await vi.advanceTimersByTimeAsync(500);
    expect(rung).toEqual([["mail_api"], ["sms", "sms"]]);
    expect(later.pending).toBe(0);
    expect(vi.getTimerCount()).toBe(0);

    later.add("sms", inMs(1_000));
    later.stop();
    later.add("sms", inMs(1_000));
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(rung).toHaveLength(2);
  });
});
