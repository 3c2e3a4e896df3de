// A vitest reporter (beside the default one, see vitest.config.ts) that lists, at the
// end of every run, each test that did not run, with its file and full name (a skipped
// suite's name says why: "the Python client over gRPC (skipped: …)"). Under CI (the CI
// environment variable set, and not "false" or "0") any skipped or todo test fails the
// whole run: what CI installs must be tested there, never silently passed over.
// Tests left out on purpose by a filter (`-t`, `.only`) are not counted.
import type { Reporter, TestCase, TestModule } from "vitest/node";
import { inCi } from "./ci.ts";

/** Tests that did not run because they were skipped, not because a filter left them out. */
function notRun(modules: ReadonlyArray<TestModule>): { test: TestCase; why: string }[] {
  const out: { test: TestCase; why: string }[] = [];
  for (const module of modules) {
    for (const test of module.children.allTests()) {
      const result = test.result();
      if (result.state !== "skipped") continue;
      const mode = test.options.mode;
      // "skip" is also the mode of a test that a name filter or an .only elsewhere left out.
      if (mode === "skip" && test.project.config.testNamePattern && !test.project.config.testNamePattern.test(test.fullName)) continue;
      out.push({ test, why: result.note ?? (mode === "todo" ? "todo" : "skipped") });
    }
  }
  return out;
}

export default class SkipReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const skipped = notRun(modules);
    if (skipped.length === 0) return;
    const ci = inCi();
    const lines = skipped.map(({ test, why }) => `  ${test.module.relativeModuleId} > ${test.fullName} (${why})`);
    const head = ci
      ? `\n${skipped.length} test(s) did not run, which under CI is a failure:`
      : `\n${skipped.length} test(s) did not run (under CI=true this fails the run):`;
    console.log([head, ...lines, ""].join("\n"));
    if (ci) process.exitCode = 1;
  }
}
