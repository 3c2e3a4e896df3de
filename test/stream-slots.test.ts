// The streaming calls' slots (server/stream-slots.ts) on their own: a take that finds
// none free waits for a release, for a while, and leaves nothing behind on any path
// (no waiter, no timer, no abort listener). hostile-connections.test.ts shows the
// same against the server, with real streams. The timers are vitest's, so that
// those of other files in the process (isolate: false) do not count.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { getEventListeners } from "node:events";
import { Code, ConnectError } from "@connectrpc/connect";
import { StreamSlots } from "../src/server/stream-slots.ts";

const staying = () => new AbortController().signal;
const timers = () => vi.getTimerCount();
/** A take refused without waiting: refused before it could wait, with the count of waiters unchanged. */
async function refusedAtOnce(slots: StreamSlots, take: () => Promise<unknown>): Promise<ConnectError> {
  const waiting = slots.waiting;
  const taking = take().catch((err: unknown) => err);
  expect(slots.waiting).toBe(waiting);
  const refused = await taking;
  expect(refused).toBeInstanceOf(ConnectError);
  expect((refused as ConnectError).code).toBe(Code.ResourceExhausted);
  return refused as ConnectError;
}

describe("stream slots", () => {
  beforeEach(() => void vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] }));
  afterEach(() => void vi.useRealTimers());

  it("let a stream past the limit wait for a release and take the slot it frees", async () => {
    const slots = new StreamSlots(10, 1, 60_000);
    const before = timers();
    const release = await slots.take(false, "203.0.113.7", staying());
    const signal = staying();
    const next = slots.take(false, "203.0.113.7", signal);
    expect([slots.waiting, slots.waitingFrom("203.0.113.7"), timers(), getEventListeners(signal, "abort").length]).toEqual([1, 1, before + 1, 1]);
    release();
    const releaseNext = await next;
    expect([slots.waiting, slots.waitingFrom("203.0.113.7"), timers(), getEventListeners(signal, "abort").length]).toEqual([0, 0, before, 0]);
    // The freed slot is the waiter's now: the address is at its limit again.
    const controller = new AbortController();
    const third = slots.take(false, "203.0.113.7", controller.signal);
    expect(slots.waiting).toBe(1);
    controller.abort(new ConnectError("left", Code.Canceled));
    await expect(third).rejects.toThrow("left");
    releaseNext();
  });

  it("wake a waiter only for a release it may use, in order of arrival, its timer and listener armed once for its wait", async () => {
    // Six slots, of which three for streams without an admin token.
    const slots = new StreamSlots(6, 1, 60_000);
    const releaseX = await slots.take(false, "203.0.113.7", staying());
    const releaseY = await slots.take(false, "198.51.100.1", staying());
    const releaseZ = await slots.take(false, "192.0.2.1", staying());
    const before = timers();
    const signal = staying();
    const listening = vi.spyOn(signal, "addEventListener");
    const taken: string[] = [];
    const fromX = slots.take(false, "203.0.113.7", signal).then((release) => (taken.push("X"), release));
    const fromW = slots.take(false, "192.0.2.99", staying()).then((release) => (taken.push("W"), release));
    // Y's slot frees one of the three, which W may take and X (at its address's limit) may not.
    releaseY();
    const releaseW = await fromW;
    expect([taken, slots.waiting, timers(), listening.mock.calls.length]).toEqual([["W"], 1, before + 1, 1]);
    releaseW();
    releaseZ();
    expect(slots.waiting).toBe(1);
    releaseX();
    const releaseFromX = await fromX;
    expect([taken, slots.waiting, timers(), listening.mock.calls.length, getEventListeners(signal, "abort").length]).toEqual([["W", "X"], 0, before, 1, 0]);
    // Nor is anything left on the server's own signal, which lives as long as the process.
    expect(getEventListeners(slots.ending, "abort")).toHaveLength(0);
    releaseFromX();
  });

  it("give no slot to a caller already gone or to any once the server stops, though one is free; a release counts once however often it is called", async () => {
    const slots = new StreamSlots(6, 1, 60_000);
    const gone = new AbortController();
    gone.abort(new ConnectError("already gone", Code.Canceled));
    await expect(slots.take(false, "203.0.113.7", gone.signal)).rejects.toThrow("already gone");
    // The address's one slot is still free: nobody took it.
    const release = await slots.take(false, "203.0.113.7", staying());
    release();
    release();
    // Released once: the three anonymous slots (half of six) are free, three more take them and a fourth caller waits.
    const others = [await slots.take(false, "198.51.100.1", staying()), await slots.take(false, "198.51.100.2", staying()), await slots.take(false, "198.51.100.3", staying())];
    const waiting = slots.take(false, "198.51.100.4", staying()).catch((err: unknown) => err);
    expect(slots.waiting).toBe(1);
    slots.endAll();
    expect(await waiting).toMatchObject({ code: Code.Unavailable });
    others[0]!();
    await expect(slots.take(true, "", staying())).rejects.toMatchObject({ code: Code.Unavailable });
  });

  it("refuse a stream whose wait ends without a release, resource_exhausted, with nothing left waiting", async () => {
    const slots = new StreamSlots(10, 1, 20);
    await slots.take(false, "203.0.113.7", staying());
    const before = timers();
    const signal = staying();
    const taking = slots.take(false, "203.0.113.7", signal).catch((err: unknown) => err);
    expect([slots.waiting, timers()]).toEqual([1, before + 1]);
    await vi.advanceTimersByTimeAsync(20);
    const refused = await taking;
    expect(refused).toBeInstanceOf(ConnectError);
    expect((refused as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((refused as ConnectError).rawMessage).toMatch(/the limit for one address/);
    expect([slots.waiting, slots.waitingFrom("203.0.113.7"), timers(), getEventListeners(signal, "abort").length, getEventListeners(slots.ending, "abort").length]).toEqual([0, 0, before, 0, 0]);
    // Other addresses are not held back.
    await slots.take(false, "198.51.100.1", staying());
  });

  it("give a caller that leaves while it waits its signal's reason and no slot, even when a release comes in the same tick", async () => {
    const slots = new StreamSlots(10, 1, 60_000);
    const release = await slots.take(false, "203.0.113.7", staying());
    const before = timers();
    const controller = new AbortController();
    const leaving = slots.take(false, "203.0.113.7", controller.signal);
    controller.abort(new ConnectError("the client left", Code.Canceled));
    release();
    await expect(leaving).rejects.toThrow("the client left");
    expect([slots.waiting, slots.waitingFrom("203.0.113.7"), timers(), getEventListeners(controller.signal, "abort").length]).toEqual([0, 0, before, 0]);
    // The slot went to nobody: the next caller takes it without waiting.
    const taking = slots.take(false, "203.0.113.7", staying());
    expect(slots.waiting).toBe(0);
    await taking;
  });

  it("end the waits when the server stops, and answer a reason that is no ConnectError as cancelled", async () => {
    const slots = new StreamSlots(1, 1, 60_000);
    await slots.take(false, "203.0.113.7", staying());
    const waiting = slots.take(false, "198.51.100.1", staying());
    slots.endAll();
    await expect(waiting).rejects.toMatchObject({ code: Code.Unavailable });
    expect(slots.waiting).toBe(0);
    const other = new StreamSlots(1, 1, 60_000);
    await other.take(false, "203.0.113.7", staying());
    const controller = new AbortController();
    const leaving = other.take(false, "198.51.100.1", controller.signal);
    controller.abort();
    await expect(leaving).rejects.toMatchObject({ code: Code.Canceled });
  });

  it("let at most two streams of one address and 64 in all wait; past that, refuse at once", async () => {
    const slots = new StreamSlots(1, 100, 60_000);
    await slots.take(true, "", staying()); // the one slot, an administrator's
    const leaving = new AbortController();
    const waiting: Promise<unknown>[] = [];
    const wait = (address: string) => waiting.push(slots.take(false, address, leaving.signal).catch((err: unknown) => err));
    wait("203.0.113.7");
    wait("203.0.113.7");
    await refusedAtOnce(slots, () => slots.take(false, "203.0.113.7", staying()));
    for (let i = 0; i < 62; i++) wait(`198.51.100.${i}`);
    expect(slots.waiting).toBe(64);
    await refusedAtOnce(slots, () => slots.take(false, "192.0.2.1", staying()));
    const gone = new ConnectError("gone", Code.Canceled);
    leaving.abort(gone);
    expect(await Promise.all(waiting)).toEqual(Array(64).fill(gone));
    expect([slots.waiting, getEventListeners(leaving.signal, "abort").length]).toEqual([0, 0]);
  });
});
