// ListIdentities and ListOrganizations read a page in creation order. Without an
// index in that order every page sorted all of an organization's identities (all
// organizations) to give fifty: the last page of a large organization cost as much
// as reading it whole, and paging through it, the square of its size.
// ListCourierMessages, newest first, read past every earlier page, and the whole
// history of the organization to find its few abandoned mails. Each page must read
// about its own rows, on the first page and the last, under a custom plan and under
// the generic plan a prepared statement settles on.
import { afterAll, describe, expect, it } from "vitest";
import pg from "pg";
import { listIdentities } from "../src/store/identities.ts";
import { listOrganizations } from "../src/store/organizations.ts";
import { listMails } from "../src/store/outbox.ts";
import type { Cursor } from "../src/store/paging.ts";
import type { Sql } from "../src/store/sql.ts";
import { explainingSql, type PlanMode, type Reading } from "./support/explain.ts";
import { freshDatabase } from "./support/server.ts";

const IDENTITIES = 20_000;
const ORGANIZATIONS = 20_000;
/** An organization's mail: its history, then the few abandoned among it, and the newest still queued. */
const SENT = 20_000;
const ABANDONED = 12;
const QUEUED = 40;
const PAGE = 50;
/** A page's rows lie on at most a page of heap blocks each, beside a few index blocks; without the index, sorting read 572 (identities) and 197 (organizations). */
const MOST_BLOCKS = PAGE + 15;

let client: pg.Client | undefined;
afterAll(async () => {
  await client?.end();
});

/** Explains each statement (support/explain.ts) and notes what it read, then runs it for its rows. */
function measuring(c: pg.Client, mode: PlanMode, readings: Reading[]): Sql {
  return explainingSql(c, mode, (r) => readings.push(r), { rerun: /./ });
}

/** Every page in turn, each from the previous one's last row; answers the ids in the order read. */
async function pageThrough<T extends { id: string; createdAt: Date }>(read: (cursor: Cursor | undefined) => Promise<T[]>, size: number): Promise<string[]> {
  const ids: string[] = [];
  let cursor: Cursor | undefined;
  for (;;) {
    const rows = await read(cursor);
    ids.push(...rows.slice(0, size).map((r) => r.id));
    if (rows.length <= size) return ids;
    const last = rows[size - 1];
    cursor = { createdAt: last.createdAt, id: last.id };
  }
}

