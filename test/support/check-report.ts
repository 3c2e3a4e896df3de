// For .ci/run: reads vitest's JSON report of the whole run (VITEST_JSON_REPORT) and
// fails unless every test ran and passed: no failure, no skipped or todo test, and
// not an empty run. Prints the tests that did not pass.
//   node test/support/check-report.ts <report.json>
import { readFileSync } from "node:fs";
import { relative } from "node:path";

interface Report {
  success: boolean;
  numTotalTests: number;
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  numTodoTests: number;
  numFailedTestSuites: number;
  testResults: { name: string; status: string; message?: string; assertionResults: { fullName: string; status: string }[] }[];
}

const file = process.argv[2];
if (!file) throw new Error("usage: check-report.ts <vitest JSON report>");
const report = JSON.parse(readFileSync(file, "utf8")) as Report;
const problems: string[] = [];
for (const result of report.testResults) {
  const where = relative(process.cwd(), result.name);
  if (result.status !== "passed") problems.push(`${where}: file ${result.status}${result.message ? `: ${result.message.split("\n")[0]}` : ""}`);
  for (const t of result.assertionResults) if (t.status !== "passed") problems.push(`${where} > ${t.fullName}: ${t.status}`);
}
const summary = `${report.numTotalTests} tests: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${report.numPendingTests} skipped, ${report.numTodoTests} todo`;
if (!report.success || report.numTotalTests === 0 || report.numPassedTests !== report.numTotalTests || problems.length > 0) {
  console.error(`test report: ${summary}; every test must run and pass here:\n${problems.map((p) => `  ${p}`).join("\n")}`);
  process.exit(1);
}
console.log(`test report: ${summary}`);
