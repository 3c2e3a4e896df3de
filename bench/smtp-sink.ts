// SMTP sink for the benchmark, in its own process: accepts every mail, counts it,
// keeps the code of each (the line indented by 4 spaces) and when it arrived, and
// hands them out over HTTP on loopback:  GET /count -> {"count","first","last"}
// GET /codes?since=N -> [[seq, to, code], ...]   GET /received?since=N -> [{id, at}, ...]
// (id: the Message-ID's local part, the outbox row's id; at: ms since the epoch).
//   node bench/smtp-sink.ts <smtpPort> <httpPort>
import { createServer } from "node:http";
import { SMTPServer } from "smtp-server";

const [smtpPort, httpPort] = process.argv.slice(2).map(Number);
const mails: [number, string, string][] = [];
const received: { seq: number; id: string; at: number }[] = [];
const MESSAGE_ID = /^Message-ID: <([^@>]+)@/im;
let count = 0;
let first = 0;
let last = 0;
const CODE = /^ {4}(\d{4,12})\r?$/m;

const smtp = new SMTPServer({
  authOptional: true,
  disabledCommands: ["STARTTLS", "AUTH"],
  logger: false,
  size: 1 << 20,
  onData(stream, session, cb) {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      const now = Date.now();
      if (!first) first = now;
      last = now;
      count++;
      const text = Buffer.concat(chunks).toString("utf8");
      const m = CODE.exec(text);
      const to = session.envelope.rcptTo[0]?.address ?? "";
      if (m) mails.push([count, to, m[1]]);
      const id = MESSAGE_ID.exec(text);
      if (id) received.push({ seq: count, id: id[1], at: now });
      cb();
    });
  },
});
// A client that drops its connection must not take the sink down.
smtp.on("error", (err) => console.error("smtp-sink:", err.message));
smtp.listen(smtpPort, "127.0.0.1");

createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://x");
  res.setHeader("content-type", "application/json");
  if (url.pathname === "/count") return res.end(JSON.stringify({ count, first, last }));
  if (url.pathname === "/received") {
    const since = Number(url.searchParams.get("since") ?? 0);
    return res.end(JSON.stringify(received.filter((m) => m.seq > since).map(({ id, at }) => ({ id, at }))));
  }
  if (url.pathname === "/codes") {
    const since = Number(url.searchParams.get("since") ?? 0);
    return res.end(JSON.stringify(mails.filter((m) => m[0] > since)));
  }
  res.statusCode = 404;
  res.end("{}");
}).listen(httpPort, "127.0.0.1", () => process.send?.("ready"));
