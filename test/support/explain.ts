// What a statement reads, from EXPLAIN ANALYZE: under a custom plan (made with its
// parameters known, as for a prepared statement's first runs), or under the generic
// plan a prepared statement settles on. The statement runs: callers that must not
// keep its changes run this in a transaction they roll back.
import type pg from "pg";
import type { Row, Sql } from "../../src/store/sql.ts";

export type PlanMode = "custom" | "generic";

/** What a test notes of one statement it explained: which (its plan mode and text), and the buffers it read. */
export interface Reading {
  statement: string;
  blocks: number;
}

/** A value as an SQL literal, for EXECUTE's arguments (which take no bind parameters). */
function literal(c: pg.Client, v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (Buffer.isBuffer(v)) return `'\\x${v.toString("hex")}'`;
  if (Array.isArray(v)) return c.escapeLiteral(`{${v.map((e) => `"${String(e).replace(/["\\]/g, "\\$&")}"`).join(",")}}`);
  if (v instanceof Date) return c.escapeLiteral(v.toISOString());
  return c.escapeLiteral(String(v));
}

let prepared = 0;

interface PlanNode {
  "Shared Hit Blocks": number;
  "Shared Read Blocks": number;
  Plans?: PlanNode[];
}

/**
 * The most buffers (shared, hit or read) any node of the plan counted. A node counts
 * those of the nodes it ran, but a data-modifying CTE that nothing reads to its end
 * runs after the statement's top node and counts only in its own: the largest count
 * anywhere is what a bad plan in any part of the statement shows.
 */
function mostBuffers(node: PlanNode): number {
  return Math.max(node["Shared Hit Blocks"] + node["Shared Read Blocks"], ...(node.Plans ?? []).map(mostBuffers));
}

/** The buffers the statement read (the most any of its plan's nodes counted) and the rows its top node gave. */
export async function explainedRead(c: pg.Client, text: string, params: readonly unknown[], mode: PlanMode): Promise<{ blocks: number; rows: number }> {
  let rows;
  if (mode === "custom") {
    rows = (await c.query(`explain (analyze, buffers, format json) ${text}`, params as unknown[])).rows;
  } else {
    const name = `explained_${++prepared}`;
    await c.query(`prepare ${name} as ${text}`);
    try {
      await c.query("set plan_cache_mode = force_generic_plan");
      rows = (await c.query(`explain (analyze, buffers, format json) execute ${name}(${params.map((p) => literal(c, p)).join(", ")})`)).rows;
    } finally {
      // Best effort: in a failed transaction these wait for its rollback, which ends the setting anyway.
      await c.query("reset plan_cache_mode").catch(() => {});
      await c.query(`deallocate ${name}`).catch(() => {});
    }
  }
  const plan = rows[0]["QUERY PLAN"][0].Plan;
  return { blocks: mostBuffers(plan), rows: plan["Actual Rows"] };
}

/** What an explaining Sql noted of one statement: with the rows its top node gave. */
export interface Explained extends Reading {
  rows: number;
}

/**
 * An Sql for a store function under test that runs each of its statements under
 * EXPLAIN ANALYZE and hands `note` what it read. Statements matching `runAsIs` run
 * as they are, unexplained; those matching `rerun` run again once explained, for
 * the rows their caller goes on with; every other answers no rows.
 */
export function explainingSql(
  c: pg.Client,
  mode: PlanMode,
  note: (explained: Explained) => void,
  { runAsIs, rerun }: { runAsIs?: RegExp; rerun?: RegExp } = {},
): Sql {
  const run = async <T extends Row>(text: string, params: readonly unknown[]) => (await c.query<T>(text, params as unknown[])).rows;
  return {
    async query<T extends Row>(text: string, params: readonly unknown[] = []): Promise<T[]> {
      if (runAsIs?.test(text)) return run<T>(text, params);
      const { blocks, rows } = await explainedRead(c, text, params, mode);
      note({ statement: `${mode}: ${text.replace(/\s+/g, " ").trim().slice(0, 90)} ${JSON.stringify(params.slice(0, 2))}`, blocks, rows });
      return rerun?.test(text) ? run<T>(text, params) : [];
    },
    transaction: () => Promise.reject(new Error("not used")),
  };
}
