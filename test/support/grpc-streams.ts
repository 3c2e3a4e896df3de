// grpc-js streaming calls (server-streaming and bidi), serialized with the
// generated protobuf-es code, as a grpc-js caller of another team would make them.
import { fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape, create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";

function codec<D extends DescMessage>(desc: D) {
  return {
    serialize: (msg: MessageShape<D>) => Buffer.from(toBinary(desc, msg)),
    deserialize: (buf: Buffer) => fromBinary(desc, buf),
  };
}

function genericClient(address: string, path: string, input: DescMessage, output: DescMessage, requestStream: boolean) {
  const i = codec(input);
  const o = codec(output);
  const Ctor = grpc.makeGenericClientConstructor(
    {
      call: {
        path,
        requestStream,
        responseStream: true,
        requestSerialize: i.serialize,
        requestDeserialize: i.deserialize,
        responseSerialize: o.serialize,
        responseDeserialize: o.deserialize,
      },
    },
    "Generic",
  );
  return new Ctor(address.replace(/^https?:\/\//, ""), grpc.credentials.createInsecure());
}

/** Collects the messages of a response stream and tells how it ended. */
export class ResponseStream<T> {
  readonly messages: T[] = [];
  readonly ended: Promise<grpc.StatusObject>;
  #waiters: (() => void)[] = [];

  constructor(stream: grpc.ClientReadableStream<T> | grpc.ClientDuplexStream<unknown, T>) {
    stream.on("data", (m: T) => {
      this.messages.push(m);
      for (const w of this.#waiters.splice(0)) w();
    });
    this.ended = new Promise((resolve) => {
      stream.on("status", (s: grpc.StatusObject) => {
        resolve(s);
        for (const w of this.#waiters.splice(0)) w();
      });
      stream.on("error", () => {});
    });
  }

  /** Resolves with the n-th message (1-based) once it has arrived; rejects after timeoutMs. */
  async nth(n: number, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`message ${n} did not arrive within ${timeoutMs} ms (got ${this.messages.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.messages[n - 1];
  }
}

export function serverStream<I extends DescMessage, O extends DescMessage>(
  address: string,
  path: string,
  input: I,
  output: O,
  req: MessageInitShape<I>,
) {
  const client = genericClient(address, path, input, output, false);
  const call = (client as any).call(create(input, req)) as grpc.ClientReadableStream<MessageShape<O>>;
  return {
    responses: new ResponseStream<MessageShape<O>>(call),
    cancel: () => call.cancel(),
    close: () => client.close(),
  };
}

export function bidiStream<I extends DescMessage, O extends DescMessage>(address: string, path: string, input: I, output: O) {
  const client = genericClient(address, path, input, output, true);
  const call = (client as any).call() as grpc.ClientDuplexStream<MessageShape<I>, MessageShape<O>>;
  const responses = new ResponseStream<MessageShape<O>>(call);
  return {
    responses,
    /** Sends one request and waits for its answer (the server answers each request in order). */
    async ask(req: MessageInitShape<I>): Promise<MessageShape<O>> {
      const n = responses.messages.length + 1;
      call.write(create(input, req));
      return responses.nth(n);
    },
    end: () => call.end(),
    close: () => client.close(),
  };
}
