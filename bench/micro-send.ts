// CPU µs of the pieces of a send, in process, without I/O: what each costs on
// its own, to tell which are worth making cheaper.
//   node bench/micro-send.ts
import { createHmac, createSecretKey, generateKeyPairSync, randomBytes, randomUUIDv7, createCipheriv } from "node:crypto";
import { ProofTokens } from "../src/rules/tokens.ts";
import { create, fromJson, toJson } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import { SendLoginCodeRequestSchema, VerifyLoginCodeRequestSchema } from "../gen/codegate/v1/login_pb.ts";
import { renderMail } from "../src/rules/mail/templates.ts";
import { addressKey, clientAddress, parseTrustedProxies } from "../src/lib/address.ts";
import { contextOfTraceparent, currentTraceparent } from "../src/lib/tracing.ts";
import { requestValidator } from "../src/server/validation.ts";

function time(name: string, n: number, fn: (i: number) => unknown) {
  for (let i = 0; i < Math.min(n, 2000); i++) fn(i);
  const t0 = process.cpuUsage();
  for (let i = 0; i < n; i++) fn(i);
  const t = process.cpuUsage(t0);
  console.log(`${name.padEnd(44)} ${((t.user + t.system) / n).toFixed(2).padStart(8)} µs`);
}

const validator = createValidator();
const send = fromJson(SendLoginCodeRequestSchema, { username: "user123@bench.test", orgId: "or-0123456789abcdefghij" });
const verify = fromJson(VerifyLoginCodeRequestSchema, { username: "user123@bench.test", orgId: "or-0123456789abcdefghij", code: "123456" });
const json = JSON.stringify(toJson(SendLoginCodeRequestSchema, send));
// A KeyObject, as the server's key rings hold: with a raw Buffer, createHmac and
// createCipheriv import the key on every call (HMAC 14 µs instead of 3).
const key = createSecretKey(randomBytes(32));
const proxies = parseTrustedProxies([]).proxies;

time("JSON.parse + fromJson (send request)", 50000, () => fromJson(SendLoginCodeRequestSchema, JSON.parse(json)));
time("protovalidate SendLoginCodeRequest", 20000, () => validator.validate(SendLoginCodeRequestSchema, send));
time("protovalidate VerifyLoginCodeRequest", 20000, () => validator.validate(VerifyLoginCodeRequestSchema, verify));
const served = requestValidator();
time("the server's validator, SendLoginCodeRequest", 20000, () => served.validate(SendLoginCodeRequestSchema, send));
time("the server's validator, VerifyLoginCodeRequest", 20000, () => served.validate(VerifyLoginCodeRequestSchema, verify));
time("create(empty response)", 50000, () => create(SendLoginCodeRequestSchema));
time("randomUUIDv7", 50000, () => randomUUIDv7());
time("HMAC-SHA256 of a code", 50000, (i) => createHmac("sha256", key).update("0190e6b2-0000-7000-8000-000000000000").update("\0").update(String(i)).digest());
time("renderMail(login)", 50000, () => renderMail("login", { orgName: "Bench A", code: "123456", lifespanMs: 600000 }));
const mail = JSON.stringify({ ...renderMail("login", { orgName: "Bench A", code: "123456", lifespanMs: 600000 }), from: '"Bench A" <no-reply@codegate.local>' });
time("AES-256-GCM seal of a mail", 50000, () => {
  const c = createCipheriv("aes-256-gcm", key, randomBytes(12));
  c.setAAD(Buffer.from("0190e6b2-0000-7000-8000-000000000000"));
  return Buffer.concat([c.update(mail, "utf8"), c.final(), c.getAuthTag()]);
});
time("clientAddress + addressKey (no proxies)", 50000, () => addressKey(clientAddress("::ffff:127.0.0.1", "", proxies)));
time("new Error (stack trace)", 50000, () => new Error("x"));
time("AbortController + abort()", 50000, () => new AbortController().abort());
time("AbortController + setTimeout/clear", 50000, () => {
  const c = new AbortController();
  clearTimeout(setTimeout(() => c.abort(), 1000));
});
const { buildMessage } = await import("../src/rules/mail/mime.ts");
const content = renderMail("login", { orgName: "Bench A", code: "123456", lifespanMs: 600000 });
time("buildMessage (MIME, login mail), encoded whole", 20000, () =>
  buildMessage({ id: "0190e6b2-0000-7000-8000-000000000001", date: new Date(), from: { name: "Bench A", address: "no-reply@codegate.local" }, ...content }),
);
// As a send builds it: the parts' encoding kept from the template's previous mail, the code put back in.
let n = 0;
time("buildMessage (MIME, login mail), as sent", 20000, () => {
  const code = String(100000 + (n++ % 900000));
  const c = renderMail("login", { orgName: "Bench A", code, lifespanMs: 600000 });
  return buildMessage({ id: "0190e6b2-0000-7000-8000-000000000001", date: new Date(), from: { name: "Bench A", address: "no-reply@codegate.local" }, ...c, shared: { code } });
});

// Tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT): what a send still runs of it. No interceptor
// and no statement wrapper are installed; these are the calls left on the path.
time("tracing off: currentTraceparent (sealing a mail)", 1_000_000, () => currentTraceparent());
time("tracing off: contextOfTraceparent (delivering it)", 1_000_000, () => contextOfTraceparent(undefined));

// A verification's proof token: a compact JWS signed with Ed25519 (rules/tokens.ts).
const tokenKey = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString();
const tokens = await ProofTokens.create(tokenKey, { issuer: "http://localhost:8080", audience: "codegate", ttlMs: 300_000 });
{
  const n = 20000;
  for (let i = 0; i < 1000; i++) await tokens.issue({ id: randomUUIDv7(), orgId: "or-x" }, "login", new Date());
  const t0 = process.cpuUsage();
  for (let i = 0; i < n; i++) await tokens.issue({ id: randomUUIDv7(), orgId: "or-x" }, "login", new Date());
  const t = process.cpuUsage(t0);
  console.log(`${"proof token (Ed25519 JWS)".padEnd(44)} ${((t.user + t.system) / n).toFixed(2).padStart(8)} µs`);
}
