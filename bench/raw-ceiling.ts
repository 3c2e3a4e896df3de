// The raw ceiling of a send: the stock Connect stack (connect-node's adapter,
// HTTP/1.1, Connect JSON) serving LoginService/SendLoginCode with a handler that
// does only the database work of an issuance, for the bench to compare the server's
// CPU per request with: find the identity, replace its live login code (or insert
// one), queue its mail. No validation, limits, hashing, rendering, sealing,
// logging or metrics.
//   node bench/raw-ceiling.ts <databaseUrl> <cte|tx>
// "cte": one statement (one round trip, one commit), as the server does it;
// "tx": the same as a transaction of four round trips (begin + select, update,
// insert, insert + commit as pipelined pairs is not what a plain ORM does, so each
// is its own round trip after begin).
// Listens on an ephemeral port (HTTP/2 without TLS instead when RAW_H2C=1, for
// grpc-load.ts), and tells its parent the port over IPC. Mails are
// queued 100 years ahead so that no courier takes them; the bench deletes them.
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { randomBytes, randomUUIDv7 } from "node:crypto";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import pg from "pg";
import { LoginService } from "../gen/codegate/v1/login_pb.ts";

const [url, mode] = process.argv.slice(2);
if (!url || (mode !== "cte" && mode !== "tx")) throw new Error("usage: node bench/raw-ceiling.ts <databaseUrl> <cte|tx>");
const pool = new pg.Pool({ connectionString: url, max: 20 });
const body = randomBytes(400);

const ISSUE_CTE = {
  name: "raw-issue",
  // The live code is replaced in place through its unique index, as the server does:
  // a kill-then-insert reaches the live code by a join that a generic plan, made
  // while the table was empty, runs as a scan of every live login code.
  text: `with target as (
    select org_id, id from identity where org_id = $1 and username_normalized = $2 and state = 'active'
  ), issued as (
    insert into code (org_id, id, identity_id, purpose, binding, code_hash, key_id, created_at, expires_at, attempts, max_attempts)
    select t.org_id, $3::uuid, t.id, 'login', '', $5, 'k1', $4, $4::timestamptz + interval '10 minutes', 0, 5
    from target t
    on conflict (org_id, identity_id, purpose, binding) where dead_at is null do update set
      id = excluded.id, code_hash = excluded.code_hash, created_at = excluded.created_at, expires_at = excluded.expires_at, attempts = 0
    returning org_id
  )
  insert into courier_message (org_id, id, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
  select org_id, $6::uuid, 'login', $2, 'Your login code', $7, 'k1', 'queued', 0, $4::timestamptz + interval '100 years', $4, $4
  from issued`,
};

async function issueInOneStatement(orgId: string, username: string): Promise<void> {
  await pool.query({ ...ISSUE_CTE, values: [orgId, username, randomUUIDv7(), new Date(), randomBytes(32), randomUUIDv7(), body] });
}

async function issueInATransaction(orgId: string, username: string): Promise<void> {
  const client = await pool.connect();
  try {
    const now = new Date();
    await client.query("begin");
    const { rows } = await client.query({ name: "raw-find", text: "select id from identity where org_id = $1 and username_normalized = $2 and state = 'active'", values: [orgId, username] });
    if (rows.length) {
      const identityId = rows[0].id as string;
      await client.query({
        name: "raw-kill",
        text: "update code set dead_at = $3 where org_id = $1 and identity_id = $2 and purpose = 'login' and binding = '' and dead_at is null",
        values: [orgId, identityId, now],
      });
      await client.query({
        name: "raw-code",
        text: `insert into code (org_id, id, identity_id, purpose, code_hash, key_id, created_at, expires_at, attempts, max_attempts)
               values ($1, $2, $3, 'login', $4, 'k1', $5, $5::timestamptz + interval '10 minutes', 0, 5)`,
        values: [orgId, randomUUIDv7(), identityId, randomBytes(32), now],
      });
      await client.query({
        name: "raw-mail",
        text: `insert into courier_message (org_id, id, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
               values ($1, $2, 'login', $3, 'Your login code', $4, 'k1', 'queued', 0, $5::timestamptz + interval '100 years', $5, $5)`,
        values: [orgId, randomUUIDv7(), username, body, now],
      });
    }
    await client.query("commit");
  } catch (err) {
    await client.query("rollback").catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

const issue = mode === "cte" ? issueInOneStatement : issueInATransaction;
const handler = connectNodeAdapter({
  routes(router) {
    router.service(LoginService, {
      async sendLoginCode(req) {
        await issue(req.orgId, req.username.trim().toLowerCase());
        return { message: "success" };
      },
      verifyLoginCode() {
        throw new Error("not part of the ceiling");
      },
    });
  },
});
const h2c = process.env.RAW_H2C === "1";
const server = h2c ? http2.createServer(handler) : http.createServer(handler);
const sessions = new Set<http2.Http2Session>();
if (h2c) server.on("session", (s: http2.Http2Session) => (sessions.add(s), s.once("close", () => sessions.delete(s))));
server.listen(0, "127.0.0.1", () => process.send!((server.address() as AddressInfo).port));
process.on("disconnect", () => {
  server.close();
  if (server instanceof http.Server) server.closeAllConnections();
  for (const s of sessions) s.destroy();
  void pool.end();
});
