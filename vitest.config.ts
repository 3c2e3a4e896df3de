import { availableParallelism } from "node:os";
import { join } from "node:path";
import { defineConfig } from "vitest/config";
import SlowFirstSequencer from "./test/support/sequencer.ts";

const jsonReport = process.env.VITEST_JSON_REPORT;

// Node's compile cache for every process of the run (the test workers, and the servers,
// workers and CLIs the tests start, which inherit the environment): each module is
// compiled once, not once per process (a server starts in about half the CPU).
process.env.NODE_COMPILE_CACHE ??= join(import.meta.dirname, "node_modules", ".cache", "node-compile");

/**
 * The workspace's own packages (clients/ts) from their TypeScript sources, as in
 * tsconfig.json; then Vite's own server conditions (its defaultServerConditions).
 */
const conditions = ["codegate-source", "module", "node", "development|production"];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/global-setup.ts"],
    // Each test file gets its own databases on the one PostgreSQL server.
    pool: "forks",
    // A worker keeps its modules from one file to the next (each file still builds its own
    // servers and databases): importing the app once per file cost a third of the run.
    isolate: false,
    // Much of a file's time is spent waiting on its server, PostgreSQL, child processes
    // or the browser: one file per core, at least two (vitest's default is one less than
    // the cores: a single file at a time on 2, which doubles the run). More than the
    // cores starves the tests that bound a call in real time (RPC_TIMEOUT of 300 ms).
    maxWorkers: Math.max(2, availableParallelism()),
    sequence: { sequencer: SlowFirstSequencer },
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: [
      "default",
      // Lists the tests that did not run, and fails the run for them under CI.
      "./test/support/skip-reporter.ts",
      // .ci/run checks the whole run's summary in this report too.
      ...(jsonReport ? [["json", { outputFile: jsonReport }] satisfies ["json", object]] : []),
    ],
  },
});
