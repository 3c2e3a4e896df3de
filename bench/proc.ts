// CPU time from /proc, in clock ticks (USER_HZ: 100 a second on Linux), for the benchmarks'
// per-process and per-machine figures.
import { readFileSync } from "node:fs";

/** Milliseconds in a clock tick. */
export const TICK_MS = 10;

/** The fields of /proc/<pid>/stat after the command's name (which may hold spaces): [0] is the state, [11] utime. */
export function statFields(pid: number | "self"): string[] {
  const s = readFileSync(`/proc/${pid}/stat`, "utf8");
  return s.slice(s.lastIndexOf(")") + 2).split(" ");
}

/** The machine's CPU time in ticks (all CPUs): busy, idle, the part the hypervisor gave to others (steal), and all of it. */
export function machineTicks(): { busy: number; idle: number; steal: number; total: number } {
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { busy: user + nice + system + irq + softirq, idle: idle + iowait, steal, total: user + nice + system + idle + iowait + irq + softirq + steal };
}
