// The OpenAPI 3.1 document of the REST routes, made from the protos: the routes
// are the server's own reading of the google.api.http annotations (restRoutes
// of src/server/rest/routes.ts, so a rule the server refuses fails here too),
// the bodies, parameters and answers are the protobuf JSON of the request and
// response messages, and the constraints are the protovalidate rules the server
// enforces. Run by buf as a protoc plugin (plugin.ts); the output is committed
// under gen/openapi/ and served at GET /openapi.json.
import {
  getOption,
  hasOption,
  isFieldSet,
  ScalarType,
  type DescEnum,
  type DescField,
  type DescFile,
  type DescMessage,
} from "@bufbuild/protobuf";
import {
  DurationRulesSchema,
  EnumRulesSchema,
  field as fieldRulesExt,
  Ignore,
  message as messageRulesExt,
  RepeatedRulesSchema,
  StringRulesSchema,
  type FieldRules,
} from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { getComments } from "@bufbuild/protoplugin";
import { restRoutes, type RestRoute } from "../../src/server/rest/routes.ts";

/** A JSON Schema (2020-12, as OpenAPI 3.1 uses it) or any OpenAPI object: plain JSON. */
type Json = { [key: string]: unknown };

export interface OpenApiOptions {
  title: string;
  version: string;
  /** Services whose every call needs `Authorization: Bearer <admin token>`. */
  bearerServices: ReadonlySet<string>;
}

/** The name of the bearer security scheme. */
export const BEARER_SCHEME = "adminToken";

/** google.rpc.Code's HTTP statuses as src/server/rest/handler.ts answers them, and when. */
const ERROR_RESPONSES: Record<string, string> = {
  "400": "Bad input (`INVALID_ARGUMENT`): the message names the field and what was expected; also a refused precondition or a body that is not JSON",
  "401": "No valid admin token (`UNAUTHENTICATED`): `Authorization: Bearer <admin token>` is required",
  "404": "What the request names does not exist (`NOT_FOUND`)",
  "413": "The body is larger than the server's MAX_REQUEST_BYTES",
  "415": "The body is not `Content-Type: application/json` (or has a Content-Encoding)",
  "429": "Too many requests (`RATE_LIMITED`): come back after `Retry-After` seconds",
  "500": "An internal error; its message quotes the request id, which the server's log carries too",
  "503": "The server cannot reach its database (`UNAVAILABLE`): come back after `Retry-After` seconds",
  "504": "The request took longer than the server's RPC_TIMEOUT (`DEADLINE_EXCEEDED`)",
};

const DESCRIPTION = `The documented REST routes of Codegate. Each runs its RPC (named in \`x-rpc\`), with the
same validation, admin authentication, limits and logging as over gRPC and Connect.

Bodies are JSON (\`Content-Type: application/json\`) in the protobuf JSON mapping of the RPC's
request message: field names as given here (the proto names are accepted too), enums by name,
durations as seconds with an \`s\` (\`"600s"\`), timestamps in RFC 3339. An unknown field is a 400
that names it. Every answer carries an \`X-Request-Id\` header (a client may choose it, 1 to 64 of
\`A-Za-z0-9._:-\`); errors have the shape of \`ErrorBody\`, whose \`request\` is that id.

Every RPC, including the ones without a REST route, is also served as Connect
(\`POST /codegate.v1.<Service>/<Method>\`, JSON or binary), gRPC and gRPC-Web on the same port.`;

