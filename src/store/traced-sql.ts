// A span per statement run inside a traced call (lib/tracing.ts), named by what
// it does ("insert code"), without its parameters. Wrapped around the Sql of the
// hot paths only when tracing is on; statements outside a call (the courier's
// polling) make no spans of their own.
import { inSpan, inTrace, SpanKind } from "../lib/tracing.ts";
import type { Row, Sql } from "./sql.ts";

const summaries = new Map<string, string>();
/** "update courier_message", "with code" (a CTE: its first table); cached per text. */
function summary(text: string): string {
  let s = summaries.get(text);
  if (s === undefined) {
    const verb = /^\s*(\w+)/.exec(text)?.[1]?.toLowerCase() ?? "sql";
    const table = /\b(?:from|into|update|join)\s+([a-z_][a-z0-9_]*)/i.exec(text)?.[1];
    s = table ? `${verb} ${table}` : verb;
    if (summaries.size < 1000) summaries.set(text, s);
  }
  return s;
}

export function tracedSql(sql: Sql): Sql {
  return {
    query<T extends Row>(text: string, params?: readonly unknown[], signal?: AbortSignal): Promise<T[]> {
      if (!inTrace()) return sql.query<T>(text, params, signal);
      const name = summary(text);
      return inSpan(name, { kind: SpanKind.CLIENT, attributes: { "db.system.name": "postgresql", "db.query.summary": name } }, () => sql.query<T>(text, params, signal));
    },
    transaction(work) {
      if (!inTrace()) return sql.transaction(work);
      return inSpan("transaction", { kind: SpanKind.INTERNAL }, () => sql.transaction((tx) => work(tracedSql(tx))));
    },
  };
}
