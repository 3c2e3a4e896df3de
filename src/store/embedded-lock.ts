// The embedded PGlite serves one process: a second one opening its files (a second
// `npm start` on the same DATA_DIR, or `admin-token create` while the server runs)
// would each keep its own view of them and write over the other's. The process that
// opens them holds a lock file beside them, naming its pid; another is refused while
// that process lives. A lock left by a process that died is taken over.
import { readFileSync, unlinkSync, writeFileSync } from "node:fs";

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

/** Takes the lock at `path` for this process; answers its release. Throws when another live process holds it. */
export function lockEmbeddedDatabase(path: string, what: string): () => void {
  const mine = held.get(path) ?? 0;
  if (mine === 0) {
    for (;;) {
      try {
        writeFileSync(path, String(process.pid), { flag: "wx", mode: 0o600 });
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        const holder = Number(readFileSync(path, "utf8").trim());
        if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && alive(holder)) {
          throw new EmbeddedDatabaseBusy(
            `${what} is open in process ${holder}: the embedded PGlite serves one process. Stop that process first, or set DATABASE_URL to share a PostgreSQL server`,
          );
        }
        // Left by a process that died (or by this one, before a restart): taken over.
        unlinkSync(path);
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
