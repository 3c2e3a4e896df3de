// What a TLS handshake flood from one address costs the server, with and without
// MAX_TLS_HANDSHAKES_PER_ADDRESS. For each limit, starts `serve` with TLS (the test
// certificate, the embedded database), has CLIENTS connections in a loop from this
// process for SECONDS (each a full handshake, closed once secured), and prints the
// handshakes secured and refused, the server's CPU time over the flood (from /proc),
// the time of one HTTPS /healthz in the middle of it (from the same address: past the
// limit, it may be refused like the flood's), and the machine's steal.
//
//   npm run bench:tls-handshakes      (BENCH_LIMITS=0,100 BENCH_CLIENTS=6 BENCH_SECONDS=10 by default)
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { freePort } from "./postgres.ts";
import { machineTicks, statFields, TICK_MS } from "./proc.ts";
import { spawnServe } from "./serve.ts";

const LIMITS = (process.env.BENCH_LIMITS ?? "0,100").split(",").map(Number);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 6);
// Not SECONDS: bash keeps a variable of that name.
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const fixture = (name: string) => new URL(`../test/fixtures/tls/${name}`, import.meta.url).pathname;
const ca = readFileSync(fixture("localhost.crt"));
/** A process's CPU time (user and system) in ms. */
function cpuMs(pid: number): number {
  const f = statFields(pid);
  return (Number(f[11]) + Number(f[12])) * TICK_MS;
}

const healthz = (port: number) =>
  new Promise<number>((resolve, reject) => {
    const started = performance.now();
    https.get({ host: "127.0.0.1", port, path: "/healthz", ca, servername: "localhost", agent: false }, (res) => res.resume().on("end", () => resolve(performance.now() - started))).once("error", reject);
  });

async function flood(port: number): Promise<{ secured: number; refused: number }> {
  const ends = Date.now() + SECONDS * 1000;
  let secured = 0;
  let refused = 0;
  const loop = async () => {
    while (Date.now() < ends) {
      await new Promise<void>((resolve) => {
        const s = tls.connect({ host: "127.0.0.1", port, ca, servername: "localhost" });
        s.once("secureConnect", () => (secured++, s.destroy(), resolve()));
        s.once("error", () => (refused++, resolve()));
      });
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, loop));
  return { secured, refused };
}

const rows: Record<string, unknown>[] = [];
for (const limit of LIMITS) {
  const dir = mkdtempSync(join(tmpdir(), "codegate-tls-bench-"));
  const port = await freePort();
  const server = spawnServe(
    port,
    {
      DATA_DIR: join(dir, "data"),
      TLS_CERT_FILE: fixture("localhost.crt"),
      TLS_KEY_FILE: fixture("localhost.key"),
      MAX_TLS_HANDSHAKES_PER_ADDRESS: String(limit),
      LOG_LEVEL: "warn",
    },
    ["ignore", "ignore", "inherit"],
  );
  try {
    for (let i = 0; ; i++) {
      try {
        await healthz(port);
        break;
      } catch {}
      if (i > 600) throw new Error("server did not start");
      await new Promise((r) => setTimeout(r, 100));
    }
    const cpuBefore = cpuMs(server.pid!);
    const machineBefore = machineTicks();
    const flooding = flood(port);
    await new Promise((r) => setTimeout(r, (SECONDS * 1000) / 2));
    const healthzMs = await healthz(port).then((ms) => Math.round(ms * 10) / 10, () => "refused");
    const { secured, refused } = await flooding;
    const serverMs = cpuMs(server.pid!) - cpuBefore;
    const machine = machineTicks();
    rows.push({
      MAX_TLS_HANDSHAKES_PER_ADDRESS: limit,
      "secured /s": Math.round(secured / SECONDS),
      "refused /s": Math.round(refused / SECONDS),
      "server CPU ms": serverMs,
      "server CPU %": Math.round(serverMs / SECONDS / 10),
      "healthz ms": healthzMs,
      "steal %": Math.round(((machine.steal - machineBefore.steal) / Math.max(1, machine.total - machineBefore.total)) * 1000) / 10,
    });
  } finally {
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
    rmSync(dir, { recursive: true, force: true });
  }
}
console.log(`\n${CLIENTS} clients from one address, each opening TLS connections in a loop for ${SECONDS} s (a full handshake each)`);
console.table(rows);
