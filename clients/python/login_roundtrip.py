#!/usr/bin/env python3
"""A Codegate client in Python over gRPC, from stubs generated out of proto/.

    generate.sh OUT && PYTHONPATH=OUT python3 login_roundtrip.py COMMAND ...

Commands:
    login  --org ORG --username NAME   SendLoginCode, then VerifyLoginCode with the
                                       code from $CODEGATE_CODE, else read from stdin
    send   --org ORG --username NAME   SendLoginCode only
    verify --org ORG --username NAME   VerifyLoginCode with --code or $CODEGATE_CODE
    admin create-organization --name NAME
    admin create-identity --org ORG --username NAME [--skip-registration-code]

The server is $CODEGATE_SERVER (host:port, default localhost:8080), --tls for
TLS. Admin commands take the bearer token from $CODEGATE_ADMIN_TOKEN, never from
the command line, where other users of the machine could read it. Answers are
printed as one JSON object per line; errors go to stderr with exit status 1.
"""

import argparse
import json
import os
import sys

import grpc
from google.protobuf import json_format

from codegate.v1 import admin_pb2, admin_pb2_grpc, login_pb2, login_pb2_grpc


def channel(args):
    if args.tls:
        return grpc.secure_channel(args.server, grpc.ssl_channel_credentials())
    return grpc.insecure_channel(args.server)


def emit(message):
    print(json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True)), flush=True)


def org_fields(args):
    # An organization id starts with "or-", a tenant id with "acct-".
    return {"tenant_id": args.org} if args.org.startswith("acct-") else {"org_id": args.org}


def code_from(args, prompt):
    code = getattr(args, "code", None) or os.environ.get("CODEGATE_CODE")
    if code:
        return code.strip()
    print(prompt, file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        raise SystemExit("error: no code given")
    return line.strip()


def login(args):
    with channel(args) as ch:
        stub = login_pb2_grpc.LoginServiceStub(ch)
        if args.command in ("login", "send"):
            emit(stub.SendLoginCode(login_pb2.SendLoginCodeRequest(username=args.username, **org_fields(args)), timeout=args.timeout))
        if args.command in ("login", "verify"):
            code = code_from(args, "code from the mail:")
            req = login_pb2.VerifyLoginCodeRequest(username=args.username, code=code, **org_fields(args))
            emit(stub.VerifyLoginCode(req, timeout=args.timeout))


def admin(args):
    token = os.environ.get("CODEGATE_ADMIN_TOKEN")
    if not token:
        raise SystemExit("error: set CODEGATE_ADMIN_TOKEN to an admin token")
    metadata = (("authorization", "Bearer " + token),)
    with channel(args) as ch:
        stub = admin_pb2_grpc.AdminServiceStub(ch)
        if args.admin_command == "create-organization":
            emit(stub.CreateOrganization(admin_pb2.CreateOrganizationRequest(name=args.name), metadata=metadata, timeout=args.timeout))
        elif args.admin_command == "create-identity":
            req = admin_pb2.CreateIdentityRequest(org_id=args.org, username=args.username, skip_registration_code=args.skip_registration_code)
            emit(stub.CreateIdentity(req, metadata=metadata, timeout=args.timeout))


def parser():
    p = argparse.ArgumentParser(description="Codegate over gRPC")
    p.add_argument("--server", default=os.environ.get("CODEGATE_SERVER", "localhost:8080"), help="host:port")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    # Below the server's RPC_TIMEOUT (10s by default): it refuses a longer deadline.
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    commands = p.add_subparsers(dest="command", required=True)
    for name in ("login", "send", "verify"):
        c = commands.add_parser(name)
        c.add_argument("--org", required=True, help="organization id (or-…) or tenant id (acct-…)")
        c.add_argument("--username", required=True)
        if name == "verify":
            c.add_argument("--code")
    a = commands.add_parser("admin").add_subparsers(dest="admin_command", required=True)
    a.add_parser("create-organization").add_argument("--name", required=True)
    ci = a.add_parser("create-identity")
    ci.add_argument("--org", required=True)
    ci.add_argument("--username", required=True)
    ci.add_argument("--skip-registration-code", action="store_true")
    return p


def main(argv):
    args = parser().parse_args(argv)
    try:
        (admin if args.command == "admin" else login)(args)
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
