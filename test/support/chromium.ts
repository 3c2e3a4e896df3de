// The browser of test/recovery-page.test.ts, driven by playwright-core (which never
// downloads a browser of its own). By default the headless Chromium that the npm package
// @sparticuz/chromium carries, compressed, inside its registry tarball: `npm install` is
// all it needs, no system package and no download. CHROMIUM_PATH names another one
// (Debian's /usr/bin/chromium, say).
//
// The bundled browser is decompressed once (about 2 s) into
// $TMPDIR/codegate-chromium-<version>-<uid>/ and reused by later runs. The package's own
// executablePath() decompresses into $TMPDIR/chromium, shared by every project and
// user and taken as complete as soon as it exists, so here it runs with TMPDIR pointing
// at a fresh staging directory, which is renamed into place only when complete: two
// runs at once each extract, and the second rename loses harmlessly.
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { chromium as playwright, type Browser } from "playwright-core";

/** Flags for a machine without (or not to use) the network: no background traffic of the browser's own. */
const QUIET = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"];

/**
 * Flags of @sparticuz/chromium's `args` that are left out: they would weaken what the
 * test proves (the page working under the browser's same-origin and mixed-content
 * rules, as a user's browser enforces them).
 */
const WEAKENING = new Set(["--disable-web-security", "--allow-running-insecure-content"]);

function sparticuzVersion(): string {
  let dir = dirname(createRequire(import.meta.url).resolve("@sparticuz/chromium"));
  for (;;) {
    const file = join(dir, "package.json");
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, "utf8"));
      if (pkg.name === "@sparticuz/chromium") return pkg.version;
    }
    if (dirname(dir) === dir) throw new Error("no package.json for @sparticuz/chromium");
    dir = dirname(dir);
  }
}

/** A directory this user made and nobody else may write to. */
function ours(dir: string): boolean {
  const st = lstatSync(dir);
  return st.isDirectory() && st.uid === process.getuid?.() && (st.mode & 0o022) === 0;
}

/** The bundled browser, decompressed (once) into a directory of its own. */
async function bundledChromium(): Promise<{ executablePath: string; args: string[]; env: NodeJS.ProcessEnv }> {
  const { default: Chromium } = await import("@sparticuz/chromium");
  const tmp = tmpdir();
  const name = `codegate-chromium-${sparticuzVersion()}-${process.getuid?.() ?? "user"}`;
  const dir = join(tmp, name);
  const executablePath = join(dir, "chromium");
  if (existsSync(dir) && !ours(dir)) throw new Error(`${dir} belongs to another user or is writable by others: remove it`);
  if (!existsSync(executablePath)) {
    // Staging directories an interrupted run left behind (about 200 MB each).
    for (const entry of readdirSync(tmp)) {
      const path = join(tmp, entry);
      if (entry.startsWith(`${name}.part-`) && Date.now() - statSync(path).mtimeMs > 3_600_000) rmSync(path, { recursive: true, force: true });
    }
    const staging = mkdtempSync(join(tmp, `${name}.part-`));
    try {
      const saved = process.env.TMPDIR;
      process.env.TMPDIR = staging; // read by os.tmpdir() on every call
      let extracted: string;
      try {
        extracted = await Chromium.executablePath();
      } finally {
        if (saved === undefined) delete process.env.TMPDIR;
        else process.env.TMPDIR = saved;
      }
      if (extracted !== join(staging, "chromium")) throw new Error(`@sparticuz/chromium extracted to ${extracted}, not into ${staging}`);
      // Its fonts.conf names /tmp/fonts; this one names the fonts beside the browser.
      writeFileSync(
        join(staging, "fonts.conf"),
        `<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n  <dir>${join(dir, "fonts")}</dir>\n  <cachedir>${join(dir, "fonts-cache")}</cachedir>\n</fontconfig>\n`,
      );
      try {
        renameSync(staging, dir);
      } catch (err) {
        // Another run got there first: its copy is complete, this one goes.
        if (!existsSync(executablePath)) throw err;
      }
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }
  return {
    executablePath,
    args: Chromium.args.filter((a) => !WEAKENING.has(a)),
    env: { ...process.env, FONTCONFIG_FILE: join(dir, "fonts.conf") },
  };
}

/** Which browser the tests use, and how it was found (for messages). */
export async function chromiumForTests(): Promise<{ executablePath: string; args: string[]; env: NodeJS.ProcessEnv; source: string }> {
  const override = process.env.CHROMIUM_PATH;
  if (override) {
    // As root, Chromium starts only without its sandbox.
    const args = [...(process.getuid?.() === 0 ? ["--no-sandbox"] : []), "--disable-gpu"];
    return { executablePath: override, args, env: process.env, source: `CHROMIUM_PATH=${override}` };
  }
  return { ...(await bundledChromium()), source: "@sparticuz/chromium" };
}

/** A headless Chromium (see above), with no network traffic of its own. */
export async function launchChromium(): Promise<Browser> {
  const { executablePath, args, env, source } = await chromiumForTests();
  try {
    return await playwright.launch({ executablePath, headless: true, args: [...args, ...QUIET], env });
  } catch (err) {
    throw new Error(`could not start Chromium from ${source} (${executablePath})`, { cause: err });
  }
}
