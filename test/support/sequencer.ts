// The order test files start in. Vitest starts the files that took longest last
// time first, but a fresh checkout (CI) has no such record and starts the largest
// files first; then the files that wait longest (on RPC deadlines and on the
// processes they start) began late and the run ended on them alone. These few
// start first wherever the suite runs; the rest keep vitest's order.
import { BaseSequencer, type TestSpecification } from "vitest/node";

const SLOW_FIRST = ["hostile-connections", "storage", "cluster", "fuzz", "hostile-requests", "processes"].map((name) => `/test/${name}.test.ts`);

export default class SlowFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (f: TestSpecification) => {
      const i = SLOW_FIRST.findIndex((suffix) => f.moduleId.endsWith(suffix));
      return i < 0 ? SLOW_FIRST.length : i;
    };
    // Array.prototype.sort is stable: within a rank, vitest's order stays.
    return sorted.sort((a, b) => rank(a) - rank(b));
  }
}