describe("listing identities and organizations", () => {
  it("reads each page's own rows, however deep into the listing, and pages through every row once in creation order", async () => {
    const databaseUrl = await freshDatabase();
    client = new pg.Client(databaseUrl);
    await client.connect();
    // Three rows share each creation time, so that the id must break ties; ids are random (v4), unlike creation order.
    await client.query(
      `insert into organization (id, tenant_id, name, settings, created_at)
       select 'or-list-' || g, 'tenant-' || g, 'Org ' || g, '{}', timestamptz '2026-01-01' + (g / 3) * interval '1 second'
       from generate_series(1, $1) g`,
      [ORGANIZATIONS],
    );
    for (const org of ["or-list-1", "or-list-2"])
      await client.query(
        `insert into identity (org_id, id, username, username_normalized, state, created_at)
         select $1, gen_random_uuid(), 'user' || g || '@example.com', 'user' || g || '@example.com', 'active', timestamptz '2026-01-01' + (g / 3) * interval '1 second'
         from generate_series(1, $2) g`,
        [org, IDENTITIES],
      );
    await client.query("analyze identity, organization");

    const expected = (await client.query(`select id from identity where org_id = 'or-list-1' order by created_at, id`)).rows.map((r) => r.id);
    expect(await pageThrough((cursor) => listIdentities(measuring(client!, "custom", []), "or-list-1", cursor, 500), 500)).toEqual(expected);
    const expectedOrgs = (await client.query(`select id from organization order by created_at, id`)).rows.map((r) => r.id);
    expect(await pageThrough((cursor) => listOrganizations(measuring(client!, "custom", []), cursor, 500), 500)).toEqual(expectedOrgs);

    const readings: Reading[] = [];
    const nearTheEnd = async (table: "identity" | "organization", where: string): Promise<Cursor> => {
      const [row] = (await client!.query(`select id, created_at from ${table} ${where} order by created_at desc, id desc offset ${PAGE} limit 1`)).rows;
      return { id: row.id, createdAt: row.created_at };
    };
    for (const mode of ["custom", "generic"] as const) {
      const sql = measuring(client, mode, readings);
      for (const cursor of [undefined, await nearTheEnd("identity", "where org_id = 'or-list-1'")]) {
        expect(await listIdentities(sql, "or-list-1", cursor, PAGE)).toHaveLength(cursor ? PAGE : PAGE + 1);
      }
      for (const cursor of [undefined, await nearTheEnd("organization", "")]) {
        expect(await listOrganizations(sql, cursor, PAGE)).toHaveLength(cursor ? PAGE : PAGE + 1);
      }
    }
    expect(readings).toHaveLength(8);
    expect(readings.filter((r) => r.blocks > MOST_BLOCKS)).toEqual([]);
  });

  it("reads each page of an organization's mails, of any status, however deep, and pages through them once, newest first", async () => {
    const databaseUrl = await freshDatabase();
    const c = new pg.Client(databaseUrl);
    await c.connect();
    try {
      // Pairs of mails share a creation time, so that the id must break ties.
      const insert = (orgId: string, from: number, to: number, status: (g: string) => string) =>
        c.query(
          `insert into courier_message (org_id, id, channel, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
           select $1, gen_random_uuid(), 'smtp', 'login', 'someone@example.com', 'Your code', null, 'k1', ${status("g")}, 1,
             timestamptz '2026-01-01' + (g / 2) * interval '1 second', timestamptz '2026-01-01' + (g / 2) * interval '1 second', now()
           from generate_series($2::int, $3::int) g`,
          [orgId, from, to],
        );
      const abandonedEvery = Math.floor(SENT / ABANDONED);
      for (const org of ["or-mail-1", "or-mail-2"]) {
        await insert(org, 1, SENT, (g) => `case when ${g} % ${abandonedEvery} = 0 then 'abandoned' else 'sent' end`);
        await insert(org, SENT + 1, SENT + QUEUED, () => `'queued'`);
      }
      await c.query("analyze courier_message");

      const readings: Reading[] = [];
      for (const status of ["", "sent", "abandoned", "queued"] as const) {
        const where = `where org_id = 'or-mail-1'${status ? ` and status = '${status}'` : ""}`;
        const expected = (await c.query(`select id from courier_message ${where} order by created_at desc, id desc`)).rows.map((r) => r.id);
        expect(expected).toHaveLength({ "": SENT + QUEUED, sent: SENT - ABANDONED, abandoned: ABANDONED, queued: QUEUED }[status]);
        expect(await pageThrough((cursor) => listMails(measuring(c, "custom", []), "or-mail-1", status, cursor, 500), 500)).toEqual(expected);

        // The first page, and the one before the oldest.
        const [oldest] = (await c.query(`select id, created_at from courier_message ${where} order by created_at, id offset ${Math.min(PAGE, expected.length - 1)} limit 1`)).rows;
        for (const mode of ["custom", "generic"] as const) {
          for (const cursor of [undefined, { id: oldest.id, createdAt: oldest.created_at }]) {
            expect((await listMails(measuring(c, mode, readings), "or-mail-1", status, cursor, PAGE)).length).toBeGreaterThan(0);
          }
        }
      }
      expect(readings).toHaveLength(16);
      expect(readings.filter((r) => r.blocks > MOST_BLOCKS)).toEqual([]);
    } finally {
      await c.end();
    }
  });
});
