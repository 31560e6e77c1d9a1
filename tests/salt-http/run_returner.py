#!/usr/bin/env python3
"""Run a real Salt extension returner (saltext-splunk or saltext-elasticsearch)
on job returns read from stdin, sending its requests to BASE_URL.

    PYTHON run_returner.py {splunk|elasticsearch} --url BASE_URL
        [--ca-file PEM] [--option KEY=JSON ...] [--es-host-key {hosts|host}]
        [--pin-time EPOCH] [--pin-host NAME] [--pin-uuid] [--log-level LEVEL]

PYTHON is a venv with Salt 3008.4 and the pinned saltext packages (FORMATS.md).

Each stdin line is one JSON object, either
  * a Salt job return ({"jid", "id", "fun", "return", ...}): calls returner(ret);
  * or a call as in master-job-cache-calls.jsonl: {"call": "returner", "ret": ...},
    {"call": "event_return", "events": [...]}, {"call": "save_load", "jid", "load",
    "minions"}, {"call": "get_load", "jid"}, {"call": "prep_jid", ...}.
For each line one JSON line goes to stdout: {"line": N, "call": NAME, "result": ...}.

The module is loaded as a minion loads it: salt.config.minion_config, then
salt.loader.minion_mods (its __salt__, with the real config.get/config.option
and the saltext `elasticsearch` execution module) and salt.loader.returners,
which gives the module __opts__, __salt__, __grains__ (empty), __pillar__
(empty) and __context__.

Configuration put into __opts__:
  splunk:        splunk_http_forwarder: {token: $SPLUNK_TOKEN, indexer: <host of
                 BASE_URL>, sourcetype/index: unset, verify_ssl: PEM if --ca-file}
  elasticsearch: elasticsearch: {hosts: [BASE_URL], ca_certs: PEM if --ca-file}
                 (--es-host-key host: {host: BASE_URL, ...} instead; the two
                 differ in what the module then does, see FORMATS.md)
--option KEY=JSON sets (JSON null: removes) KEY in that dict: the splunk
forwarder options, or the elasticsearch connection profile *and* returner
options (they share the `elasticsearch` key, as in Salt's docs).
A KEY with a leading "opts:" sets a top-level __opts__ key instead.

splunk's module always builds https://<indexer>:8088/services/collector/event
(no port or scheme option exists). If BASE_URL is not https on port 8088 the
harness binds the module's http_event_collector class to BASE_URL's port and
scheme (functools.partial over its own constructor arguments), and says so on
stderr. BASE_URL must have no path for splunk.

--pin-time / --pin-host / --pin-uuid replace the clock, socket.gethostname and
uuid.uuid4 *as seen by the returner module only* (its module globals), so the
bodies become reproducible: splunk "time" and "host", elasticsearch
"@timestamp" and the index_date suffix, event_return's document ids.

Exit status 0 when every call returned; 1 (with the reason on stderr) as soon
as one raises, or on bad input or setup; 2 on bad arguments.
"""

import argparse
import datetime as _real_datetime
import functools
import json
import logging
import os
import sys
import types
import urllib.parse
import uuid as _real_uuid

RETURNERS = ("splunk", "elasticsearch")
CALLS = {
    "splunk": ("returner", "event_return"),
    "elasticsearch": ("returner", "event_return", "save_load", "get_load", "prep_jid"),
}


class HarnessError(Exception):
    """A failure of the harness or of the module call, reported on stderr."""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("returner", choices=RETURNERS)
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8088")
    parser.add_argument("--ca-file", help="PEM CA bundle to verify BASE_URL's certificate")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=JSON")
    parser.add_argument(
        "--es-host-key",
        choices=("hosts", "host"),
        default="hosts",
        help="elasticsearch profile key for BASE_URL: hosts: [URL] (default) or host: URL",
    )
    parser.add_argument("--pin-time", type=float, metavar="EPOCH", help="the module's clock reads this")
    parser.add_argument("--pin-host", metavar="NAME", help="socket.gethostname() for the module")
    parser.add_argument("--pin-uuid", action="store_true", help="uuid4() gives UUID(int=1), (int=2), ...")
    parser.add_argument("--log-level", default="WARNING", help="Python logging level on stderr")
    return parser.parse_args(argv)


