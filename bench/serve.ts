// `serve` from this checkout, as the benchmarks start it: its own process, listening
// on 127.0.0.1, its operations listener on a free port.
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";

/** Starts `serve` on 127.0.0.1:`port` with `env` over this process's environment. */
export function spawnServe(port: number, env: Record<string, string>, stdio: StdioOptions = ["ignore", "inherit", "inherit"]): ChildProcess {
  return spawn(process.execPath, ["src/main.ts", "serve"], { env: { ...process.env, PORT: String(port), OPS_PORT: "0", HOST: "127.0.0.1", ...env }, stdio });
}
