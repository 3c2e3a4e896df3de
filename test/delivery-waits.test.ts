// The delivery API's long poll (ClaimRequest.wait) against a real PostgreSQL: a
// claim that finds nothing due waits for a message to be queued, by its own server
// or by another on the same database (NOTIFY), and answers it; a wait ends with its
// caller, before the call's deadline, and at shutdown, leaving nothing waiting and
// nothing leased to nobody. A database of their own: no other test's message is due.
// Each wait is checked to be in place (the server counts its waiting claims) before
// the message it is to hear of is queued; where a claim must be caught between its
// statement and its answer, the statement's answer is held (instrumentSql).
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { CourierMessageStatus, DeliveryChannel, IdentityState, type Organization } from "@codegate/client/node";
import { announceMailQueued, listenMailQueued } from "../src/store/mail-queued.ts";
import type { Row, Sql } from "../src/store/sql.ts";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { bearer, postJson } from "./support/clients.ts";
import { oneof, receipt } from "./support/results.ts";

/** A server's RPC_TIMEOUT here: a wait of 30 s is cut to end before it. */
const RPC_TIMEOUT_MS = 8_000;
let a: TestServer;
let b: TestServer;
let fxA: ReturnType<typeof adminFixtures>;
let fxB: ReturnType<typeof adminFixtures>;
let org: Organization;

beforeAll(async () => {
  // No courier: nothing here is mailed, and the sends queue texts only.
  a = await startTestServer({ COURIER_ENABLED: "false", RPC_TIMEOUT: `${RPC_TIMEOUT_MS}ms` });
  b = await startTestServer({ DATABASE_URL: a.databaseUrl, COURIER_ENABLED: "false", RPC_TIMEOUT: `${RPC_TIMEOUT_MS}ms` });
  fxA = adminFixtures(a.url);
  fxB = adminFixtures(b.url);
  org = await fxA.org("Waiting SMS", { delivery: { login: DeliveryChannel.SMS } });
});
afterAll(async () => {
  fxA?.close();
  fxB?.close();
  await b?.close();
  await a?.close();
});

let n = 0;
/** An identity with a phone number of its own; answers how to send it a login code, and its number. */
async function smsUser(fx = fxA, inOrg = org): Promise<{ send: (fx: typeof fxA) => Promise<unknown>; number: string }> {
  const username = `wait-${++n}@example.com`;
  const number = `+4178${String(1_000_000 + n).slice(1)}0`;
  const created = (await fx.clients.admin.createIdentity({ orgId: inOrg.id, username, phoneNumber: number, skipRegistrationCode: true })).identity!;
  await fx.clients.admin.setIdentityState({ identityId: created.id, state: IdentityState.ACTIVE });
  return { number, send: (sender) => sender.clients.login.sendLoginCode({ orgId: inOrg.id, username }) };
}

const WAIT = durationFromMs(30_000);
const claimWaiting = (fx: typeof fxA, opts: { signal?: AbortSignal; timeoutMs?: number } = {}) =>
  fx.clients.delivery.claim({ channels: [DeliveryChannel.SMS], maxMessages: 10, wait: WAIT }, opts).then((r) => r.messages);
const waitingOn = (server: TestServer, count: number) => vi.waitFor(() => expect(server.app.deliveryWaits.waiting).toBe(count), { timeout: 5_000 });

/** One more server on the database (or `DATABASE_URL: ""`, the embedded one) for one test, closed after it. */
async function withServer(settings: Record<string, string>, test: (server: TestServer, fx: typeof fxA) => Promise<void>): Promise<void> {
  const server = await startTestServer({ DATABASE_URL: a.databaseUrl, COURIER_ENABLED: "false", RPC_TIMEOUT: `${RPC_TIMEOUT_MS}ms`, ...settings });
  const fx = adminFixtures(server.url);
  try {
    await test(server, fx);
  } finally {
    fx.close();
    await server.close();
  }
}