def parse_options(pairs):
    options = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise HarnessError(f"--option {pair!r}: expected KEY=JSON")
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise HarnessError(f"--option {key}: value is not JSON ({exc}): {raw!r}") from exc
        options.append((key, value))
    return options


def apply_options(opts, section, options):
    for key, value in options:
        if key.startswith("opts:"):
            target, key = opts, key[len("opts:"):]
        else:
            target = section
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


def parse_url(url):
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise HarnessError(f"--url {url!r}: expected http(s)://HOST[:PORT]")
    try:
        port = parsed.port
    except ValueError as exc:
        raise HarnessError(f"--url {url!r}: bad port ({exc})") from exc
    return parsed, port or (443 if parsed.scheme == "https" else 80)


def splunk_config(args):
    token = os.environ.get("SPLUNK_TOKEN")
    if token is None:
        raise HarnessError("SPLUNK_TOKEN is not set: the HEC token comes from that variable")
    parsed, port = parse_url(args.url)
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise HarnessError(
            f"--url {args.url!r}: splunk's module always posts to /services/collector/event; give no path"
        )
    host = parsed.hostname
    indexer = f"[{host}]" if ":" in host else host
    section = {"token": token, "indexer": indexer}
    if args.ca_file:
        section["verify_ssl"] = args.ca_file
    return section, parsed.scheme, port


def elasticsearch_config(args):
    parsed, _ = parse_url(args.url)
    if args.es_host_key == "hosts":
        section = {"hosts": [args.url]}
    else:
        # The module splits a `host` string as SCHEME://HOST:PORT itself.
        if parsed.port is None or parsed.path or parsed.query:
            raise HarnessError(f"--url {args.url!r}: with --es-host-key host give SCHEME://HOST:PORT and no path")
        section = {"host": args.url}
    if args.ca_file:
        section["ca_certs"] = args.ca_file
    return section


def module_globals(loader, name):
    try:
        func = loader[name]
    except KeyError as exc:
        raise HarnessError(f"Salt's loader has no {name}") from exc
    return getattr(func, "func", func).__globals__


def pin(mod_globals, args):
    """Swap the clock, host name and uuid4 the returner module sees."""
    if args.pin_time is not None:
        epoch = args.pin_time
        real = _real_datetime

        class PinnedDateTime(real.datetime):
            @classmethod
            def now(cls, tz=None):
                return real.datetime.fromtimestamp(epoch, tz)

            @classmethod
            def utcnow(cls):
                return real.datetime.fromtimestamp(epoch, real.timezone.utc).replace(tzinfo=None)

        class PinnedDate(real.date):
            @classmethod
            def today(cls):
                return real.datetime.fromtimestamp(epoch).date()

        if "datetime" in mod_globals:
            shim = types.ModuleType("datetime")
            shim.__dict__.update(real.__dict__)
            shim.datetime, shim.date = PinnedDateTime, PinnedDate
            mod_globals["datetime"] = shim
        if "time" in mod_globals:
            shim = types.ModuleType("time")
            shim.__dict__.update(mod_globals["time"].__dict__)
            shim.time = lambda: epoch
            mod_globals["time"] = shim
    if args.pin_host is not None and "socket" in mod_globals:
        shim = types.ModuleType("socket")
        shim.__dict__.update(mod_globals["socket"].__dict__)
        shim.gethostname = lambda: args.pin_host
        mod_globals["socket"] = shim
    if args.pin_uuid and "uuid" in mod_globals:
        counter = iter(range(1, 1 << 62))
        shim = types.ModuleType("uuid")
        shim.__dict__.update(_real_uuid.__dict__)
        shim.uuid4 = lambda: _real_uuid.UUID(int=next(counter), version=4)
        mod_globals["uuid"] = shim


