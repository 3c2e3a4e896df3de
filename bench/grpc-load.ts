// gRPC (h2c) load generator for requests whose body must change per call, which
// h2load cannot do (it sends one body, and cannot see grpc-status in trailers).
// One HTTP/2 session per connection, one call in flight per connection (like h2load -m 1).
// With a rate, calls start on a fixed schedule (open loop, as many a second), as long
// as a connection is free. LOAD_PROTOCOL=connect-json sends the same calls as Connect
// JSON over the same HTTP/2 client instead, so that the two protocols are compared with
// one load generator (wrk and this one take different shares of the 2 cores).
//   node bench/grpc-load.ts <baseUrl> <send|verify> <pairsFile> <connections> <seconds> <once:0|1> [rate]
// Prints one line "BENCHJSON {...}".
import http2 from "node:http2";
import { readFileSync } from "node:fs";
import { create, toBinary } from "@bufbuild/protobuf";
import { SendLoginCodeRequestSchema, VerifyLoginCodeRequestSchema } from "../gen/codegate/v1/login_pb.ts";

const [base, kind, file, connsArg, secondsArg, onceArg, rateArg] = process.argv.slice(2);
const rate = rateArg ? Number(rateArg) : undefined;
const conns = Number(connsArg);
const seconds = Number(secondsArg);
const once = onceArg === "1";
const path = kind === "send" ? "/codegate.v1.LoginService/SendLoginCode" : "/codegate.v1.LoginService/VerifyLoginCode";

const connect = process.env.LOAD_PROTOCOL === "connect-json";
const frame = (msg: Uint8Array) => {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  Buffer.from(msg).copy(b, 5);
  return b;
};
const bodies = readFileSync(file, "utf8").split("\n").filter(Boolean).map((line) => {
  const [username, orgId, code] = line.split("\t");
  if (connect) return Buffer.from(JSON.stringify(kind === "send" ? { username, orgId } : { username, orgId, code }));
  return frame(kind === "send"
    ? toBinary(SendLoginCodeRequestSchema, create(SendLoginCodeRequestSchema, { username, orgId }))
    : toBinary(VerifyLoginCodeRequestSchema, create(VerifyLoginCodeRequestSchema, { username, orgId, code })));
});
// A Connect answer's HTTP status as the gRPC status the counts below use.
const grpcStatusOfHttp: Record<number, string> = { 200: "0", 401: "16", 429: "8" };

let next = 0;
const lat: number[] = [];
const statuses: Record<string, number> = {};
let sockErrors = 0;
const start = performance.now();
const deadline = start + seconds * 1000;

function call(session: http2.ClientHttp2Session, body: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const req = session.request(connect
      ? { ":method": "POST", ":path": path, "content-type": "application/json" }
      : { ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
    let status = "";
    req.on("response", (h) => {
      if (connect) status = grpcStatusOfHttp[Number(h[":status"])] ?? `http-${h[":status"]}`;
      else if (h["grpc-status"] !== undefined) status = String(h["grpc-status"]);
    });
    req.on("trailers", (t) => { if (t["grpc-status"] !== undefined) status = String(t["grpc-status"]); });
    req.on("data", () => {});
    req.on("end", () => resolve(status || "none"));
    req.on("error", () => { sockErrors++; resolve("stream-error"); });
    req.end(body);
  });
}

async function worker() {
  const session = http2.connect(base);
  session.on("error", () => sockErrors++);
  while (performance.now() < deadline) {
    const i = next++;
    if (once && i >= bodies.length) break;
    if (rate) {
      const at = start + (i * 1000) / rate;
      if (at >= deadline) break;
      const wait = at - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    const t0 = performance.now();
    const s = await call(session, bodies[i % bodies.length]);
    lat.push(performance.now() - t0);
    statuses[s] = (statuses[s] ?? 0) + 1;
  }
  session.close();
}
await Promise.all(Array.from({ length: conns }, worker));
const duration = performance.now() - start;
lat.sort((a, b) => a - b);
const pct = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] : 0);
// grpc-status 0 = OK, 16 = unauthenticated (wrong or spent code), 8 = resource_exhausted.
console.log("BENCHJSON " + JSON.stringify({
  requests: lat.length, duration_us: Math.round(duration * 1000), p50_us: Math.round(pct(50) * 1000), p99_us: Math.round(pct(99) * 1000),
  s200: statuses["0"] ?? 0, s401: statuses["16"] ?? 0, s429: statuses["8"] ?? 0,
  sother: lat.length - (statuses["0"] ?? 0) - (statuses["16"] ?? 0) - (statuses["8"] ?? 0), extra: 0, sock_errors: sockErrors, statuses,
}));
