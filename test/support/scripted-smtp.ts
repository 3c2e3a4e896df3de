// A small SMTP server that misbehaves on purpose, for the courier's hostile-server
// tests: it drips its EHLO reply a byte at a time (which resets every idle timeout),
// quotes the mail in its refusal (as a content filter may), or puts a NUL in its
// reply to RCPT TO. smtp-server (support/smtp.ts) cannot be made to do these.
import net from "node:net";

export type SmtpMisbehaviour = "drip" | "quote" | "nul";

export class ScriptedSmtp {
  /** Connections opened so far, and those still open. */
  opened = 0;
  readonly open = new Set<net.Socket>();
  /** The messages it was sent (whether it took them or not), as received. */
  readonly bodies: string[] = [];
  readonly #server: net.Server;
  readonly #timers = new Set<NodeJS.Timeout>();

  private constructor(mode: SmtpMisbehaviour) {
    this.#server = net.createServer((socket) => this.#serve(socket, mode));
  }

  static async start(mode: SmtpMisbehaviour): Promise<ScriptedSmtp> {
    const smtp = new ScriptedSmtp(mode);
    await new Promise<void>((resolve) => smtp.#server.listen(0, "127.0.0.1", () => resolve()));
    return smtp;
  }

  get url(): string {
    return `smtp://127.0.0.1:${(this.#server.address() as net.AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    for (const t of this.#timers) clearInterval(t);
    for (const s of this.open) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #serve(socket: net.Socket, mode: SmtpMisbehaviour): void {
    this.opened++;
    this.open.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => this.open.delete(socket));
    const say = (line: string) => socket.write(`${line}\r\n`);
    let buffer = "";
    let data: string | undefined;
    say("220 scripted ESMTP");
    socket.on("data", (chunk) => {
      buffer += chunk.toString("latin1");
      for (;;) {
        if (data !== undefined) {
          const end = buffer.indexOf("\r\n.\r\n");
          if (end < 0) return;
          data += buffer.slice(0, end);
          buffer = buffer.slice(end + 5);
          const body = data;
          data = undefined;
          this.bodies.push(body);
          say(mode === "quote" ? `554 5.7.1 rejected content: ${body.replace(/\r?\n/g, " ").slice(-400)}` : "250 2.0.0 queued");
          continue;
        }
        const eol = buffer.indexOf("\r\n");
        if (eol < 0) return;
        const line = buffer.slice(0, eol);
        buffer = buffer.slice(eol + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === "EHLO" && mode === "drip") {
          // An endless reply line, a byte every 50 ms: never a whole reply, never idle.
          const drip = setInterval(() => socket.writable && socket.write("2"), 50);
          this.#timers.add(drip);
          socket.once("close", () => (clearInterval(drip), this.#timers.delete(drip)));
          return;
        }
        if (verb === "EHLO" || verb === "HELO") say("250 scripted");
        else if (verb === "RCPT") say(mode === "nul" ? "550 5.1.1 no such\u0000user" : "250 2.1.5 ok");
        else if (verb === "DATA") (say("354 go on"), (data = ""));
        else if (verb === "QUIT") (say("221 bye"), socket.end());
        else say("250 ok");
      }
    });
  }
}
