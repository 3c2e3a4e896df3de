// CodeService: GetCodeFormat answers how the codes of an organization look
// (length, alphabet, lifespan), for the applications that show a code field.
import type { ServiceImpl } from "@connectrpc/connect";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { CodeService } from "../../gen/codegate/v1/code_pb.ts";
import { codeFormat } from "../rules/code-format.ts";
import type { ServiceDeps } from "./deps.ts";
import { answeringDomainErrors } from "./errors.ts";
import { purposeOf } from "./mapping.ts";

export function codeService(deps: ServiceDeps): ServiceImpl<typeof CodeService> {
  return answeringDomainErrors<ServiceImpl<typeof CodeService>>({
    async getCodeFormat(req) {
      // The proto's rules refuse an unspecified purpose before this runs.
      const purpose = purposeOf[req.purpose]!;
      const format = await codeFormat(deps, req, purpose);
      return { purpose: req.purpose, length: format.length, alphabet: format.alphabet, lifespan: durationFromMs(format.lifespanMs) };
    },
  });
}
