// The REST routes of the RPCs, read from their google.api.http annotations (and
// codegate.v1.http_success_status): annotating an RPC is all it takes to give it
// a route. Supported, from gRPC transcoding: the get/put/post/delete/patch and
// custom verbs, additional_bindings, literal path segments, `{field}` segments
// bound to a top-level scalar or enum field, and body "*" (the JSON body is the
// request message) or no body (fields from the path and the query string). A rule
// using anything else fails the server's start instead of serving something else.
import { getOption, hasOption, ScalarType, type DescField, type DescMethod, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { http_success_status } from "../../../gen/codegate/v1/http_pb.ts";
import { http } from "../../../gen/google/api/annotations_pb.ts";
import type { HttpRule } from "../../../gen/google/api/http_pb.ts";
import { invalidArgument } from "../../services/errors.ts";

type Segment = { literal: string } | { field: DescField };

export interface RestRoute {
  /** The HTTP method, upper case. */
  verb: string;
  /** The path template as the proto writes it. */
  template: string;
  segments: Segment[];
  /** "*": the body is the request message; "": there is no body. */
  body: "*" | "";
  method: DescMethod;
  successStatus: number;
}

export type RouteMatch = { route: RestRoute; params: Map<DescField, string> } | { allow: string[] };

/** The routes of every annotated method, literal segments preferred over variables. */
export function restRoutes(methods: Iterable<DescMethod>): RestRoute[] {
  const routes: RestRoute[] = [];
  for (const method of methods) {
    if (!hasOption(method, http)) continue;
    const rule = getOption(method, http);
    const successStatus = hasOption(method, http_success_status) ? getOption(method, http_success_status) : 200;
    routes.push(compileRule(method, rule, successStatus));
    for (const binding of rule.additionalBindings) {
      if (binding.additionalBindings.length) throw ruleError(method, "additional_bindings must not nest");
      routes.push(compileRule(method, binding, successStatus));
    }
  }
  const seen = new Map<string, RestRoute>();
  for (const route of routes) {
    const key = `${route.verb} /${route.segments.map((s) => ("literal" in s ? s.literal : "{}")).join("/")}`;
    const other = seen.get(key);
    if (other) throw ruleError(route.method, `${route.verb} ${route.template} is also the route of ${other.method.parent.name}.${other.method.name}`);
    seen.set(key, route);
  }
  const variables = (r: RestRoute) => r.segments.filter((s) => "field" in s).length;
  return routes.sort((a, b) => variables(a) - variables(b));
}

export function compileRule(method: DescMethod, rule: HttpRule, successStatus: number): RestRoute {
  if (method.methodKind !== "unary") throw ruleError(method, "only unary methods can have a REST route");
  const { case: kind, value } = rule.pattern;
  if (kind === undefined) throw ruleError(method, "no HTTP method and path");
  const [verb, template] = kind === "custom" ? [value.kind.toUpperCase(), value.path] : [kind.toUpperCase(), value];
  if (rule.body !== "*" && rule.body !== "") throw ruleError(method, `body "${rule.body}" is not supported, only "*" or none`);
  if (rule.body === "*" && (verb === "GET" || verb === "DELETE")) throw ruleError(method, `${verb} cannot have a body`);
  if (rule.responseBody !== "") throw ruleError(method, "response_body is not supported");
  if (successStatus < 200 || successStatus > 299) throw ruleError(method, `http_success_status ${successStatus} is not a 2xx status`);
  if (!template.startsWith("/")) throw ruleError(method, `path ${template} does not start with /`);

  const segments = template.slice(1).split("/").map((part): Segment => {
    const variable = /^\{([a-z_][a-z0-9_]*)\}$/i.exec(part);
    if (variable) {
      const field = method.input.fields.find((f) => f.name === variable[1]);
      if (!field || (field.fieldKind !== "scalar" && field.fieldKind !== "enum")) {
        throw ruleError(method, `path variable ${part} is not a singular scalar or enum field of ${method.input.typeName}`);
      }
      return { field };
    }
    if (!/^[A-Za-z0-9._~-]+$/.test(part)) throw ruleError(method, `path segment "${part}" of ${template} is not supported`);
    return { literal: part };
  });
  return { verb, template, segments, body: rule.body, method, successStatus };
}

function ruleError(method: DescMethod, problem: string): Error {
  return new Error(`google.api.http rule of ${method.parent.typeName}.${method.name}: ${problem}`);
}

/**
 * The route for a request, or the methods allowed on its path (none: not a
 * REST path). `path` is the raw path, without the query.
 */
export function matchRoute(routes: readonly RestRoute[], verb: string, path: string): RouteMatch | undefined {
  if (!path.startsWith("/")) return undefined;
  const parts = path.slice(1).split("/");
  const allow = new Set<string>();
  for (const route of routes) {
    const params = matchSegments(route.segments, parts);
    if (!params) continue;
    if (route.verb === verb) return { route, params };
    allow.add(route.verb);
  }
  return allow.size ? { allow: [...allow] } : undefined;
}

function matchSegments(segments: readonly Segment[], parts: readonly string[]): Map<DescField, string> | undefined {
  if (segments.length !== parts.length) return undefined;
  const params = new Map<DescField, string>();
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i];
    if ("literal" in segment) {
      if (segment.literal !== parts[i]) return undefined;
      continue;
    }
    let value: string;
    try {
      value = decodeURIComponent(parts[i]);
    } catch {
      return undefined;
    }
    if (value === "") return undefined;
    params.set(segment.field, value);
  }
  return params;
}

