// jshello: a wasi:http handler in JavaScript, built by componentize-js.
// Answers every request with a greeting, the method, the path (after
// /<function>) and how many body bytes it read.
import {
  Fields,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.12";

function readBody(request) {
  const body = request.consume();
  const stream = body.stream();
  let length = 0;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (e) {
      break;
    }
    length += chunk.length;
  }
  stream[Symbol.dispose]?.();
  return length;
}

export const incomingHandler = {
  handle(request, responseOut) {
    const method = request.method();
    const name = method.tag === "other" ? method.val : method.tag.toUpperCase();
    const path = request.pathWithQuery() ?? "/";
    const length = readBody(request);
    const text = `Hello from JavaScript!\nmethod: ${name}\npath: ${path}\nbody: ${length} bytes\n`;
    const response = new OutgoingResponse(
      Fields.fromList([["content-type", new TextEncoder().encode("text/plain; charset=utf-8")]]),
    );
    const outgoing = response.body();
    ResponseOutparam.set(responseOut, { tag: "ok", val: response });
    const out = outgoing.write();
    out.blockingWriteAndFlush(new TextEncoder().encode(text));
    out[Symbol.dispose]?.();
    OutgoingBody.finish(outgoing, undefined);
  },
};
