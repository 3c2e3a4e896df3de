// Bundles the browser code of the pages the server serves (the recovery page,
// and the page of the links mailed beside codes) into dist/web/. Runs before `npm start` and `npm test` (prestart,
// pretest), so a fresh clone needs nothing but `npm install`; the server refuses
// to start without the bundle rather than serve a page that cannot work.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

const started = Date.now();
const result = await build({
  absWorkingDir: root,
  entryPoints: [
    { in: "web/recovery/main.ts", out: "recovery" },
    { in: "web/recovery/style.css", out: "recovery" },
    { in: "web/verify/main.ts", out: "verify" },
    { in: "web/verify/style.css", out: "verify" },
  ],
  outdir: "dist/web",
  bundle: true,
  format: "esm",
  platform: "browser",
  // The client package (clients/ts) from its TypeScript sources, not its build.
  conditions: ["codegate-source"],
  // Browsers of the last few years; protobuf-es needs BigInt.
  target: ["es2022", "chrome109", "firefox115", "safari16"],
  minify: true,
  legalComments: "eof",
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.entries(result.metafile.outputs).map(([path, out]) => `${path} ${(out.bytes / 1024).toFixed(1)} kB`);
console.log(`web: built ${outputs.join(", ")} in ${Date.now() - started} ms`);
