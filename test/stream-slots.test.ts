// The streaming calls' slots (server/stream-slots.ts) on their own: a take that finds
// none free waits for a release, for a while, and leaves nothing behind on any path.
// hostile-connections.test.ts shows the same against the server, with real streams.
import { describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { StreamSlots } from "../src/server/stream-slots.ts";

const staying = () => new AbortController().signal;

describe("stream slots", () => {
  it("let a stream past the limit wait for a release and take the slot it frees", async () => {
    const slots = new StreamSlots(10, 1, 60_000);
    const release = await slots.take(false, "203.0.113.7", staying());
    const next = slots.take(false, "203.0.113.7", staying());
    expect(slots.waiting).toBe(1);
    release();
    const releaseNext = await next;
    expect(slots.waiting).toBe(0);
    // The freed slot is the waiter's now: the address is at its limit again.
    const controller = new AbortController();
    const third = slots.take(false, "203.0.113.7", controller.signal);
    expect(slots.waiting).toBe(1);
    controller.abort(new Error("left"));
    await expect(third).rejects.toThrow("left");
    releaseNext();
  });

  it("refuse a stream whose wait ends without a release, resource_exhausted, with nothing left waiting", async () => {
    const slots = new StreamSlots(10, 1, 20);
    await slots.take(false, "203.0.113.7", staying());
    const refused = await slots.take(false, "203.0.113.7", staying()).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(ConnectError);
    expect((refused as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((refused as ConnectError).rawMessage).toMatch(/the limit for one address/);
    expect(slots.waiting).toBe(0);
    // Other addresses are not held back.
    await slots.take(false, "198.51.100.1", staying());
  });

  it("give a caller that leaves while it waits its signal's reason and no slot, even when a release comes in the same tick", async () => {
    const slots = new StreamSlots(10, 1, 60_000);
    const release = await slots.take(false, "203.0.113.7", staying());
    const controller = new AbortController();
    const leaving = slots.take(false, "203.0.113.7", controller.signal);
    controller.abort(new Error("the client left"));
    release();
    await expect(leaving).rejects.toThrow("the client left");
    expect(slots.waiting).toBe(0);
    // The slot went to nobody: the next caller takes it without waiting (it would wait a minute).
    await slots.take(false, "203.0.113.7", staying());
  });

  it("let at most two streams of one address and 64 in all wait; past that, refuse at once", async () => {
    const slots = new StreamSlots(1, 100, 60_000);
    await slots.take(true, "", staying()); // the one slot, an administrator's
    const leaving = new AbortController();
    const waiting: Promise<unknown>[] = [];
    const wait = (address: string) => waiting.push(slots.take(false, address, leaving.signal).catch((err: unknown) => err));
    wait("203.0.113.7");
    wait("203.0.113.7");
    // A third from that address would wait a minute: refused at once instead.
    await expect(slots.take(false, "203.0.113.7", staying())).rejects.toMatchObject({ code: Code.ResourceExhausted });
    for (let i = 0; i < 62; i++) wait(`198.51.100.${i}`);
    expect(slots.waiting).toBe(64);
    await expect(slots.take(false, "192.0.2.1", staying())).rejects.toMatchObject({ code: Code.ResourceExhausted });
    leaving.abort(new Error("gone"));
    expect(await Promise.all(waiting)).toEqual(Array(64).fill(new Error("gone")));
    expect(slots.waiting).toBe(0);
  });
});
