// The server as a process of its own (`node src/main.ts serve`), as an operator
// runs it: a crash is an exit, not a test error, and its log lines are read
// from its stdout.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { vi } from "vitest";
import { ADMIN_TOKEN, DEPLOYMENT_ENV, freshDatabase, TEST_LIMITS } from "./server.ts";

export interface ServerProcess {
  url: string;
  /** The database it serves from. */
  databaseUrl: string;
  /** Where /metrics and /readyz are served. */
  opsUrl: string;
  child: ChildProcess;
  /** Every JSON log line so far, parsed. */
  logs: Record<string, any>[];
  /** Whatever else it wrote (a crash's stack lands here). */
  stderr: string[];
  exited: Promise<number | null>;
  alive(): boolean;
  stop(): Promise<number | null>;
}

/** Starts a server process on a fresh database (unless DATABASE_URL is given) and waits until it listens. */
export async function startServerProcess(env: Record<string, string> = {}): Promise<ServerProcess> {
  const databaseUrl = env.DATABASE_URL ?? (await freshDatabase());
  const command = commandEnv(databaseUrl, {
    NODE_ENV: "",
    PORT: "0",
    // One process unless a test asks for more: the hostile tests count per
    // process (MAX_CONNECTIONS, MAX_STREAMS), and test/cluster.test.ts runs WORKERS=2.
    WORKERS: "1",
    LOG_LEVEL: "info",
    ...env,
  });
  const child = spawn(process.execPath, ["src/main.ts", "serve"], {
    env: command.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, any>[] = [];
  const stderr: string[] = [];
  let partial = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    const lines = (partial + chunk.toString("utf8")).split("\n");
    partial = lines.pop()!;
    for (const line of lines) {
      if (!line.startsWith("{")) continue;
      try {
        logs.push(JSON.parse(line));
      } catch {
        stderr.push(line);
      }
    }
  });
  child.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk.toString("utf8")));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const listening = await vi.waitUntil(() => logs.find((l) => l.msg === "listening") ?? (child.exitCode !== null ? "exited" : undefined), {
    timeout: 60_000,
    interval: 50,
  });
  if (listening === "exited") throw new Error(`the server exited before listening: ${stderr.join("")}`);
  const url = `http://127.0.0.1:${listening.port}`;
  const opsUrl = listening.opsPort ? `http://127.0.0.1:${listening.opsPort}` : url;
  return {
    url,
    databaseUrl,
    opsUrl,
    child,
    logs,
    stderr,
    exited,
    alive: () => child.exitCode === null && child.signalCode === null,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const code = await exited;
      command.cleanup();
      return code;
    },
  };
}

/** Waits past a deadline: what a hostile-input test must do before it checks the server is still up. */
export const pastDeadline = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The environment of a `codegate` command (`serve`, `courier`, `migrate`, `prune`)
 * run as a process of its own on `databaseUrl`, with a data directory of its own
 * that `cleanup` removes.
 */
export function commandEnv(databaseUrl: string, extra: Record<string, string> = {}): { env: NodeJS.ProcessEnv; cleanup(): void } {
  const dataDir = mkdtempSync(join(tmpdir(), "codegate-proc-"));
  return {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      DATA_DIR: dataDir,
      HOST: "127.0.0.1",
      ADMIN_TOKEN,
      LOG_LEVEL: "warn",
      OPS_PORT: "0",
      ...DEPLOYMENT_ENV,
      ...TEST_LIMITS,
      ...extra,
    },
    cleanup: () => rmSync(dataDir, { recursive: true, force: true }),
  };
}

/** Starts `node src/main.ts <command>` (its stderr passed through); `kill` ends it at once if it still runs, and waits for its exit. */
export function startCommand(command: string, env: NodeJS.ProcessEnv): { child: ChildProcess; exited: Promise<number | null>; kill(): Promise<void> } {
  const child = spawn(process.execPath, ["src/main.ts", command], { env, stdio: ["ignore", "ignore", "inherit"] });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    exited,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

/** The processes `pid` forked, with the role each was given and the arguments of its command line. */
export function workersOf(pid: number): { pid: number; role: string; args: string[] }[] {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  return children.map((child) => {
    const environ = readFileSync(`/proc/${child}/environ`, "utf8").split("\0");
    const args = readFileSync(`/proc/${child}/cmdline`, "utf8").split("\0").filter(Boolean);
    return { pid: child, role: environ.find((e) => e.startsWith("CODEGATE_WORKER="))?.slice("CODEGATE_WORKER=".length) ?? "", args };
  });
}