describe("a waiting claim", () => {
  it("answers a text its own server queues during the wait, with the code (on the embedded database, with no NOTIFY to hear)", async () => {
    await withServer({ DATABASE_URL: "" }, async (e, fxE) => {
      const user = await smsUser(fxE, await fxE.org("Waiting SMS", { delivery: { login: DeliveryChannel.SMS } }));
      const claimed = claimWaiting(fxE);
      await waitingOn(e, 1);
      await user.send(fxE);
      // Without the wake-up it would answer empty, once its wait (cut to the deadline) was over.
      const [m] = await claimed;
      expect(m).toMatchObject({ recipient: user.number, channel: DeliveryChannel.SMS });
      expect(oneof(m.content, "text").body).toMatch(/^\d{6}$/);
      expect(e.app.deliveryWaits.waiting).toBe(0);
      expect((await fxE.clients.delivery.ack({ messages: [receipt(m)] })).ackedIds).toEqual([m.id]);
    });
  });

  it("answers a text another server on the database queues (NOTIFY)", async () => {
    const user = await smsUser();
    const claimed = claimWaiting(fxB);
    await waitingOn(b, 1);
    // Operators see it too.
    expect(await (await fetch(`${b.app.opsUrl}/metrics`)).text()).toMatch(/^codegate_delivery_claims_waiting 1$/m);
    await user.send(fxA);
    const [m] = await claimed;
    expect(m).toMatchObject({ recipient: user.number });
    await fxB.clients.delivery.ack({ messages: [receipt(m)] });
  });

  it("stops waiting once its caller leaves, and takes nothing it could not hand out", async () => {
    const user = await smsUser();
    const gone = new AbortController();
    const claimed = claimWaiting(fxA, { signal: gone.signal }).catch((e: unknown) => ConnectError.from(e));
    await waitingOn(a, 1);
    gone.abort();
    expect(await claimed).toMatchObject({ code: Code.Canceled });
    await waitingOn(a, 0);
    // Queued after the caller left: a claim left waiting would lease it to nobody, until its lease ran out.
    await user.send(fxA);
    const now = (await fxA.clients.delivery.claim({ channels: [DeliveryChannel.SMS] })).messages;
    expect(now.map((m) => m.recipient)).toEqual([user.number]);
    await fxA.clients.delivery.ack({ messages: now.map(receipt) });
  });

  it("hands a burst heard of at once to more than one waiting claim: one that fills its batch wakes the next", async () => {
    const users = [await smsUser(), await smsUser(), await smsUser()];
    const claim = () => fxA.clients.delivery.claim({ channels: [DeliveryChannel.SMS], maxMessages: 2, wait: WAIT }).then((r) => r.messages);
    const first = claim();
    await waitingOn(a, 1);
    const second = claim();
    await waitingOn(a, 2);
    // Queued without a word to the waiting claims, then told once, as one announcement of several messages does.
    const untold = vi.spyOn(a.app.deliveryWaits, "wake").mockImplementation(() => {});
    for (const user of users) await user.send(fxA);
    await new Promise((resolve) => setImmediate(resolve)); // the sends' own wake-ups have run, and told nobody
    untold.mockRestore();
    a.app.deliveryWaits.wake(["sms"]);
    // Without the full batch's wake-up, the other claim would sleep on and answer empty at its wait's end.
    const answers = await Promise.all([first, second]);
    expect(answers.map((m) => m.length).sort()).toEqual([1, 2]);
    expect(answers.flat().map((m) => m.recipient).sort()).toEqual(users.map((u) => u.number).sort());
    await fxA.clients.delivery.ack({ messages: answers.flat().map(receipt) });
  });

  it("answers a text whose delivery failed once its retry is due, with nothing queued then to wake it", async () => {
    // Its own server, whose retries come after 2.25-3.75 s: the claim below waits before the text is due again.
    await withServer({ COURIER_BACKOFF_BASE: "3s" }, async (r, fxR) => {
      const user = await smsUser();
      await user.send(fxA);
      const [m] = (await fxR.clients.delivery.claim({ channels: [DeliveryChannel.SMS] })).messages;
      const failed = await fxR.clients.delivery.fail({ failures: [{ message: receipt(m), error: "gateway busy" }] });
      expect(failed.messages.map((f) => f.status)).toEqual([CourierMessageStatus.QUEUED]);
      const claimed = claimWaiting(fxR);
      await waitingOn(r, 1);
      // Without its server ringing for it at its time, the claim would answer empty at its wait's end.
      const [again] = await claimed;
      expect(again).toMatchObject({ id: m.id, recipient: user.number, attempt: 2 });
      expect(r.app.deliveryWaits.waiting).toBe(0);
      await fxR.clients.delivery.ack({ messages: [receipt(again)] });
    });
  });

  it("answers a text already due at once, without waiting for its server to start hearing other servers", async () => {
    await withServer({}, async (r, fxR) => {
      // Its first waiting claim starts the listening connection; here it never opens.
      vi.spyOn(r.app.deliveryWaits, "ready").mockReturnValue(new Promise<void>(() => {}));
      const user = await smsUser();
      await user.send(fxA);
      // Waiting for the connection first, the claim would fail at its deadline.
      const [m] = await claimWaiting(fxR);
      expect(m).toMatchObject({ recipient: user.number });
      await fxR.clients.delivery.ack({ messages: [receipt(m)] });
    });
  });

  it("looks again once its server hears other servers, for a text announced during its first look", async () => {
    await withServer({}, async (r, fxR) => {
      // The listening connection opens when the test says; announcements before it are not heard.
      let open!: () => void;
      const ready = vi.spyOn(r.app.deliveryWaits, "ready").mockReturnValue(new Promise<void>((resolve) => (open = resolve)));
      const user = await smsUser();
      const claimed = claimWaiting(fxR);
      // Started before its look, then waited for after the look found nothing.
      await vi.waitFor(() => expect(ready).toHaveBeenCalledTimes(2), { timeout: 5_000 });
      await user.send(fxA);
      open();
      // Going on to wait without a second look, it would answer empty at its wait's end.
      const [m] = await claimed;
      expect(m).toMatchObject({ recipient: user.number });
      await fxR.clients.delivery.ack({ messages: [receipt(m)] });
    });
  });

  it("answers empty before the call's deadline, the client's when it is shorter than RPC_TIMEOUT", async () => {
    // Asked to wait 30 s with 1.5 s to live: cut to end before the deadline rather than fail it.
    expect(await claimWaiting(fxA, { timeoutMs: 1_500 })).toEqual([]);
    // The server's own bound, the same way.
    expect(await claimWaiting(fxA)).toEqual([]);
    expect(a.app.deliveryWaits.waiting).toBe(0);
  });

  it("answers empty, not an error, as its server shuts down", async () => {
    // A grace shorter than the wait: a wait the shutdown did not end would be cut off with the connection.
    const c = await startTestServer({ DATABASE_URL: a.databaseUrl, COURIER_ENABLED: "false", RPC_TIMEOUT: `${RPC_TIMEOUT_MS}ms`, SHUTDOWN_GRACE: "1s" });
    const fxC = adminFixtures(c.url);
    try {
      const claimed = claimWaiting(fxC).catch((e: unknown) => ConnectError.from(e));
      await waitingOn(c, 1);
      await c.close();
      expect(await claimed).toEqual([]);
    } finally {
      fxC.close();
    }
  });

  it("is asked for with a wait of zero to 30 s, and told which field is wrong otherwise", async () => {
    const path = "/codegate.v1.DeliveryService/Claim";
    for (const wait of ["31s", "-1s"]) {
      const r = await postJson(a.url, path, { channels: ["DELIVERY_CHANNEL_SMS"], wait }, bearer(ADMIN_TOKEN));
      expect(r.status, wait).toBe(400);
      expect(JSON.stringify(r.body), wait).toContain("wait");
    }
    expect(await postJson(a.url, path, { channels: ["DELIVERY_CHANNEL_SMS"], wait: "0s" }, bearer(ADMIN_TOKEN))).toMatchObject({ status: 200, body: {} });
  });
});

