// protoc-gen-openapi: the OpenAPI 3.1 document of the REST routes (openapi.ts),
// as a protoc plugin that buf runs (buf.gen.yaml, strategy: all, through the
// protoc-gen-openapi wrapper beside this file). Options:
//   bearer=<service>   a service whose calls need the admin bearer token (repeatable)
//   out=<file>         the document's name (codegate.openapi.json)
import { readFileSync } from "node:fs";
import { create, createFileRegistry } from "@bufbuild/protobuf";
import {
  CodeGeneratorResponse_Feature,
  CodeGeneratorResponseSchema,
  FileDescriptorSetSchema,
  type CodeGeneratorRequest,
} from "@bufbuild/protobuf/wkt";
import { runNodeJs, type Plugin } from "@bufbuild/protoplugin";
import { openApiDocument } from "./openapi.ts";

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };

export const openApiPlugin: Plugin = {
  name: "protoc-gen-openapi",
  version: `v${pkg.version}`,
  run(request: CodeGeneratorRequest) {
    const bearer = new Set<string>();
    let out = "codegate.openapi.json";
    for (const option of request.parameter.split(",").filter(Boolean)) {
      const [key, value = ""] = option.split("=", 2).map((s) => s.trim());
      if (key === "bearer" && value) bearer.add(value);
      else if (key === "out" && /^[\w.-]+\.json$/.test(value)) out = value;
      else throw new Error(`protoc-gen-openapi: unknown option "${option}" (bearer=<service>, out=<file>.json)`);
    }
    const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: request.protoFile }));
    const files = request.fileToGenerate.map((name) => registry.getFile(name) ?? fail(`file ${name} is not in the request`));
    for (const name of bearer) if (!registry.getService(name)) fail(`bearer=${name}: no such service`);
    const doc = openApiDocument(files, { title: "Codegate", version: pkg.version, bearerServices: bearer });
    return create(CodeGeneratorResponseSchema, {
      supportedFeatures: BigInt(CodeGeneratorResponse_Feature.PROTO3_OPTIONAL),
      file: [{ name: out, content: JSON.stringify(doc, null, 2) + "\n" }],
    });
  },
};

function fail(message: string): never {
  throw new Error(`protoc-gen-openapi: ${message}`);
}

if (import.meta.main) runNodeJs(openApiPlugin);
