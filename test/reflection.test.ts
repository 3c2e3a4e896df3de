import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, createFileRegistry, fromBinary, getExtension, hasExtension, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { http } from "../gen/google/api/annotations_pb.ts";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.ts";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.ts";
import { startTestServer, type TestServer } from "./support/server.ts";
import { bidiStream } from "./support/grpc-streams.ts";
import { oneof } from "./support/results.ts";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ COURIER_ENABLED: "false" });
});
afterAll(async () => {
  await server?.close();
});

const SERVICES = [
  "codegate.v1.AdminService",
  "codegate.v1.CodeService",
  "codegate.v1.DeliveryService",
  "codegate.v1.LoginService",
  "codegate.v1.RecoveryService",
  "codegate.v1.RegistrationService",
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];

function reflect() {
  return bidiStream(server.url, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", v1.ServerReflectionRequestSchema, v1.ServerReflectionResponseSchema);
}

function filesOf(res: v1.ServerReflectionResponse): FileDescriptorProto[] {
  if (res.messageResponse.case !== "fileDescriptorResponse") throw new Error(`expected files, got ${res.messageResponse.case}`);
  return res.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
}

/** The files as one registry, each added after its imports; throws when one is missing. */
function registryOf(files: FileDescriptorProto[]) {
  const byName = new Map(files.map((f) => [f.name, f]));
  const ordered: FileDescriptorProto[] = [];
  const visit = (f: FileDescriptorProto) => {
    if (ordered.includes(f)) return;
    for (const name of f.dependency) {
      const dep = byName.get(name);
      if (!dep) throw new Error(`${f.name} imports ${name}, which was not sent`);
      visit(dep);
    }
    ordered.push(f);
  };
  files.forEach(visit);
  return createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
}

describe("grpc.reflection.v1 over grpc-js", () => {
  it("lists every service the server has", async () => {
    const s = reflect();
    const res = await s.ask({ host: "", messageRequest: { case: "listServices", value: "" } });
    expect(oneof(res.messageResponse, "listServicesResponse").service.map((x) => x.name).sort()).toEqual(SERVICES);
    expect(res.originalRequest?.messageRequest.case).toBe("listServices");
    s.end();
    expect((await s.responses.ended).code).toBe(0);
    s.close();
  });

  it("gives the file of a service with every file it imports, enough to rebuild the API with its annotations", async () => {
    const s = reflect();
    const files = filesOf(await s.ask({ messageRequest: { case: "fileContainingSymbol", value: "codegate.v1.LoginService" } }));
    expect(files[0].name).toBe("codegate/v1/login.proto");
    expect(files.map((f) => f.name)).toEqual(
      expect.arrayContaining([
        "codegate/v1/types.proto",
        "buf/validate/validate.proto",
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/duration.proto",
      ]),
    );
    expect(new Set(files.map((f) => f.name)).size).toBe(files.length);

    // What a client does with them: a registry that resolves every import.
    const registry = registryOf(files);
    const login = registry.getService("codegate.v1.LoginService")!;
    expect(login.methods.map((m) => m.name)).toEqual(["SendLoginCode", "VerifyLoginCode"]);
    const send = login.methods[0];
    expect(send.input.fields.map((f) => f.name)).toEqual(["username", "org_id", "tenant_id", "binding", "locale", "state"]);
    // The REST annotation travels with the descriptor.
    const options = send.proto.options!;
    expect(hasExtension(options, http)).toBe(true);
    expect(getExtension(options, http).pattern).toEqual({ case: "post", value: "/auth/login/code" });
    s.end();
    s.close();
  });

  it("does not send again on one stream the imports it already sent, but always the file asked for", async () => {
    const s = reflect();
    const login = filesOf(await s.ask({ messageRequest: { case: "fileByFilename", value: "codegate/v1/login.proto" } }));
    expect(login.map((f) => f.name)).toContain("codegate/v1/types.proto");
    const admin = filesOf(await s.ask({ messageRequest: { case: "fileByFilename", value: "codegate/v1/admin.proto" } }));
    expect(admin[0].name).toBe("codegate/v1/admin.proto");
    // admin.proto imports http.proto, which login.proto does not.
    expect(admin.map((f) => f.name)).toContain("codegate/v1/http.proto");
    expect(admin.map((f) => f.name)).not.toContain("codegate/v1/types.proto");
    expect(admin.map((f) => f.name)).not.toContain("buf/validate/validate.proto");
    const again = filesOf(await s.ask({ messageRequest: { case: "fileByFilename", value: "codegate/v1/login.proto" } }));
    expect(again.map((f) => f.name)).toEqual(["codegate/v1/login.proto"]);
    s.end();
    s.close();
  });

  it("finds the file of methods, messages, fields, enums and enum values", async () => {
    const s = reflect();
    const cases: [string, string][] = [
      ["codegate.v1.AdminService.GetOrganization", "codegate/v1/admin.proto"],
      [".codegate.v1.VerifyLoginCodeRequest", "codegate/v1/login.proto"],
      ["codegate.v1.Identity.username", "codegate/v1/types.proto"],
      ["codegate.v1.IdentityState", "codegate/v1/types.proto"],
      ["codegate.v1.IDENTITY_STATE_ACTIVE", "codegate/v1/types.proto"],
      ["grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"],
      ["google.api.http", "google/api/annotations.proto"],
    ];
    for (const [symbol, file] of cases) {
      const files = filesOf(await s.ask({ messageRequest: { case: "fileContainingSymbol", value: symbol } }));
      expect(files[0].name, symbol).toBe(file);
    }
    s.end();
    s.close();
  });

  it("answers extensions by containing type and number", async () => {
    const s = reflect();
    const ext = filesOf(
      await s.ask({
        messageRequest: { case: "fileContainingExtension", value: { containingType: "google.protobuf.MethodOptions", extensionNumber: 72295728 } },
      }),
    );
    expect(ext[0].name).toBe("google/api/annotations.proto");
    const numbers = await s.ask({ messageRequest: { case: "allExtensionNumbersOfType", value: "google.protobuf.MethodOptions" } });
    const extensionNumbers = oneof(numbers.messageResponse, "allExtensionNumbersResponse");
    expect(extensionNumbers.baseTypeName).toBe("google.protobuf.MethodOptions");
    expect(extensionNumbers.extensionNumber).toEqual(expect.arrayContaining([51200, 72295728]));
    s.end();
    s.close();
  });

  it("answers NOT_FOUND for what it does not know, and keeps the stream open", async () => {
    const s = reflect();
    const asks: NonNullable<MessageInitShape<typeof v1.ServerReflectionRequestSchema>["messageRequest"]>[] = [
      { case: "fileContainingSymbol", value: "codegate.v1.Nothing" },
      { case: "fileByFilename", value: "nope.proto" },
      { case: "fileContainingExtension", value: { containingType: "google.protobuf.MethodOptions", extensionNumber: 1 } },
      { case: "allExtensionNumbersOfType", value: "codegate.v1.Nothing" },
    ];
    for (const messageRequest of asks) {
      const res = await s.ask({ messageRequest });
      expect(res.messageResponse.case, String(messageRequest.case)).toBe("errorResponse");
      expect(oneof(res.messageResponse, "errorResponse").errorCode, String(messageRequest.case)).toBe(5);
    }
    const ok = await s.ask({ messageRequest: { case: "listServices", value: "*" } });
    expect(ok.messageResponse.case).toBe("listServicesResponse");
    s.end();
    expect((await s.responses.ended).code).toBe(0);
    s.close();
  });
});

describe("grpc.reflection.v1alpha", () => {
  it("answers like v1, in its own package", async () => {
    const s = bidiStream(
      server.url,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      v1alpha.ServerReflectionRequestSchema,
      v1alpha.ServerReflectionResponseSchema,
    );
    const list = await s.ask({ messageRequest: { case: "listServices", value: "" } });
    expect(list.$typeName).toBe("grpc.reflection.v1alpha.ServerReflectionResponse");
    expect(oneof(list.messageResponse, "listServicesResponse").service.map((x) => x.name).sort()).toEqual(SERVICES);
    const file = await s.ask({ messageRequest: { case: "fileContainingSymbol", value: "codegate.v1.RecoveryService" } });
    expect(fromBinary(FileDescriptorProtoSchema, oneof(file.messageResponse, "fileDescriptorResponse").fileDescriptorProto[0]).name).toBe("codegate/v1/recovery.proto");
    expect(file.originalRequest?.messageRequest).toEqual({ case: "fileContainingSymbol", value: "codegate.v1.RecoveryService" });
    s.end();
    s.close();
  });
});
