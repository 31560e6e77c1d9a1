"""
Return data to returner-host, which runs Salt returners as sandboxed
WebAssembly components.

Every function of Salt's returner interface is forwarded to the host's ingest
API (``POST /v1/returners/<returner>/<function>`` with a JSON object of the
arguments under Salt's names); the host's returner (local-cache, etcd, mysql,
or a custom ``.wasm``) does the work. This file needs only Python's standard
library: the minion and the master need no MySQL or etcd library and no
database credentials, only the host's address (and a token over TCP).

Options (minion or master config, or a returner profile chosen with
``--return_config``; ``--return_kwargs`` overrides them per job):

.. code-block:: yaml

    wasm.url: /run/returner-host/sock        # unix socket path, or http://127.0.0.1:4510
    wasm.token_file: /etc/salt/returner-host.token   # bearer token; required over TCP
    wasm.returner: local_cache               # the host returner serving this Salt name
    wasm.timeout: 10                          # seconds per call
    wasm.retry_seconds: 10                    # seconds to keep trying while the host is unreachable

A call that cannot reach the host (its socket missing, the connection refused
or reset before an answer, as while the host restarts) is tried again, with a
short backoff, for ``retry_seconds``; a warning says it waits, another when it
got through. An answer of the host, an error included, is final.

Use it like any returner:

.. code-block:: bash

    salt '*' test.ping --return wasm
    salt '*' test.ping --return wasm --return_config alternative
    salt '*' test.ping --return wasm --return_kwargs '{"returner": "mysql"}'

and on the master ``master_job_cache: wasm`` and ``event_return: wasm``.

Another Salt name for another host returner (``--return wasm_mysql``) is this
file with its name and defaults changed:
``returner-host salt-returner wasm_mysql --returner mysql > _returners/wasm_mysql.py``.
Such a returner reads its options as ``wasm_mysql.url`` etc. and falls back
to ``wasm.url``, ``wasm.token_file``, ``wasm.timeout`` and
``wasm.retry_seconds``, so the host's address is configured once
(``wasm.returner`` stays the name ``wasm``'s).
"""

import http.client
import json
import logging
import os
import socket
import time
import urllib.parse

import salt.exceptions
import salt.returners

log = logging.getLogger(__name__)

# `returner-host salt-returner NAME` rewrites the next two statements.
__virtualname__ = "wasm"
DEFAULTS = {"retry_seconds": 10, "returner": "local_cache", "timeout": 10, "token_file": None, "url": "/run/returner-host/sock"}

OPTIONS = ("url", "token_file", "returner", "timeout", "retry_seconds")
# Where another Salt name finds the host's address, so it is set once. Not
# `returner`: `wasm.returner` picks the host returner of the name `wasm`.
SHARED_NAME = "wasm"
SHARED_OPTIONS = ("url", "token_file", "timeout", "retry_seconds")

# Failures before the host answered that a restarting host gives: its socket
# not there yet, nobody listening, or the connection dropped before an
# answer. They are tried again; an answer never is.
_UNREACHABLE = (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError)
# The first pause between tries; each next one doubles, up to the most.
_FIRST_PAUSE = 0.05
_MOST_PAUSE = 1.0

# prep_jid's passed_jid when the caller gave none at all.
_NOT_PASSED = object()


class ReturnerHostError(salt.exceptions.SaltMasterError):
    """
    returner-host could not be reached, or answered with an error.
    """


