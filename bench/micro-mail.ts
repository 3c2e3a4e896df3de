// CPU per mail of the ways to compose and deliver one, against the bench's SMTP
// sink in a process of its own: what the courier's delivery costs and what could
// replace it.   node bench/micro-mail.ts [mails=3000]
import { fork } from "node:child_process";
import { join } from "node:path";
import nodemailer from "nodemailer";
import MailComposer from "nodemailer/lib/mail-composer";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import { freePort } from "./postgres.ts";
import { renderMail } from "../src/rules/mail/templates.ts";

const N = Number(process.argv[2] ?? 3000);
const smtpPort = await freePort();
const httpPort = await freePort();
const sink = fork(join(import.meta.dirname, "smtp-sink.ts"), [String(smtpPort), String(httpPort)], { stdio: "inherit" });
await new Promise((r) => sink.once("message", r));

const content = renderMail("login", { orgName: "Bench A", code: "123456", lifespanMs: 600_000 });
const mail = (i: number) => ({ messageId: `<0190e6b2-0000-7000-8000-${String(i).padStart(12, "0")}@codegate>`, from: '"Bench A" <no-reply@codegate.local>', to: `user${i}@bench.test`, ...content });

async function cpu(name: string, fn: () => Promise<void>) {
  const t0 = process.cpuUsage();
  const w0 = performance.now();
  await fn();
  const t = process.cpuUsage(t0);
  console.log(`${name.padEnd(52)} ${((t.user + t.system) / N).toFixed(1).padStart(7)} µs/mail  (${(N / ((performance.now() - w0) / 1000)).toFixed(0)} mails/s)`);
}

const composed: Buffer[] = [];
await cpu("compose with MailComposer", async () => {
  for (let i = 0; i < N; i++) composed.push(await new MailComposer(mail(i)).compile().build());
});

const pool = () => nodemailer.createTransport({ pool: true, maxConnections: 8, maxMessages: Infinity, host: "127.0.0.1", port: smtpPort, secure: false, ignoreTLS: true });
for (const [name, raw] of [["sendMail, composed per mail (today)", false], ["sendMail, raw message", true]] as const) {
  const t = pool();
  await t.sendMail({ ...mail(0) }); // connect first
  await cpu(`8 pooled connections: ${name}`, async () => {
    await Promise.all(Array.from({ length: N }, (_, i) => (raw ? t.sendMail({ envelope: { from: "no-reply@codegate.local", to: mail(i).to }, raw: composed[i] }) : t.sendMail(mail(i)))));
  });
  t.close();
}

await cpu("8 SMTPConnections: send(envelope, raw)", async () => {
  const conns = await Promise.all(Array.from({ length: 8 }, async () => {
    const c = new SMTPConnection({ host: "127.0.0.1", port: smtpPort, ignoreTLS: true });
    // The sink may reset a connection as it quits; that is no failure of a send.
    c.on("error", () => {});
    await new Promise<void>((res, rej) => c.connect((err?: Error) => (err ? rej(err) : res())));
    return c;
  }));
  let next = 0;
  await Promise.all(conns.map(async (c) => {
    for (let i = next++; i < N; i = next++) {
      await new Promise<void>((res, rej) => c.send({ from: "no-reply@codegate.local", to: [mail(i).to] }, composed[i], (err) => (err ? rej(err) : res())));
    }
    c.quit();
  }));
});
sink.kill();
