// A start that fails leaves nothing behind in its process: what startApp had opened
// before the failure (the database's pool and its listening connections, timers) is
// closed before the error reaches the caller.
import { describe, expect, it, vi } from "vitest";
import net from "node:net";
import pg from "pg";
import { freshDatabase, startTestServer } from "./support/server.ts";

describe("a start that fails", () => {
  it("on a port already taken closes what it had opened: no connection of it to the database stays", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const databaseUrl = await freshDatabase();
    const client = new pg.Client(databaseUrl);
    await client.connect();
    try {
      const port = (taken.address() as net.AddressInfo).port;
      await expect(startTestServer({ DATABASE_URL: databaseUrl, PORT: String(port) })).rejects.toThrow(/EADDRINUSE/);
      // Its connections end as their sockets close (PostgreSQL lists a backend until it has exited).
      const others = async () =>
        (await client.query<{ n: number }>("select count(*)::int n from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()")).rows[0]!.n;
      await vi.waitFor(async () => expect(await others()).toBe(0), { timeout: 5_000, interval: 50 });
    } finally {
      await client.end();
      taken.close();
    }
  });
});
