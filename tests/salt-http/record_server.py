#!/usr/bin/env python3
"""A loopback HTTP(S) server that records every request and answers like a
minimal Splunk HEC or Elasticsearch, for run_returner.py (see FORMATS.md).

    python3 record_server.py --mode {splunk|elasticsearch} --log REQUESTS.jsonl
        [--tls-cert PEM --tls-key PEM] [--port N] [--port-file FILE]
        [--es-index-exists] [--no-product-header] [--status CODE]

Listens on 127.0.0.1 on a free port (or --port), prints that port (one line) on stdout
and into --port-file, then serves until killed. Each request becomes one JSON
line in --log: {"method", "path", "headers": [[name, value], ...], "body"}
with headers in the order received and the body decoded as UTF-8.

Elasticsearch mode keeps the indices and aliases created through it, so a
second run of the returner against the same server finds them (HEAD 200).
"""

import argparse
import json
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

ES_INFO = {
    "name": "record-server",
    "cluster_name": "record-server",
    "cluster_uuid": "AAAAAAAAAAAAAAAAAAAAAA",
    "version": {
        "number": "9.0.0",
        "build_flavor": "default",
        "build_type": "tar",
        "build_hash": "0000000000000000000000000000000000000000",
        "build_date": "2025-04-01T00:00:00.000000000Z",
        "build_snapshot": False,
        "lucene_version": "10.1.0",
        "minimum_wire_compatibility_version": "8.18.0",
        "minimum_index_compatibility_version": "8.0.0",
    },
    "tagline": "You Know, for Search",
}


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.indices = set()
        self.docs = {}
        self.next_id = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "record-server"

    def log_message(self, *args):  # quiet: the JSON log is the record
        pass

    def _handle(self):
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("utf-8", "surrogateescape"),
        }
        with state.lock:
            with open(state.args.log, "a", encoding="utf-8", errors="surrogateescape") as log:
                log.write(json.dumps(entry, ensure_ascii=False) + "\n")
        if state.args.mode == "splunk":
            status, reply = state.args.status or 200, {"text": "Success", "code": 0}
        else:
            status, reply = self._elasticsearch(body)
            if state.args.status:
                status = state.args.status
        payload = b"" if reply is None else json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if state.args.mode == "elasticsearch" and not state.args.no_product_header:
            self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _elasticsearch(self, body):
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        with state.lock:
            if self.command == "GET" and not parts:
                return 200, ES_INFO
            if self.command == "HEAD" and len(parts) == 1:
                exists = state.args.es_index_exists or parts[0] in state.indices
                return (200 if exists else 404), None
            if self.command == "PUT" and len(parts) == 1:
                if parts[0] in state.indices:
                    return 400, {
                        "error": {"type": "resource_already_exists_exception", "index": parts[0]},
                        "status": 400,
                    }
                state.indices.add(parts[0])
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": parts[0]}
            if self.command in ("PUT", "POST") and len(parts) == 3 and parts[1] in ("_alias", "_aliases"):
                state.indices.add(parts[2])
                return 200, {"acknowledged": True}
            if self.command in ("PUT", "POST") and len(parts) in (2, 3) and parts[1] in ("_doc", "_create"):
                if len(parts) == 3:
                    doc_id = parts[2]
                else:
                    state.next_id += 1
                    doc_id = f"doc-{state.next_id}"
                created = (parts[0], doc_id) not in state.docs
                state.docs[(parts[0], doc_id)] = json.loads(body or b"null")
                return (201 if created else 200), {
                    "_index": parts[0],
                    "_id": doc_id,
                    "_version": 1,
                    "result": "created" if created else "updated",
                    "_shards": {"total": 1, "successful": 1, "failed": 0},
                    "_seq_no": 0,
                    "_primary_term": 1,
                }
            if self.command == "GET" and len(parts) == 3 and parts[1] == "_doc":
                doc = state.docs.get((parts[0], parts[2]))
                if doc is None:
                    return 404, {"_index": parts[0], "_id": parts[2], "found": False}
                return 200, {
                    "_index": parts[0],
                    "_id": parts[2],
                    "_version": 1,
                    "_seq_no": 0,
                    "_primary_term": 1,
                    "found": True,
                    "_source": doc,
                }
        return 400, {"error": {"type": "record_server_unhandled", "reason": f"{self.command} {self.path}"}, "status": 400}

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("splunk", "elasticsearch"), required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--port-file")
    parser.add_argument("--es-index-exists", action="store_true", help="answer HEAD /<index> with 200 always")
    parser.add_argument("--no-product-header", action="store_true", help="omit X-Elastic-Product")
    parser.add_argument("--status", type=int, help="answer every request with this status")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.state = State(args)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file, "w", encoding="utf-8") as f:
            f.write(f"{port}\n")
    print(port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
