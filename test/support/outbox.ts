// The mail outbox in PostgreSQL, read directly: a code or notice is queued in the
// statement that answers the call, so "no mail was sent" is proved by the outbox
// holding no row for the address once the call has answered, with no waiting on SMTP.
import type { TestServer } from "./server.ts";

/** How many mails (any status) the outbox holds for each address, case-insensitively. */
export async function outboxCounts(server: TestServer, addresses: string[]): Promise<Record<string, number>> {
  const rows: { recipient: string; n: number }[] = await server.app.orm.em
    .getConnection()
    .execute("select lower(recipient) as recipient, count(*)::int as n from courier_message group by lower(recipient)");
  const counts = new Map(rows.map((r) => [r.recipient, r.n]));
  return Object.fromEntries(addresses.map((a) => [a, counts.get(a.toLowerCase()) ?? 0]));
}