export function openApiDocument(files: readonly DescFile[], opts: OpenApiOptions): Json {
  const services = files.flatMap((f) => f.services);
  const routes = restRoutes(services.flatMap((s) => s.methods));
  const schemas = new SchemaSet();
  const paths: Record<string, Record<string, Json>> = {};
  const operationIds = new Map<string, number>();

  for (const route of routes) {
    const method = route.method;
    const path = route.template;
    const bearer = opts.bearerServices.has(method.parent.typeName);
    const baseId = `${method.parent.name}_${method.name}`;
    const n = (operationIds.get(baseId) ?? 0) + 1;
    operationIds.set(baseId, n);
    const { summary, description } = summaryOf(commentOf(method));

    const op: Json = {
      operationId: n === 1 ? baseId : `${baseId}_${n}`,
      tags: [method.parent.name],
      ...(summary ? { summary } : {}),
      ...(description ? { description } : {}),
      "x-rpc": `${method.parent.typeName}/${method.name}`,
    };
    const params = parametersOf(route, schemas);
    const rules = messageRuleText(method.input);
    if (params.length) op.parameters = params;
    if (rules && route.body === "") op.description = [op.description, `Rules: ${rules}.`].filter(Boolean).join("\n\n");
    if (route.body === "*") {
      op.requestBody = {
        required: true,
        content: { "application/json": { schema: bodySchema(route, schemas) } },
      };
    }
    op.responses = responsesOf(route, bearer, schemas);
    if (bearer) op.security = [{ [BEARER_SCHEME]: [] }];
    (paths[path] ??= {})[route.verb.toLowerCase()] = op;
  }

  return {
    openapi: "3.1.0",
    info: { title: opts.title, version: opts.version, description: DESCRIPTION },
    tags: services
      .filter((s) => routes.some((r) => r.method.parent === s))
      .map((s) => ({ name: s.name, description: commentOf(s) ?? s.typeName })),
    paths,
    components: {
      schemas: { ...schemas.sorted(), ErrorBody: ERROR_BODY },
      responses: errorResponseComponents(),
      headers: {
        RequestId: { description: "The request's id, also in the server's log lines and in an error body's `request`", schema: { type: "string" } },
        RetryAfter: { description: "Seconds to wait before trying again", schema: { type: "integer", minimum: 1 } },
      },
      securitySchemes: {
        [BEARER_SCHEME]: {
          type: "http",
          scheme: "bearer",
          description: "An admin token (`npm run admin-token -- create NAME`, or the server's ADMIN_TOKEN)",
        },
      },
    },
  };
}

/** The documented error body (src/server/rest/handler.ts restErrorBody). */
const ERROR_BODY: Json = {
  type: "object",
  description: "Every REST error",
  required: ["error"],
  properties: {
    error: {
      type: "object",
      required: ["code", "status", "reason", "message", "request"],
      properties: {
        code: { type: "integer", description: "The HTTP status", examples: [400] },
        status: { type: "string", description: "The HTTP status's text", examples: ["Bad Request"] },
        reason: {
          type: "string",
          description:
            "A machine-readable reason: INVALID_ARGUMENT, UNAUTHENTICATED, INVALID_CODE, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, " +
            "FAILED_PRECONDITION, RATE_LIMITED, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, METHOD_NOT_ALLOWED, UNSUPPORTED_MEDIA_TYPE, REQUEST_TOO_LARGE",
          examples: ["INVALID_ARGUMENT"],
        },
        message: { type: "string", description: "What went wrong, for a person: which field, what was expected", examples: ["identity_id: value must be a valid UUID"] },
        request: { type: "string", description: "The request id (the X-Request-Id header of the answer)" },
      },
    },
  },
};

const errorRef = (status: string) => ({ $ref: `#/components/responses/Error${status}` });

function errorResponseComponents(): Json {
  const out: Json = {};
  for (const [status, description] of Object.entries(ERROR_RESPONSES)) {
    const headers: Json = { "X-Request-Id": { $ref: "#/components/headers/RequestId" } };
    if (status === "429" || status === "503") headers["Retry-After"] = { $ref: "#/components/headers/RetryAfter" };
    out[`Error${status}`] = { description, headers, content: { "application/json": { schema: { $ref: "#/components/schemas/ErrorBody" } } } };
  }
  out.Error = {
    description: "Any other error, in the same shape",
    headers: { "X-Request-Id": { $ref: "#/components/headers/RequestId" } },
    content: { "application/json": { schema: { $ref: "#/components/schemas/ErrorBody" } } },
  };
  return out;
}

function responsesOf(route: RestRoute, bearer: boolean, schemas: SchemaSet): Json {
  const out: Json = {
    [String(route.successStatus)]: {
      description: route.successStatus === 201 ? "Created" : "OK",
      headers: { "X-Request-Id": { $ref: "#/components/headers/RequestId" } },
      content: { "application/json": { schema: schemas.ref(route.method.output, false) } },
    },
  };
  const statuses = ["400", ...(bearer ? ["401", "404"] : []), ...(route.body === "*" ? ["413", "415"] : []), "429", "500", "503", "504"];
  for (const status of statuses) out[status] = errorRef(status);
  out.default = { $ref: "#/components/responses/Error" };
  return out;
}

