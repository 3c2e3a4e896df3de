// The message a code's mail becomes (src/rules/mail/mime.ts), read back as a mail
// client reads it (mailparser): whatever an organization names itself, nothing
// but its own headers reach the recipient.
import { describe, expect, it } from "vitest";
import { simpleParser } from "mailparser";
import { buildMessage, withRecipient } from "../src/rules/mail/mime.ts";
import { decodeMail, encodeMail } from "../src/rules/mail/payload.ts";
import { renderMail } from "../src/rules/mail/templates.ts";

const id = "0190e6b2-0000-7000-8000-000000000001";
const message = (orgName: string, from = { name: orgName, address: "no-reply@example.com" }) =>
  buildMessage({ id, date: new Date("2026-11-30T12:00:00Z"), from, ...renderMail("login", { orgName, code: "482913", lifespanMs: 600_000 }) });

describe("a code's mail as a message", () => {
  it("reads back as it was written: subject, sender, text, HTML, Message-ID, date", async () => {
    const parsed = await simpleParser(withRecipient(message("Bench A"), "jdoe@example.com"));
    const content = renderMail("login", { orgName: "Bench A", code: "482913", lifespanMs: 600_000 });
    expect(parsed.subject).toBe(content.subject);
    expect(parsed.from?.value).toEqual([{ name: "Bench A", address: "no-reply@example.com" }]);
    expect(parsed.to && !Array.isArray(parsed.to) && parsed.to.value).toEqual([{ name: "", address: "jdoe@example.com" }]);
    expect(parsed.text).toBe(content.text);
    expect(parsed.html).toBe(content.html);
    expect(parsed.messageId).toBe(`<${id}@codegate>`);
    expect(parsed.date?.toISOString()).toBe("2026-11-30T12:00:00.000Z");
  });

  it("keeps a hostile or non-ASCII organization name inside its own header", async () => {
    const name = 'Zürich "Bank"\r\nBcc: thief@example.net\r\n\r\nforged body';
    const raw = withRecipient(message(name), "jdoe@example.com");
    const parsed = await simpleParser(raw);
    expect(parsed.headers.has("bcc")).toBe(false);
    expect(parsed.from?.value[0].address).toBe("no-reply@example.com");
    expect(parsed.from?.value[0].name).toBe('Zürich "Bank" Bcc: thief@example.net forged body');
    expect(parsed.subject).toBe('Your Zürich "Bank" Bcc: thief@example.net forged body login code');
    // Only the headers written here, each once.
    const head = raw.toString("latin1").split("\r\n\r\n")[0];
    const names = head.split("\r\n").filter((l) => !/^\s/.test(l)).map((l) => l.slice(0, l.indexOf(":")).toLowerCase());
    expect(names.sort()).toEqual(["content-type", "date", "from", "message-id", "mime-version", "subject", "to"]);
  });

  it("is 7-bit with lines of at most 78 characters, whatever the text", async () => {
    const raw = withRecipient(message("Ünïcödé ".repeat(20)), "jdoe@example.com").toString("latin1");
    expect(/^[\x00-\x7f]*$/.test(raw)).toBe(true);
    for (const line of raw.split("\r\n")) expect(line.length, line).toBeLessThanOrEqual(78);
    expect((await simpleParser(raw)).subject).toBe(`Your ${"Ünïcödé ".repeat(20)} login code`);
  });

  it("addresses an internationalized domain by its A-label, and refuses what is not a mail address", async () => {
    const parsed = await simpleParser(withRecipient(message("Bench A"), "jdoe@bücher.example"));
    expect(parsed.to && !Array.isArray(parsed.to) && parsed.to.value[0].address).toBe("jdoe@bücher.example");
    expect(withRecipient(message("Bench A"), "jdoe@bücher.example").toString()).toContain("To: jdoe@xn--bcher-kva.example\r\n");
    for (const bad of ["jdoe", "@example.com", "j doe@example.com", "jdoe@example.com>\r\nBcc: x@y.z", "<jdoe@example.com>"]) {
      expect(() => withRecipient(message("Bench A"), bad), bad).toThrow("the recipient is not a mail address");
    }
  });

  it("is sealed with its envelope sender, and a mail queued by an earlier version (its parts as JSON) still becomes a message", async () => {
    const built = message("Bench A");
    expect(decodeMail(encodeMail({ from: "no-reply@example.com", message: built.toString("utf8") }), id, new Date())).toEqual({ from: "no-reply@example.com", message: built });
    const content = renderMail("recovery", { orgName: "Old Org", code: "123456", lifespanMs: 600_000 });
    const legacy = decodeMail(JSON.stringify({ ...content, from: '"Old Org" <old@example.com>' }), id, new Date());
    expect(legacy.from).toBe("old@example.com");
    const parsed = await simpleParser(withRecipient(legacy.message, "jdoe@example.com"));
    expect(parsed.subject).toBe(content.subject);
    expect(parsed.text).toBe(content.text);
    expect(parsed.from?.value).toEqual([{ name: "Old Org", address: "old@example.com" }]);
  });

  it("is the same message whether its parts' encoding was kept from a mail of the same template or not", () => {
    // A seeded generator: a failure names inputs that come back on the next run.
    let seed = 7;
    const r = (n: number) => {
      seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
      return seed % n;
    };
    const pieces = ["a", "Z", "0", "f", "=", " ", "\t", ".", ",", "!", "?", "-", "~", "é", "—", "😀", "\n", "\r\n", "<p style=\"x\">"];
    const alphabets = ["0123456789", "0123456789abcdef", "ABCDEFGHJKLMNPQRSTUVWXYZ23456789", "0123456789-", "01234 56789", "0123~"];
    const texts = (code: string) => {
      const out: string[] = [];
      for (let len = 20 + r(300); out.join("").length < len; ) {
        // Long runs without a place to break, so wrap() cuts lines next to and inside the code.
        if (r(4) === 0) out.push(code);
        else if (r(3) === 0) out.push("x".repeat(r(90)));
        else out.push(pieces[r(pieces.length)]!);
      }
      return out.join("") + (r(2) ? code : "");
    };
    const mail = { id, date: new Date("2026-11-30T12:00:00Z"), from: { name: "Bench A", address: "no-reply@example.com" }, subject: "Your code" };
    // Unshared, a message is encoded whole: the reference.
    const same = (content: { text: string; html: string }, shared: { code?: string }) =>
      expect(buildMessage({ ...mail, ...content, shared }).toString("latin1"), JSON.stringify({ shared, text: content.text })).toBe(buildMessage({ ...mail, ...content }).toString("latin1"));
    const codeOf = (alphabet: string, length: number) => Array.from({ length }, () => alphabet[r(alphabet.length)]).join("");
    for (let i = 0; i < 3000; i++) {
      const alphabet = alphabets[r(alphabets.length)]!;
      const length = 4 + r(10);
      // Mails of one template: the same text around different codes, of one length and of others; and notices whose text is that
      // of a code's mail with its code taken out.
      const around = texts("\u0000");
      for (const c of [codeOf(alphabet, length), codeOf(alphabet, length), codeOf(alphabet, 4 + r(10)), codeOf(alphabet, 4 + r(10))]) {
        same({ text: around.replaceAll("\u0000", c), html: `<p>${around.replaceAll("\u0000", c)}</p>` }, { code: c });
      }
      const shape = around.replaceAll("\u0000", "~".repeat(length));
      same({ text: shape, html: `<p>${shape}</p>` }, {});
    }
    // Found in review: the text of a mail with three codes of four characters, which wrap() breaks between two of them, is
    // the text of one with two codes of six; and a notice's text may be what a code's mail is with its code taken out.
    const x71 = "x".repeat(71);
    same({ text: `${x71}ABCDABCDABCD end`, html: "" }, { code: "ABCD" });
    same({ text: `${x71}123456123456 end`, html: "" }, { code: "123456" });
    same({ text: `${x71}~~~~~~~~~~~~ end`, html: "" }, {});
  });
});
