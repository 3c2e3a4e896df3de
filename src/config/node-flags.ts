/**
 * The Node (V8) flags a courier process runs with: `serve` forks its courier worker
 * with them, and a separate courier is started with them (package.json's `courier`
 * script; README, "Processes"). They must be on the command line: V8 sizes its heap
 * when the process starts.
 *
 * A courier's mails in flight outlive the young generation and are promoted, and with
 * the old generation's default starting limit (sized to the small live heap) it ran
 * a major GC every 0.3 s while draining a backlog: 35 in 18 s, 800 ms of marking, and
 * V8's GC threads a third of the process's CPU. With 128 MB it ran 5; its CPU per mail
 * fell by 11 % (bench courier flow, 60,000 mails, three interleaved pairs: 219, 199, 216
 * against 178, 189, 193 µs). The live heap stays near 35 MB.
 */
export const COURIER_NODE_FLAGS: readonly string[] = ["--initial-old-space-size=128"];