/** Path variables, then (without a body) the query parameters: every field the route can bind. */
function parametersOf(route: RestRoute, schemas: SchemaSet): Json[] {
  const inPath = new Set<DescField>();
  const params: Json[] = [];
  for (const segment of route.segments) {
    if (!("field" in segment)) continue;
    inPath.add(segment.field);
    params.push({ name: segment.field.name, in: "path", required: true, ...fieldDoc(segment.field), schema: schemas.field(segment.field, true) });
  }
  if (route.body === "") {
    for (const field of route.method.input.fields) {
      if (inPath.has(field) || !isQueryable(field)) continue;
      const param: Json = { name: field.jsonName, in: "query", required: isRequired(field), ...fieldDoc(field), schema: schemas.field(field, true) };
      if (field.fieldKind === "list") Object.assign(param, { style: "form", explode: true });
      params.push(param);
    }
  }
  return params;
}

/** As src/server/rest/routes.ts binds query parameters. */
function isQueryable(field: DescField): boolean {
  if (field.fieldKind === "scalar" || field.fieldKind === "enum") return true;
  return field.fieldKind === "list" && field.listKind !== "message";
}

function bodySchema(route: RestRoute, schemas: SchemaSet): Json {
  const inPath = new Set(route.segments.flatMap((s) => ("field" in s ? [s.field] : [])));
  if (inPath.size === 0) return schemas.ref(route.method.input, true);
  // The path's fields are not in the body: the message without them.
  return schemas.messageSchema(route.method.input, inPath, true);
}

function fieldDoc(field: DescField): Json {
  const description = commentOf(field);
  return description ? { description } : {};
}

/** The leading comment of an element, its lines without the one space protoc keeps. */
function commentOf(desc: Parameters<typeof getComments>[0]): string | undefined {
  const text = getComments(desc).leading;
  if (!text) return undefined;
  const lines = text.replace(/\n$/, "").split("\n").map((l) => (l.startsWith(" ") ? l.slice(1) : l));
  return lines.join("\n").trim() || undefined;
}

/** A summary from the comment's first sentence, the rest as the description. */
function summaryOf(comment: string | undefined): { summary?: string; description?: string } {
  if (!comment) return {};
  const flat = comment.replace(/\s*\n\s*/g, " ");
  const end = flat.search(/\.(\s|$)/);
  const summary = end < 0 ? flat : flat.slice(0, end + 1);
  return { summary, description: comment };
}

/**
 * The schemas of the messages and enums the routes use, by full name. A request
 * message and the messages inside it refuse unknown fields (as the server
 * does); answers do not, so that their messages may grow.
 */
class SchemaSet {
  readonly #schemas = new Map<string, Json>();
  readonly #strict = new Set<string>();

  sorted(): Record<string, Json> {
    return Object.fromEntries([...this.#schemas.entries()].sort(([a], [b]) => a.localeCompare(b)));
  }

  ref(message: DescMessage, strict: boolean): Json {
    const wkt = wellKnown(message);
    if (wkt) return wkt;
    if (!this.#schemas.has(message.typeName) || (strict && !this.#strict.has(message.typeName))) {
      if (strict) this.#strict.add(message.typeName);
      this.#schemas.set(message.typeName, {}); // a placeholder: messages may refer to themselves
      this.#schemas.set(message.typeName, this.messageSchema(message, new Set(), strict));
    }
    return { $ref: `#/components/schemas/${message.typeName}` };
  }

  enumRef(desc: DescEnum): Json {
    if (!this.#schemas.has(desc.typeName)) {
      const values = desc.values.map((v) => {
        const c = commentOf(v);
        return c ? `- \`${v.name}\`: ${c.replace(/\s*\n\s*/g, " ")}` : `- \`${v.name}\``;
      });
      const about = commentOf(desc);
      this.#schemas.set(desc.typeName, {
        type: "string",
        enum: desc.values.map((v) => v.name),
        description: [about, values.join("\n"), "Requests may also give the number of a value."].filter(Boolean).join("\n\n"),
      });
    }
    return { $ref: `#/components/schemas/${desc.typeName}` };
  }