/**
 * An Sql that holds the answer of the next statement `hold` names, once it has run,
 * until the test releases it (or, `untilAbort`, until the statement's call is over).
 * `fails`: the statement runs in a transaction, which holds what it locked, and
 * fails once released (rolled back, as a statement that fails after locking rows),
 * with the error given or a test's own.
 */
function holdingSql() {
  let next: { matches(text: string): boolean; untilAbort: boolean; fails: Error | undefined; held(): void; released: Promise<void> } | undefined;
  let releaseLast = () => {};
  const instrument = (inner: Sql): Sql => ({
    async query<T extends Row>(text: string, params?: readonly unknown[], signal?: AbortSignal): Promise<T[]> {
      const rule = next?.matches(text) ? next : undefined;
      if (rule) next = undefined;
      if (rule?.fails) {
        return inner.transaction(async (tx) => {
          await tx.query(text, params, signal);
          rule.held();
          await rule.released;
          throw rule.fails;
        });
      }
      const rows = await inner.query<T>(text, params, signal);
      if (rule) {
        rule.held();
        await (rule.untilAbort && signal ? new Promise((end) => (signal.aborted ? end(undefined) : signal.addEventListener("abort", end, { once: true }))) : rule.released);
      }
      return rows;
    },
    transaction: (work) => inner.transaction((tx) => work(instrument(tx))),
  });
  return {
    instrument,
    /** Forgets a hold no statement took, and ends one still held (a test that failed before its release). */
    clear() {
      next = undefined;
      releaseLast();
    },
    hold(matches: (text: string) => boolean, opts: { untilAbort?: boolean; fails?: boolean | Error } = {}) {
      let held!: () => void;
      let release!: () => void;
      const heldNow = new Promise<void>((resolve) => (held = resolve));
      const fails = opts.fails === true ? new Error("the statement failed after it had locked its rows (a test's)") : opts.fails || undefined;
      next = { matches, untilAbort: opts.untilAbort ?? false, fails, held, released: new Promise<void>((resolve) => (release = resolve)) };
      releaseLast = release;
      return { held: heldNow, release: () => release() };
    },
  };
}
/** The error node-postgres gives a statement that lost to another transaction: a deadlock's victim (40P01), a serialization failure (40001). */
function lostToAnother(code: "40P01" | "40001"): Error {
  return Object.assign(new Error(code === "40P01" ? "deadlock detected" : "could not serialize access due to concurrent update"), { code });
}

