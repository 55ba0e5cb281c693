"""pyhello: a wasi:http handler in Python, built by componentize-py.

Answers every request with a greeting, the method, the path (after
/<function>) and how many body bytes it read.
"""

from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Other,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)
from componentize_py_types import Err, Ok


def read_body(request: IncomingRequest) -> bytes:
    body = request.consume()
    data = b""
    with body.stream() as stream:
        while True:
            try:
                data += stream.blocking_read(65536)
            except Err:
                break
    return data


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = request.method()
        name = method.value if isinstance(method, Method_Other) else type(method).__name__[7:].upper()
        path = request.path_with_query() or "/"
        body = read_body(request)
        text = f"Hello from Python!\nmethod: {name}\npath: {path}\nbody: {len(body)} bytes\n"
        response = OutgoingResponse(
            Fields.from_list([("content-type", b"text/plain; charset=utf-8")])
        )
        outgoing = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with outgoing.write() as stream:
            stream.blocking_write_and_flush(text.encode())
        OutgoingBody.finish(outgoing, None)
