// What the Python client and the example delivery worker (clients/python) need:
// Debian's python3-grpcio, protoc, grpc_python_plugin and the well-known .proto
// files. Debian's python, not whatever python3 is first on the PATH (a pyenv one
// does not see Debian's packages).
import { existsSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { inCi } from "./ci.ts";

export const PYTHON = "/usr/bin/python3";
export const PYTHON_CLIENT = join(import.meta.dirname, "../../clients/python");

/** Why the Python pieces cannot run here, if they cannot. */
function missing(): string | undefined {
  if (!existsSync(PYTHON)) return `no ${PYTHON}`;
  if (spawnSync(PYTHON, ["-c", "import grpc, google.protobuf"]).status !== 0) return "python3-grpcio is not installed";
  if (spawnSync("protoc", ["--version"]).status !== 0) return "protoc is not installed (protobuf-compiler)";
  if (spawnSync("sh", ["-c", "command -v grpc_python_plugin"]).status !== 0) return "grpc_python_plugin is not installed (protobuf-compiler-grpc)";
  if (!existsSync("/usr/include/google/protobuf/descriptor.proto")) return "the well-known .proto files are not installed (libprotobuf-dev)";
  return undefined;
}

/**
 * Why a file's Python tests are skipped, or undefined when they run. Under CI
 * (.ci/run installs the packages) a missing piece is a failure, not a skip (and
 * test/support/skip-reporter.ts fails a CI run with any skipped test, whatever
 * the file); the npm registry has no Python packages: locally they are skipped, saying why.
 */
export function pythonSkipReason(what: string): string | undefined {
  const reason = missing();
  if (reason && inCi()) throw new Error(`${what}: ${reason}`);
  if (reason) console.warn(`${what} tests skipped: ${reason}; apt-get install python3-grpcio protobuf-compiler protobuf-compiler-grpc libprotobuf-dev`);
  return reason;
}