class ReturnerHostUnsupported(ReturnerHostError, KeyError):
    """
    The host returner does not implement the function. A KeyError, as when a
    Salt returner module lacks a function, so Salt's own handling applies.
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def __virtual__():
    return __virtualname__


def _options(ret=None):
    """
    This returner's options: ``NAME.*`` (with ``--return_config`` and
    ``--return_kwargs``), then ``wasm.url``, ``wasm.token_file``,
    ``wasm.timeout`` and ``wasm.retry_seconds``, then the defaults.
    """
    salt_funcs = globals().get("__salt__") or {}
    if "config.option" not in salt_funcs:
        # Without config.option, Salt's lookup falls back from `wasm.timeout`
        # to the top-level `timeout` of __opts__ (the CLI's 5 s); look up
        # only the returner's own keys instead.
        opts = globals().get("__opts__") or {}
        salt_funcs = {"config.option": lambda key, default=None, *a, **kw: opts.get(key, default)}
    lookups = [(__virtualname__, OPTIONS)]
    if __virtualname__ != SHARED_NAME:
        lookups.append((SHARED_NAME, SHARED_OPTIONS))
    found = {}
    for name, options in lookups:
        attrs = {option: option for option in options}
        for key, value in salt.returners.get_returner_options(name, ret, attrs, __salt__=salt_funcs).items():
            if value is not None and value != "":
                found.setdefault(key, value)
    options = dict(DEFAULTS)
    options.update(found)
    return options


class _UnixHTTPConnection(http.client.HTTPConnection):
    """
    HTTP/1.1 over a unix socket.
    """

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _connection(url, timeout):
    """
    A connection to ``url``: a unix socket path (or ``unix:PATH``), or
    ``http://HOST:PORT``.
    """
    if url.startswith("http://"):
        parsed = urllib.parse.urlsplit(url)
        return http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=timeout)
    if url.startswith("unix:"):
        url = url[len("unix:"):]
    return _UnixHTTPConnection(url, timeout)


def _token(options):
    path = options.get("token_file")
    if not path:
        if str(options["url"]).startswith("http://"):
            raise ReturnerHostError(
                "returner-host at {}: over TCP the host needs a bearer token; set {}.token_file".format(
                    options["url"], __virtualname__
                )
            )
        return None
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise ReturnerHostError(
            "returner-host at {}: cannot read the token file {}: {}".format(options["url"], path, exc)
        ) from exc


def _json_default(value):
    """
    What Salt's own JSON serialiser does with values JSON has no type for.
    """
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _call(function, args, ret=None):
    """
    Call ``function`` of the host returner with ``args``; its result, or
    ReturnerHostError with the host's address and message, also logged at
    error level (salt-call drops a returner's exception without a word).
    """
    try:
        return _request(function, args, _options(ret))
    except ReturnerHostError as exc:
        log.error("%s", exc)
        raise


def _seconds(options, option, where):
    """
    ``option`` as a number of seconds, or ReturnerHostError naming it.
    """
    try:
        seconds = float(options[option])
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0:
        raise ReturnerHostError(
            "{}: {}.{} must be a number of seconds, not {!r}".format(where, __virtualname__, option, options[option])
        )
    return seconds


def _request(function, args, options):
    url = str(options["url"])
    returner = options["returner"]
    where = "returner-host at {} ({}.{})".format(url, returner, function)
    timeout = _seconds(options, "timeout", where)
    retry_seconds = _seconds(options, "retry_seconds", where)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    token = _token(options)
    if token:
        headers["Authorization"] = "Bearer " + token
    body = json.dumps(args, default=_json_default).encode("utf-8")
    path = "/v1/returners/{}/{}".format(urllib.parse.quote(str(returner), safe=""), function)
    started = time.monotonic()
    pause = _FIRST_PAUSE
    waiting = False
    while True:
        conn = _connection(url, timeout)
        try:
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
            except _UNREACHABLE as exc:
                tried = time.monotonic() - started
                if tried >= retry_seconds:
                    raise ReturnerHostError(
                        "{}: the host is unreachable: {} (tried for {:.1f} s)".format(where, exc or type(exc).__name__, tried)
                    ) from exc
                if not waiting:
                    log.warning("%s: the host is unreachable (%s); trying again for up to %g s", where, exc, retry_seconds)
                    waiting = True
                time.sleep(min(pause, retry_seconds - tried))
                pause = min(pause * 2, _MOST_PAUSE)
                continue
            # The host answered: whatever happens now is final.
            status = response.status
            raw = response.read()
            break
        except socket.timeout as exc:
            raise ReturnerHostError("{}: no answer within {:g} s".format(where, timeout)) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ReturnerHostError("{}: the host is unreachable: {}".format(where, exc or type(exc).__name__)) from exc
        finally:
            conn.close()
    if waiting:
        log.warning("%s: reached the host after %.1f s", where, time.monotonic() - started)
    try:
        answer = json.loads(raw.decode("utf-8"))
    except ValueError:
        answer = None
    if status == 200 and isinstance(answer, dict) and "result" in answer:
        return answer["result"]
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        kind, detail = error.get("kind", "error"), error.get("message", "")
    else:
        kind, detail = "http {}".format(status), raw[:300].decode("utf-8", "replace")
    message = "{}: {}: {}".format(where, kind, detail)
    if kind == "unsupported":
        raise ReturnerHostUnsupported(message)
    raise ReturnerHostError(message)


def returner(ret):
    """
    Store a minion's job return.
    """
    # A minion returning a job it started itself asks for a jid, as Salt's
    # own returners do.
    if ret.get("jid") == "req":
        ret["jid"] = prep_jid(nocache=ret.get("nocache", False))
        save_load(ret["jid"], ret)
    _call("returner", {"ret": ret}, ret)


def save_load(jid, load, minions=None):
    """
    Save the load of a job.
    """
    _call("save_load", {"jid": jid, "load": load, "minions": minions})


def get_load(jid):
    """
    The load of a job, ``{}`` if unknown.
    """
    return _call("get_load", {"jid": jid})


def get_jid(jid):
    """
    The returns of a job, by minion id.
    """
    return _call("get_jid", {"jid": jid})


def get_fun(fun):
    """
    The function each minion ran last, by minion id.
    """
    return _call("get_fun", {"fun": fun})


def get_jids():
    """
    Every job, by jid.
    """
    return _call("get_jids", {})


def get_jids_filter(count, filter_find_job=True):
    """
    The newest ``count`` jobs, without saltutil.find_job when asked.
    """
    return _call("get_jids_filter", {"count": int(count), "filter_find_job": bool(filter_find_job)})


def get_minions():
    """
    Every minion id with a return.
    """
    return _call("get_minions", {})


def prep_jid(nocache=False, passed_jid=_NOT_PASSED):
    """
    The jid of a new job: ``passed_jid`` when given, else a new one.
    """
    jid = None if passed_jid is _NOT_PASSED else passed_jid
    try:
        return _call("prep_jid", {"nocache": bool(nocache), "passed_jid": jid})
    except ReturnerHostError as exc:
        # Only the master's publish passes passed_jid=None. It hands an
        # {"error": ...} answer to the user of `salt` (salt/master.py,
        # _prep_jid), where an exception would reach them as "Some exception
        # handling minion payload". Other callers use the jid as a string.
        if passed_jid is None:
            return {"error": str(exc)}
        raise


def save_minions(jid, minions, syndic_id=None):
    """
    Save the minions a job targets.
    """
    _call("save_minions", {"jid": jid, "minions": list(minions), "syndic_id": syndic_id})


def clean_old_jobs():
    """
    Remove jobs older than the host returner's keep_jobs setting.
    """
    _call("clean_old_jobs", {})


def event_return(events):
    """
    Store a batch of events from the event bus.
    """
    _call("event_return", {"events": [{"tag": e.get("tag", ""), "data": e.get("data")} for e in events]})


def update_endtime(jid, time):
    """
    Record when a job ended.
    """
    _call("update_endtime", {"jid": jid, "time": time})


def get_endtime(jid):
    """
    When a job ended, False if unknown.
    """
    return _call("get_endtime", {"jid": jid})