/**
 * The request message as protobuf JSON: the body (for body "*"), or the query
 * parameters, with the path variables. Throws invalid_argument naming what is
 * wrong; the RPC's own JSON decoding then rejects unknown body fields.
 */
export function bindRequest(match: { route: RestRoute; params: Map<DescField, string> }, query: URLSearchParams, body: JsonValue | undefined): JsonObject {
  const { route, params } = match;
  let json: JsonObject = {};
  if (route.body === "*") {
    if (typeof body !== "object" || body === null || Array.isArray(body)) throw invalidArgument("body", "a JSON object");
    json = { ...body };
    const [extra] = query.keys();
    if (extra !== undefined) throw invalidArgument(extra, `unknown query parameter; ${route.verb} ${route.template} takes a JSON body`);
  } else {
    for (const key of new Set(query.keys())) {
      const field = route.method.input.fields.find((f) => f.jsonName === key || f.name === key);
      const values = query.getAll(key);
      if (!field || !isQueryable(field)) throw invalidArgument(key, `unknown query parameter of ${route.verb} ${route.template}`);
      // Both names (org_id and orgId) would leave which one wins to the order of the query.
      if (field.jsonName in json) throw invalidArgument(field.name, "one name: the proto name or the JSON name, not both");
      if (field.fieldKind !== "list" && values.length > 1) throw invalidArgument(field.name, "a single value");
      json[field.jsonName] = field.fieldKind === "list" ? values.map((v) => queryValue(field, v)) : queryValue(field, values[0]);
    }
  }
  for (const [field, value] of params) {
    if (field.jsonName in json || field.name in json) throw invalidArgument(field.name, `set by the path of ${route.template}, not again in the request`);
    json[field.jsonName] = queryValue(field, value);
  }
  return json;
}

function isQueryable(field: DescField): boolean {
  if (field.fieldKind === "scalar" || field.fieldKind === "enum") return true;
  return field.fieldKind === "list" && field.listKind !== "message";
}

/**
 * Protobuf JSON takes numbers and bytes as strings too, and enums by name; bools
 * and enums by number (`purpose=1`, as gRPC transcoding allows) need converting.
 */
function queryValue(field: DescField, value: string): JsonValue {
  const isBool = (field.fieldKind === "scalar" || (field.fieldKind === "list" && field.listKind === "scalar")) && field.scalar === ScalarType.BOOL;
  if (isBool && (value === "true" || value === "false")) return value === "true";
  const isEnum = field.fieldKind === "enum" || (field.fieldKind === "list" && field.listKind === "enum");
  if (isEnum && /^-?[0-9]{1,10}$/.test(value)) return Number(value);
  return value;
}
