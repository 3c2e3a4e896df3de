import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/global-setup.ts"],
    // Each test file gets its own database on the one PostgreSQL server.
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