  messageSchema(message: DescMessage, omit: ReadonlySet<DescField>, strict: boolean): Json {
    const properties: Record<string, Json> = {};
    const required: string[] = [];
    for (const field of message.fields) {
      if (omit.has(field)) continue;
      const schema = this.field(field, strict);
      const description = commentOf(field);
      properties[field.jsonName] = description ? { ...schema, description } : schema;
      if (isRequired(field)) required.push(field.jsonName);
    }
    const schema: Json = { type: "object", properties };
    if (strict) schema.additionalProperties = false;
    const about = commentOf(message);
    const rules = messageRuleText(message);
    const description = [about, rules ? `Rules: ${rules}.` : undefined].filter(Boolean).join("\n\n");
    if (description) schema.description = description;
    if (required.length) schema.required = required;
    // Under allOf (not beside the properties): generators such as openapi-typescript
    // then keep the properties' types and add nothing, and validators still check them.
    const combined = messageRuleSchemas(message).filter((s) => s !== undefined);
    if (combined.length) schema.allOf = combined;
    return schema;
  }

  /** The schema of a field's JSON value, with its protovalidate rules. */
  field(field: DescField, strict: boolean): Json {
    const rules = rulesOf(field);
    switch (field.fieldKind) {
      case "scalar":
        return withRules(scalarSchema(field.scalar), rules, field);
      case "enum":
        return withEnumRules(this.enumRef(field.enum), field.enum, rules);
      case "message":
        return withRules(this.ref(field.message, strict), rules, field);
      case "list": {
        const itemRules = rules?.type.case === "repeated" ? rules.type.value.items : undefined;
        const items =
          field.listKind === "scalar"
            ? withRules(scalarSchema(field.scalar), itemRules, field)
            : field.listKind === "enum"
              ? withEnumRules(this.enumRef(field.enum), field.enum, itemRules)
              : withRules(this.ref(field.message, strict), itemRules, field);
        const schema: Json = { type: "array", items };
        if (rules?.type.case === "repeated") {
          const r = rules.type.value;
          if (isFieldSet(r, RepeatedRulesSchema.field.minItems)) schema.minItems = Number(r.minItems);
          if (isFieldSet(r, RepeatedRulesSchema.field.maxItems)) schema.maxItems = Number(r.maxItems);
          if (r.unique) schema.uniqueItems = true;
        }
        return schema;
      }
      case "map": {
        const value =
          field.mapKind === "scalar"
            ? scalarSchema(field.scalar)
            : field.mapKind === "enum"
              ? this.enumRef(field.enum)
              : this.ref(field.message, strict);
        return { type: "object", additionalProperties: value };
      }
    }
  }
}

function rulesOf(field: DescField): FieldRules | undefined {
  return hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
}

function scalarSchema(scalar: ScalarType): Json {
  switch (scalar) {
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BYTES:
      return { type: "string", contentEncoding: "base64" };
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return { type: "integer", format: "int32" };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", minimum: 0, maximum: 4294967295 };
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return { type: "string", format: "int64", pattern: "^-?[0-9]+$" };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return { type: "string", format: "uint64", pattern: "^[0-9]+$" };
    case ScalarType.FLOAT:
      return { type: "number", format: "float" };
    case ScalarType.DOUBLE:
      return { type: "number", format: "double" };
  }
}