def load(args, options):
    try:
        import salt.config
        import salt.loader
    except ImportError as exc:
        raise HarnessError(f"cannot import Salt with {sys.executable}: {exc}") from exc

    opts = salt.config.minion_config(None)
    opts["file_client"] = "local"
    opts.setdefault("grains", {})
    opts.setdefault("pillar", {})
    scheme = port = None
    if args.returner == "splunk":
        section, scheme, port = splunk_config(args)
        opts["splunk_http_forwarder"] = section
    else:
        section = elasticsearch_config(args)
        opts["elasticsearch"] = section
    apply_options(opts, section, options)

    functions = salt.loader.minion_mods(opts)
    returners = salt.loader.returners(opts, functions)
    name = f"{args.returner}.returner"
    if name not in returners:
        raise HarnessError(
            f"Salt's loader found no {name} in {sys.executable}: is the saltext package "
            "(and for elasticsearch the elasticsearch client) installed? See FORMATS.md"
        )
    mod_globals = module_globals(returners, name)
    if args.returner == "splunk" and (scheme, port) != ("https", 8088):
        original = mod_globals["http_event_collector"]
        mod_globals["http_event_collector"] = functools.partial(
            original, http_event_port=str(port), http_event_server_ssl=(scheme == "https")
        )
        print(
            f"run_returner: splunk's module only posts to https://<indexer>:8088; "
            f"bound its http_event_collector to {scheme} port {port}",
            file=sys.stderr,
        )
    pin(mod_globals, args)
    return returners


def call_for(returner, line_no, obj):
    if not isinstance(obj, dict):
        raise HarnessError(f"line {line_no}: expected a JSON object, got {type(obj).__name__}")
    if "call" not in obj:
        return "returner", (obj,), {}
    call = obj["call"]
    if call not in CALLS[returner]:
        raise HarnessError(f"line {line_no}: {returner}'s module has no {call!r} (it has {', '.join(CALLS[returner])})")
    try:
        if call == "returner":
            return call, (obj["ret"],), {}
        if call == "event_return":
            return call, (obj["events"],), {}
        if call == "save_load":
            return call, (obj["jid"], obj["load"]), {"minions": obj.get("minions")}
        if call == "get_load":
            return call, (obj["jid"],), {}
        return call, (), {k: obj[k] for k in ("nocache", "passed_jid") if k in obj}
    except KeyError as exc:
        raise HarnessError(f"line {line_no}: {call} needs key {exc}") from exc


def run(args):
    options = parse_options(args.option)
    returners = load(args, options)
    for line_no, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise HarnessError(f"line {line_no}: not JSON ({exc})") from exc
        call, pos, kw = call_for(args.returner, line_no, obj)
        name = f"{args.returner}.{call}"
        try:
            result = returners[name](*pos, **kw)
        except Exception as exc:  # pylint: disable=broad-except
            raise HarnessError(f"line {line_no}: {name} raised {type(exc).__name__}: {exc}") from exc
        print(json.dumps({"line": line_no, "call": call, "result": result}, default=str), flush=True)


def main(argv=None):
    args = parse_args(argv)
    level = getattr(logging, args.log_level.upper(), None)
    if not isinstance(level, int):
        print(f"run_returner: unknown --log-level {args.log_level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # The client logs each retry with a full traceback; the failure itself is reported below.
    logging.getLogger("elastic_transport").setLevel(max(level, logging.ERROR) if level > logging.DEBUG else level)
    try:
        run(args)
    except HarnessError as exc:
        print(f"run_returner: {args.returner}: {exc}", file=sys.stderr)
        if level <= logging.DEBUG and exc.__cause__ is not None:
            import traceback  # pylint: disable=import-outside-toplevel

            traceback.print_exception(exc.__cause__, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