/** The delivery API's look for organizations with due messages, and its claim of one organization's (store/delivery.ts). */
const isLook = (text: string) => text.includes("select org_id from courier_message") && text.includes("channel <> 'smtp'");
const isClaim = (text: string) => text.includes("), claimed as (\n  update courier_message m set");

describe("a waiting claim, caught between its statement and its answer", () => {
  const holding = holdingSql();
  let h: TestServer;
  let fxH: ReturnType<typeof adminFixtures>;
  let orgH: Organization;
  beforeAll(async () => {
    h = await startTestServer({ COURIER_ENABLED: "false", RPC_TIMEOUT: `${RPC_TIMEOUT_MS}ms` }, { instrumentSql: holding.instrument });
    fxH = adminFixtures(h.url);
    orgH = await fxH.org("Held SMS", { delivery: { login: DeliveryChannel.SMS } });
    // Hearing other servers already: a first waiting claim would look twice (before and after it began to).
    await h.app.deliveryWaits.ready();
    expect(h.app.deliveryWaits.hearing).toBe(true);
  });
  afterEach(() => holding.clear());
  afterAll(async () => {
    fxH?.close();
    await h?.close();
  });

  /** The claim answers the user's text, at its first attempt (acked here). */
  async function answersWith(claimed: ReturnType<typeof claimWaiting>, user: { number: string }): Promise<void> {
    const [m] = await claimed;
    expect(m).toMatchObject({ recipient: user.number, attempt: 1 });
    await fxH.clients.delivery.ack({ messages: [receipt(m)] });
  }

  it("does not miss a text queued after its look ran and before it began to wait", async () => {
    const user = await smsUser(fxH, orgH);
    const look = holding.hold(isLook);
    const claimed = claimWaiting(fxH);
    await look.held; // it has looked, and found nothing
    // The send's wake-up runs on the server before its answer reaches this test (same process, after the handler).
    await user.send(fxH);
    look.release();
    // A wait begun only after the look would not hear it, and answer empty at its end.
    const [m] = await claimed;
    expect(m).toMatchObject({ recipient: user.number });
    await fxH.clients.delivery.ack({ messages: [receipt(m)] });
  });

  it("hands its wake-up on to another waiting claim when its caller leaves during the look the wake-up sent it on", async () => {
    const user = await smsUser(fxH, orgH);
    const leaving = new AbortController();
    const first = fxH.clients.delivery
      .claim({ channels: [DeliveryChannel.SMS], wait: WAIT }, { signal: leaving.signal })
      .catch((e: unknown) => ConnectError.from(e));
    await waitingOn(h, 1);
    const second = claimWaiting(fxH);
    await waitingOn(h, 2);
    const look = holding.hold(isLook, { untilAbort: true });
    await user.send(fxH); // wakes the first, the one waiting longest
    await look.held;
    leaving.abort();
    expect(await first).toMatchObject({ code: Code.Canceled });
    // Without the hand-on, the second would sleep on and answer empty at its wait's end.
    await answersWith(second, user);
  });

  // A first claim caught in its claim statement, a second that looks meanwhile and waits, then the first ends:
  // - its caller leaves: the text it leased is given back at once (left leased, it would wait out its 60 s lease);
  // - its statement fails after locking the text the second skipped: the second is woken (else, with the text
  //   due and nobody looking, it would answer empty at its wait's end), whether or not the first would wait too.
  it.each([
    { ends: "its caller leaves", hold: { untilAbort: true }, end: "abort", code: Code.Canceled, firstWait: undefined },
    { ends: "its statement fails after locking the text", hold: { fails: true }, end: "release", code: Code.Internal, firstWait: undefined },
    { ends: "its statement fails after locking the text, one that would wait too", hold: { fails: true }, end: "release", code: Code.Internal, firstWait: WAIT },
    // Answered unavailable like a database out of reach, but the statement ran and held the text until it rolled back.
    { ends: "its statement, after locking the text, is a deadlock's victim", hold: { fails: lostToAnother("40P01") }, end: "release", code: Code.Unavailable, firstWait: undefined },
    { ends: "its statement, after locking the text, fails to serialize", hold: { fails: lostToAnother("40001") }, end: "release", code: Code.Unavailable, firstWait: undefined },
  ] as const)("answers a claim that waits when another, holding its text, ends: $ends", async ({ hold, end, code, firstWait }) => {
    const user = await smsUser(fxH, orgH);
    await user.send(fxH);
    const leaving = new AbortController();
    const grab = holding.hold(isClaim, hold);
    const first = fxH.clients.delivery
      .claim({ channels: [DeliveryChannel.SMS], wait: firstWait }, { signal: leaving.signal })
      .catch((e: unknown) => ConnectError.from(e));
    await grab.held; // the text is leased to the first claim, or locked by its statement
    const second = claimWaiting(fxH);
    await waitingOn(h, 1); // it looked, found nothing it could take, and waits
    ({ abort: () => leaving.abort(), release: () => grab.release() })[end]();
    expect(await first).toMatchObject({ code });
    await answersWith(second, user);
  });

  it("wakes nobody for a claim that failed on a database out of reach: a claim woken would only fail too", async () => {
    const user = await smsUser(fxH, orgH);
    await user.send(fxH);
    const wake = vi.spyOn(h.app.deliveryWaits, "wake");
    try {
      const grab = holding.hold(isClaim, { fails: new Error("Connection terminated unexpectedly") });
      const first = fxH.clients.delivery.claim({ channels: [DeliveryChannel.SMS] }).catch((e: unknown) => ConnectError.from(e));
      await grab.held;
      grab.release();
      expect(await first).toMatchObject({ code: Code.Unavailable });
      expect(wake).not.toHaveBeenCalled();
    } finally {
      wake.mockRestore();
    }
    const [m] = (await fxH.clients.delivery.claim({ channels: [DeliveryChannel.SMS] })).messages;
    expect(m).toMatchObject({ recipient: user.number, attempt: 1 });
    await fxH.clients.delivery.ack({ messages: [receipt(m)] });
  });

  it("gives back what it claimed in one organization when its claim in the next fails", async () => {
    const users = [await smsUser(fxH, orgH), await smsUser(fxH, await fxH.org("Held SMS 3", { delivery: { login: DeliveryChannel.SMS } }))];
    for (const user of users) await user.send(fxH);
    let claims = 0;
    const second = holding.hold((text) => isClaim(text) && ++claims === 2, { fails: true });
    const first = fxH.clients.delivery.claim({ channels: [DeliveryChannel.SMS] }).catch((e: unknown) => ConnectError.from(e));
    await second.held; // one organization's text leased, the other's locked by the statement about to fail
    second.release();
    expect(await first).toMatchObject({ code: Code.Internal });
    // Given back before the error was answered; left leased, it would wait out its lease (60 s).
    const leased = await h.app.sql.query<{ n: number }>("select count(*)::int as n from courier_message where recipient = any($1) and lease_token is not null", [users.map((u) => u.number)]);
    expect(leased[0].n).toBe(0);
    const all = (await fxH.clients.delivery.claim({ channels: [DeliveryChannel.SMS] })).messages;
    expect(all.map((m) => m.recipient).sort()).toEqual(users.map((u) => u.number).sort());
    await fxH.clients.delivery.ack({ messages: all.map(receipt) });
  });

  it("gives back what it claimed in one organization when its caller left before it claimed in the next, and claims nothing more", async () => {
    const users = [await smsUser(fxH, orgH), await smsUser(fxH, await fxH.org("Held SMS 2", { delivery: { login: DeliveryChannel.SMS } }))];
    for (const user of users) await user.send(fxH);
    const leaving = new AbortController();
    const grab = holding.hold(isClaim, { untilAbort: true });
    const first = fxH.clients.delivery.claim({ channels: [DeliveryChannel.SMS] }, { signal: leaving.signal }).catch((e: unknown) => ConnectError.from(e));
    const leased = async () =>
      (await h.app.sql.query<{ n: number }>("select count(*)::int as n from courier_message where recipient = any($1) and lease_token is not null", [users.map((u) => u.number)]))[0].n;
    await grab.held; // one organization's text leased; the next organization's claim is not started once the call is over
    expect(await leased()).toBe(1);
    leaving.abort();
    expect(await first).toMatchObject({ code: Code.Canceled });
    // Its caller hears Canceled at once; the server gives the text back as the claim unwinds (a lease would hold it 60 s).
    await vi.waitFor(async () => expect(await leased()).toBe(0), { timeout: 5_000 });
    const all = (await fxH.clients.delivery.claim({ channels: [DeliveryChannel.SMS] })).messages;
    expect(all.map((m) => m.recipient).sort()).toEqual(users.map((u) => u.number).sort());
    await fxH.clients.delivery.ack({ messages: all.map(receipt) });
  });
});

describe("announcements of queued messages", () => {
  it("are heard by every server but their announcer's, which told its own directly", async () => {
    const heard: string[] = [];
    const hearing = await listenMailQueued(a.app.orm, { self: "a1a1a1", queued: (channels) => heard.push([...channels].join(",")), error: () => {} });
    try {
      await announceMailQueued(a.app.sql, "a1a1a1", ["sms"]);
      await announceMailQueued(a.app.sql, "b2b2b2", ["mail_api"]);
      // A listener gets notifications in the order they were sent: once the second is here, the first was skipped.
      await vi.waitFor(() => expect(heard).toEqual(["mail_api"]));
    } finally {
      await hearing.close();
    }
  });
});