/** The JSON of the well-known types, as protobuf JSON writes them. */
function wellKnown(message: DescMessage): Json | undefined {
  switch (message.typeName) {
    case "google.protobuf.Timestamp":
      return { type: "string", format: "date-time" };
    case "google.protobuf.Duration":
      return { type: "string", pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$", description: "Seconds, with up to nine decimals, and an `s`: `600s`, `1.5s`" };
    case "google.protobuf.Empty":
      return { type: "object", additionalProperties: false };
    case "google.protobuf.FieldMask":
      return { type: "string" };
    case "google.protobuf.Struct":
      return { type: "object" };
    case "google.protobuf.Value":
      return {};
    case "google.protobuf.ListValue":
      return { type: "array" };
    case "google.protobuf.Any":
      return { type: "object", required: ["@type"], properties: { "@type": { type: "string" } } };
  }
  if (message.typeName.startsWith("google.protobuf.") && message.typeName.endsWith("Value")) {
    const value = message.fields.find((f) => f.name === "value");
    if (value?.fieldKind === "scalar") return scalarSchema(value.scalar);
  }
  return undefined;
}

/** Numeric rules (every numeric rule message has this shape; 64-bit ones hold bigints). */
interface NumericRules {
  const: number | bigint;
  lessThan: { case: "lt" | "lte"; value: number | bigint } | { case: undefined; value?: undefined };
  greaterThan: { case: "gt" | "gte"; value: number | bigint } | { case: undefined; value?: undefined };
  in: (number | bigint)[];
  notIn: (number | bigint)[];
}

const NUMERIC = new Set(["float", "double", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64"]);

/** A field's type rules onto its schema (a copy). */
function withRules(base: Json, rules: FieldRules | undefined, field: DescField): Json {
  if (!rules) return base;
  const schema: Json = { ...base };
  const notes: string[] = [];
  const type = rules.type;
  if (type.case === "string") {
    const r = type.value;
    if (isFieldSet(r, StringRulesSchema.field.const)) schema.const = r.const;
    if (isFieldSet(r, StringRulesSchema.field.len)) schema.minLength = schema.maxLength = Number(r.len);
    if (isFieldSet(r, StringRulesSchema.field.minLen)) schema.minLength = Number(r.minLen);
    if (isFieldSet(r, StringRulesSchema.field.maxLen)) schema.maxLength = Number(r.maxLen);
    if (isFieldSet(r, StringRulesSchema.field.pattern)) schema.pattern = r.pattern;
    if (r.in.length) schema.enum = [...r.in];
    if (r.notIn.length) schema.not = { enum: [...r.notIn] };
    if (r.prefix) notes.push(`starts with \`${r.prefix}\``);
    if (r.suffix) notes.push(`ends with \`${r.suffix}\``);
    if (r.contains) notes.push(`contains \`${r.contains}\``);
    if (r.notContains) notes.push(`does not contain \`${r.notContains}\``);
    if (isFieldSet(r, StringRulesSchema.field.maxBytes)) notes.push(`at most ${r.maxBytes} bytes of UTF-8`);
    if (r.wellKnown.case && r.wellKnown.value === true) {
      const formats: Record<string, string> = { email: "email", hostname: "hostname", ipv4: "ipv4", ipv6: "ipv6", uri: "uri", uriRef: "uri-reference", uuid: "uuid" };
      const format = formats[r.wellKnown.case];
      if (format) schema.format = format;
      else notes.push(`a valid ${r.wellKnown.case}`);
    }
  } else if (type.case !== undefined && NUMERIC.has(type.case)) {
    const r = type.value as unknown as NumericRules;
    const num = (v: number | bigint) => Number(v);
    if (r.greaterThan.case === "gt") schema.exclusiveMinimum = num(r.greaterThan.value);
    if (r.greaterThan.case === "gte") schema.minimum = num(r.greaterThan.value);
    if (r.lessThan.case === "lt") schema.exclusiveMaximum = num(r.lessThan.value);
    if (r.lessThan.case === "lte") schema.maximum = num(r.lessThan.value);
    if (r.in.length) schema.enum = r.in.map(num);
    if (r.notIn.length) schema.not = { enum: r.notIn.map(num) };
    if (schema.minimum !== undefined && schema.exclusiveMinimum !== undefined) delete schema.minimum;
  } else if (type.case === "duration") {
    const r = type.value;
    const d = (v: { seconds: bigint; nanos: number }) => `${Number(v.seconds) + v.nanos / 1e9}s`;
    if (r.greaterThan.case) notes.push(`${r.greaterThan.case === "gt" ? "more than" : "at least"} ${d(r.greaterThan.value)}`);
    if (r.lessThan.case) notes.push(`${r.lessThan.case === "lt" ? "less than" : "at most"} ${d(r.lessThan.value)}`);
    if (isFieldSet(r, DurationRulesSchema.field.const) && r.const) notes.push(`exactly ${d(r.const)}`);
  }
  for (const rule of rules.cel) notes.push(rule.message || rule.expression);
  if (rules.ignore === Ignore.IF_ZERO_VALUE && field.fieldKind === "scalar") notes.push("empty (or absent) is allowed and means not given");
  if (notes.length) schema["x-rules"] = notes;
  return schema;
}

function withEnumRules(ref: Json, desc: DescEnum, rules: FieldRules | undefined): Json {
  if (rules?.type.case !== "enum") return ref;
  const r = rules.type.value;
  let allowed = desc.values;
  if (isFieldSet(r, EnumRulesSchema.field.const)) allowed = allowed.filter((v) => v.number === r.const);
  if (r.in.length) allowed = allowed.filter((v) => r.in.includes(v.number));
  if (r.notIn.length) allowed = allowed.filter((v) => !r.notIn.includes(v.number));
  if (allowed.length === desc.values.length) return ref;
  return { ...ref, enum: allowed.map((v) => v.name) };
}

/**
 * Whether a request must give the field: its rules say `required`, or refuse
 * its zero value (an empty string, 0, the first enum value, no items), unless
 * they are ignored for the zero value.
 */
export function isRequired(field: DescField): boolean {
  const rules = rulesOf(field);
  if (!rules) return false;
  if (rules.required) return true;
  if (rules.ignore === Ignore.IF_ZERO_VALUE || rules.ignore === Ignore.ALWAYS) return false;
  const type = rules.type;
  if (type.case === "string") {
    const r = type.value;
    if (isFieldSet(r, StringRulesSchema.field.const) && r.const !== "") return true;
    if (r.len > 0n || r.minLen > 0n || r.minBytes > 0n || r.lenBytes > 0n || r.prefix || r.suffix || r.contains) return true;
    if (r.in.length && !r.in.includes("")) return true;
    if (r.notIn.includes("")) return true;
    if (r.pattern && !new RegExp(r.pattern, "u").test("")) return true;
    return r.wellKnown.case !== undefined && r.wellKnown.value !== false;
  }
  if (type.case === "enum") {
    const r = type.value;
    if (isFieldSet(r, EnumRulesSchema.field.const) && r.const !== 0) return true;
    return (r.in.length > 0 && !r.in.includes(0)) || r.notIn.includes(0);
  }
  if (type.case === "repeated") return type.value.minItems > 0n;
  if (type.case !== undefined && NUMERIC.has(type.case)) {
    const r = type.value as unknown as NumericRules;
    const v = (x: number | bigint) => Number(x);
    if (r.greaterThan.case === "gt" && v(r.greaterThan.value) >= 0) return true;
    if (r.greaterThan.case === "gte" && v(r.greaterThan.value) > 0) return true;
    if (r.lessThan.case === "lt" && v(r.lessThan.value) <= 0) return true;
    if (r.lessThan.case === "lte" && v(r.lessThan.value) < 0) return true;
    if (r.in.length && !r.in.some((x) => v(x) === 0)) return true;
    return r.notIn.some((x) => v(x) === 0);
  }
  return false;
}

/** The messages of a message's CEL rules, as a sentence. */
function messageRuleText(message: DescMessage): string | undefined {
  if (!hasOption(message, messageRulesExt)) return undefined;
  const texts = getOption(message, messageRulesExt).cel.map((r) => r.message || r.expression);
  return texts.length ? texts.join("; ") : undefined;
}

/** The message's CEL rules that say which fields must be given, as schemas (undefined: not expressible). */
function messageRuleSchemas(message: DescMessage): (Json | undefined)[] {
  if (!hasOption(message, messageRulesExt)) return [];
  return getOption(message, messageRulesExt).cel.map((r) => {
    try {
      return presenceSchema(r.expression, message);
    } catch {
      return undefined;
    }
  });
}

/**
 * A CEL expression made only of `this.<field> != ''`, `&&`, `||` and
 * parentheses, as a JSON Schema of which fields must be present. Throws on
 * anything else.
 */
export function presenceSchema(expression: string, message: DescMessage): Json {
  const tokens = expression.match(/\(|\)|&&|\|\||this\.[a-z_][a-z0-9_]*\s*!=\s*''|\S+/gi) ?? [];
  let i = 0;
  const fail = (): never => {
    throw new Error(`not a presence rule: ${expression}`);
  };
  const primary = (): Json => {
    const t = tokens[i++] ?? fail();
    if (t === "(") {
      const inner = or();
      if (tokens[i++] !== ")") fail();
      return inner;
    }
    const m = /^this\.([a-z_][a-z0-9_]*)\s*!=\s*''$/i.exec(t) ?? fail();
    const field = message.fields.find((f) => f.name === m[1]) ?? fail();
    return { required: [field.jsonName] };
  };
  const and = (): Json => {
    const parts = [primary()];
    while (tokens[i] === "&&") i++, parts.push(primary());
    return parts.length === 1 ? parts[0] : { allOf: parts };
  };
  const or = (): Json => {
    const parts = [and()];
    while (tokens[i] === "||") i++, parts.push(and());
    return parts.length === 1 ? parts[0] : { anyOf: parts };
  };
  const schema = or();
  if (i !== tokens.length) fail();
  return schema;
}
