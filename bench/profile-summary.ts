// Summarises a V8 .cpuprofile (node --cpu-prof): self time by function and by
// package, to find where a hot path spends its CPU.
//   [INCLUSIVE=all] [LAST_S=n] node bench/profile-summary.ts <file.cpuprofile> [top=30]
// LAST_S keeps the profile's last n seconds only: the phase a bench ran last
// (verify after the sends that made its codes).
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
const [file, topArg] = process.argv.slice(2);
if (!file) throw new Error("usage: node bench/profile-summary.ts <file.cpuprofile> [top]");
const top = Number(topArg ?? 30);
const profile = JSON.parse(readFileSync(file, "utf8")) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map<number, number>();
const ends: number[] = [];
profile.timeDeltas.reduce((t, d, i) => (ends[i] = t + d), 0);
const from = process.env.LAST_S ? (ends.at(-1) ?? 0) - Number(process.env.LAST_S) * 1e6 : -Infinity;
profile.samples.forEach((id, i) => {
  if (ends[i]! >= from) self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
});
const total = [...self.values()].reduce((a, b) => a + b, 0);

const where = (url: string) => {
  if (!url) return "(native/vm)";
  const m = url.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/);
  if (m) return m[1]!;
  if (url.startsWith("node:")) return url.split("/")[0]!;
  const s = url.match(/\/(src|gen|bench)\/.*/);
  return s ? s[0].slice(1) : url;
};
const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
const fns = new Map<string, number>();
const pkgs = new Map<string, number>();
for (const [id, us] of self) {
  const n = byId.get(id)!;
  const f = n.callFrame;
  add(fns, `${f.functionName || "(anonymous)"} ${where(f.url)}:${f.lineNumber + 1}`, us);
  add(pkgs, where(f.url).replace(/^(src|gen)\/([^/]+)\/.*/, "$1/$2"), us);
}
const show = (title: string, m: Map<string, number>) => {
  console.log(`\n${title} (of ${(total / 1e6).toFixed(2)} s sampled)`);
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${((100 * us) / total).toFixed(1).padStart(5)} %  ${k}`);
};
show("self time by package", pkgs);
show("self time by function", fns);

// Inclusive time: a function's own time plus its callees', counted once per
// sample even when the function recurses, for the functions of src/ (where a
// request's time goes, by the code that spends it), or of every package with
// INCLUSIVE=all. Stacks end at an await: what runs after one counts under the
// microtask that resumed it.
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const inclusive = new Map<string, number>();
for (const [id, us] of self) {
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const f = byId.get(at)!.callFrame;
    if (process.env.INCLUSIVE !== "all" && !/\/src\//.test(f.url)) continue;
    const key = `${f.functionName || "(anonymous)"} ${where(f.url)}:${f.lineNumber + 1}`;
    if (seen.has(key)) continue;
    seen.add(key);
    add(inclusive, key, us);
  }
}
show(`inclusive time by function${process.env.INCLUSIVE === "all" ? "" : " of src/"}`, inclusive);
