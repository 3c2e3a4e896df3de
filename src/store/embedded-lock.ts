// The embedded PGlite serves one process: a second one opening its files (a second
// `npm start` on the same DATA_DIR, or `admin-token create` while the server runs)
// would each keep its own view of them and write over the other's. The process that
// opens them holds a lock file beside them, naming its pid; another is refused while
// that process lives. A lock left by a process that died is taken over.
//
// A pid alone outlives its process: after a crash and a reboot, or a long uptime,
// another process may have it, and the server would be refused for good. On Linux
// the lock also names the boot and the process's start time (/proc), so a lock from
// an earlier boot, or whose pid now belongs to a process started later, is stale.
import { randomBytes } from "node:crypto";
import { linkSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";

/** Another live process has the embedded database open. */
export class EmbeddedDatabaseBusy extends Error {}

/** Opens of the embedded database by this process, by lock file: one process may open it more than once. */
const held = new Map<string, number>();

/** Whether the process `pid` is alive (signal 0 tests it; EPERM: alive, another user's). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** This boot's id; undefined where /proc does not tell (not Linux). */
function bootId(): string | undefined {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

/** When the process `pid` started, in clock ticks since boot (/proc/<pid>/stat's 22nd field); undefined where /proc does not tell. */
function startTicks(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The fields after the command name, which may hold spaces and parentheses: state is the 3rd field, start time the 22nd.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/** What a lock names: "<pid>", or "<pid> <boot id> <start ticks>" where /proc tells. */
function lockText(): string {
  const boot = bootId();
  const start = startTicks(process.pid);
  return boot && start ? `${process.pid} ${boot} ${start}` : String(process.pid);
}

/** The pid of the live process other than this one that the lock `text` names; undefined when it names none. */
function heldByAnother(text: string): number | undefined {
  const [pidText, boot, start] = text.trim().split(" ");
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || !alive(pid)) return undefined;
  // Named by an earlier boot, or the pid is now another process's (a process's start time does not change).
  const thisBoot = bootId();
  if (boot && thisBoot && boot !== thisBoot) return undefined;
  const now = start ? startTicks(pid) : undefined;
  if (now !== undefined && now !== start) return undefined;
  return pid;
}

/** Creates `path` holding `text`, or throws EEXIST; a reader never finds it empty or half written (it is linked in whole). */
function createWhole(path: string, text: string): void {
  const draft = `${path}.${randomBytes(6).toString("hex")}`;
  writeFileSync(draft, text, { flag: "wx", mode: 0o600 });
  try {
    linkSync(draft, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") throw err;
    // A file system without hard links: created, then written.
    writeFileSync(path, text, { flag: "wx", mode: 0o600 });
  } finally {
    unlinkSync(draft);
  }
}

/** The lock's text; undefined when there is none. */
function readLock(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Takes the lock at `path` for this process; answers its release. Throws when another live process holds it. */
export function lockEmbeddedDatabase(path: string, what: string): () => void {
  const mine = held.get(path) ?? 0;
  if (mine === 0) {
    for (;;) {
      try {
        createWhole(path, lockText());
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        const text = readLock(path);
        // Let go meanwhile: tried again.
        if (text === undefined) continue;
        const holder = heldByAnother(text);
        if (holder !== undefined) {
          throw new EmbeddedDatabaseBusy(
            `${what} is open in process ${holder}: the embedded PGlite serves one process. Stop that process first, or set DATABASE_URL to share a PostgreSQL server`,
          );
        }
        // Left by a process that died (or by this one, before a restart; or by a pid that is now another's): taken
        // over, unless another process took it over meanwhile (a race of microseconds remains between look and unlink).
        if (readLock(path) === text) {
          try {
            unlinkSync(path);
          } catch (unlinkErr) {
            if ((unlinkErr as NodeJS.ErrnoException).code !== "ENOENT") throw unlinkErr;
          }
        }
      }
    }
  }
  held.set(path, mine + 1);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const left = (held.get(path) ?? 1) - 1;
    if (left > 0) return void held.set(path, left);
    held.delete(path);
    try {
      unlinkSync(path);
    } catch {
      // Already gone: nothing to release.
    }
  };
}
