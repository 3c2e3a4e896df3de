// gRPC server reflection (grpc.reflection.v1 and its v1alpha predecessor), so
// that grpcurl, Postman and other tools can list and call the services without
// the .proto files. No maintained package implements it for Connect-ES, so it is
// answered here from the descriptors the generated code embeds: every
// registered service's file and, transitively, every file it imports.
import { create, fromBinary, toBinary, type DescEnum, type DescExtension, type DescFile, type DescMessage, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import * as v1 from "../../../gen/grpc/reflection/v1/reflection_pb.ts";
import * as v1alpha from "../../../gen/grpc/reflection/v1alpha/reflection_pb.ts";

/** The files, symbols and extensions reflection can tell about. */
export class DescriptorIndex {
  readonly services: readonly string[];
  readonly #files = new Map<string, DescFile>();
  readonly #symbols = new Map<string, DescFile>();
  readonly #messages = new Set<string>();
  /** Extendee type name, then field number. */
  readonly #extensions = new Map<string, Map<number, DescFile>>();
  readonly #encoded = new Map<DescFile, Uint8Array>();

  constructor(services: readonly DescService[]) {
    this.services = [...new Set(services.map((s) => s.typeName))];
    for (const service of services) this.#addFile(service.file);
  }

  file(name: string): DescFile | undefined {
    return this.#files.get(name);
  }

  /** The file declaring a package-qualified symbol: a type, service, method, field, enum value or extension. */
  fileContaining(symbol: string): DescFile | undefined {
    return this.#symbols.get(symbol.startsWith(".") ? symbol.slice(1) : symbol);
  }

  fileOfExtension(extendee: string, number: number): DescFile | undefined {
    return this.#extensions.get(extendee)?.get(number);
  }

  /** The extension numbers of a known message type; undefined for an unknown type. */
  extensionNumbers(extendee: string): number[] | undefined {
    if (!this.#messages.has(extendee)) return undefined;
    return [...(this.#extensions.get(extendee)?.keys() ?? [])].sort((a, b) => a - b);
  }

  /** The serialized FileDescriptorProto of a file, as reflection sends it. */
  encoded(file: DescFile): Uint8Array {
    let bytes = this.#encoded.get(file);
    if (!bytes) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      this.#encoded.set(file, bytes);
    }
    return bytes;
  }

  #addFile(file: DescFile): void {
    if (this.#files.has(file.proto.name)) return;
    this.#files.set(file.proto.name, file);
    for (const dep of file.dependencies) this.#addFile(dep);
    for (const service of file.services) {
      this.#symbols.set(service.typeName, file);
      for (const method of service.methods) this.#symbols.set(`${service.typeName}.${method.name}`, file);
    }
    for (const message of file.messages) this.#addMessage(message);
    for (const e of file.enums) this.#addEnum(e);
    for (const ext of file.extensions) this.#addExtension(ext);
  }

  #addMessage(message: DescMessage): void {
    this.#symbols.set(message.typeName, message.file);
    this.#messages.add(message.typeName);
    for (const field of message.fields) this.#symbols.set(`${message.typeName}.${field.name}`, message.file);
    for (const oneof of message.oneofs) this.#symbols.set(`${message.typeName}.${oneof.name}`, message.file);
    for (const nested of message.nestedMessages) this.#addMessage(nested);
    for (const e of message.nestedEnums) this.#addEnum(e);
    for (const ext of message.nestedExtensions) this.#addExtension(ext);
  }

  #addEnum(e: DescEnum): void {
    this.#symbols.set(e.typeName, e.file);
    // Enum values are scoped beside their enum, not inside it.
    const scope = e.typeName.slice(0, e.typeName.length - e.name.length);
    for (const value of e.values) this.#symbols.set(scope + value.name, e.file);
  }

  #addExtension(ext: DescExtension): void {
    this.#symbols.set(ext.typeName, ext.file);
    let byNumber = this.#extensions.get(ext.extendee.typeName);
    if (!byNumber) this.#extensions.set(ext.extendee.typeName, (byNumber = new Map()));
    byNumber.set(ext.number, ext.file);
  }
}

type Request = v1.ServerReflectionRequest;
type Response = MessageInitShape<typeof v1.ServerReflectionResponseSchema>;

/**
 * One request of a stream. `sent` holds the files this stream has already
 * sent: like grpc-go, the asked-for file always comes first, then those of its
 * transitive imports the client does not have yet.
 */
export function answer(index: DescriptorIndex, req: Request, sent: Set<string>): Response {
  const reply = (messageResponse: Response["messageResponse"]): Response => ({ validHost: req.host, originalRequest: req, messageResponse });
  const error = (code: Code, message: string) => reply({ case: "errorResponse", value: { errorCode: code, errorMessage: message } });
  const files = (file: DescFile | undefined, what: string) => {
    if (!file) return error(Code.NotFound, `${what} not found`);
    const out: Uint8Array[] = [];
    const queue = [file];
    for (let f = queue.shift(); f; f = queue.shift()) {
      if (out.length === 0 || !sent.has(f.proto.name)) {
        sent.add(f.proto.name);
        out.push(index.encoded(f));
        queue.push(...f.dependencies);
      }
    }
    return reply({ case: "fileDescriptorResponse", value: { fileDescriptorProto: out } });
  };

  const r = req.messageRequest;
  switch (r.case) {
    case "listServices":
      return reply({ case: "listServicesResponse", value: { service: index.services.map((name) => ({ name })) } });
    case "fileByFilename":
      return files(index.file(r.value), `file ${JSON.stringify(r.value)}`);
    case "fileContainingSymbol":
      return files(index.fileContaining(r.value), `symbol ${JSON.stringify(r.value)}`);
    case "fileContainingExtension":
      return files(
        index.fileOfExtension(r.value.containingType, r.value.extensionNumber),
        `extension ${r.value.extensionNumber} of ${JSON.stringify(r.value.containingType)}`,
      );
    case "allExtensionNumbersOfType": {
      const numbers = index.extensionNumbers(r.value);
      if (!numbers) return error(Code.NotFound, `type ${JSON.stringify(r.value)} not found`);
      return reply({ case: "allExtensionNumbersResponse", value: { baseTypeName: r.value, extensionNumber: numbers } });
    }
    default:
      return error(Code.InvalidArgument, "the request names no known message_request");
  }
}

export function reflectionService(index: DescriptorIndex): ServiceImpl<typeof v1.ServerReflection> {
  return {
    async *serverReflectionInfo(requests) {
      const sent = new Set<string>();
      for await (const req of requests) yield answer(index, req, sent);
    },
  };
}

/** v1alpha is v1 under another package name, byte for byte; its messages are translated through the wire format. */
export function reflectionServiceV1alpha(index: DescriptorIndex): ServiceImpl<typeof v1alpha.ServerReflection> {
  return {
    async *serverReflectionInfo(requests) {
      const sent = new Set<string>();
      for await (const req of requests) {
        const asV1 = fromBinary(v1.ServerReflectionRequestSchema, toBinary(v1alpha.ServerReflectionRequestSchema, req));
        const res = toBinary(v1.ServerReflectionResponseSchema, create(v1.ServerReflectionResponseSchema, answer(index, asV1, sent)));
        yield fromBinary(v1alpha.ServerReflectionResponseSchema, res);
      }
    },
  };
}
