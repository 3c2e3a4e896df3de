// The organizations' cache of each process (rules/organizations.ts), against a real
// database: an organization in use is read once per TTL, and names that find none,
// which are whatever clients send, do not push it out however many of them come.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newOrgId, newTenantId } from "../src/rules/codes/random.ts";
import { OrgDirectory } from "../src/rules/organizations.ts";
import { createOrganization } from "../src/store/organizations.ts";
import { openOrm, type Orm } from "../src/store/orm.ts";
import { sqlOf, type Sql } from "../src/store/sql.ts";
import { freshDatabase } from "./support/server.ts";

let orm: Orm;
let sql: Sql;
let statements = 0;
/** The database, its statements counted. */
const counted = (inner: Sql): Sql => ({
  query: (text, params, signal) => (statements++, inner.query(text, params, signal)),
  transaction: (work) => inner.transaction((tx) => work(counted(tx))),
});

beforeAll(async () => {
  orm = await openOrm({ databaseUrl: await freshDatabase(), dataDir: "", dbPoolSize: 2 });
  sql = await sqlOf(orm);
});
afterAll(async () => {
  await orm?.close(true);
});

/** The statements `work` sent. */
async function statementsOf(work: () => Promise<unknown>): Promise<number> {
  const before = statements;
  await work();
  return statements - before;
}

describe("the organizations' cache", () => {
  it("keeps an organization in use while clients name more unknown organizations than it holds", async () => {
    const org = await createOrganization(sql, { id: newOrgId(), tenantId: newTenantId(), name: "in use", settings: {}, createdAt: new Date() });
    const directory = new OrgDirectory(counted(sql), undefined, { maxEntries: 20 });
    expect(await statementsOf(async () => expect((await directory.resolve(org.id, ""))?.id).toBe(org.id))).toBe(1);
    expect(await statementsOf(async () => expect((await directory.resolve(org.id, ""))?.id).toBe(org.id))).toBe(0);
    // Fifty names of no organization: each is read once, and then answered from the cache.
    const unknown = Array.from({ length: 50 }, () => newOrgId());
    const answers: unknown[] = [];
    expect(await statementsOf(async () => {
      for (const id of unknown) answers.push(await directory.resolve(id, ""));
    })).toBe(50);
    expect(answers).toEqual(Array(50).fill(undefined));
    expect(await statementsOf(() => directory.resolve(unknown.at(-1)!, ""))).toBe(0);
    // The organization in use is still there: no statement.
    expect(await statementsOf(async () => expect((await directory.resolve(org.id, ""))?.id).toBe(org.id))).toBe(0);
    // Named with its tenant, the wrong one: none, and the right pair still answers.
    expect(await directory.resolve(org.id, newTenantId())).toBeUndefined();
    expect((await directory.resolve(org.id, org.tenantId))?.id).toBe(org.id);
  });
});
