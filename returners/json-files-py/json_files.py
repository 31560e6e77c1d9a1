"""A Salt returner in Python for returner-host, built with componentize-py.

It keeps jobs as JSON files in the directory the host grants it (``/data``
inside the sandbox), laid out like the Rust template's returner:

    /data/<jid>/load.json              the job's publish load (the first save_load wins)
    /data/<jid>/returns/<minion>.json  each minion's return, as Salt sent it

It implements what Salt's master job cache needs; every other function
answers ``unsupported``, which the host reports as Salt reports a missing
function. Expected failures are raised as ``Err(Error_...)``; any other
exception traps, which the host reports as a broken guest.
"""

import datetime
import json
import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log
from wit_world.imports.salt_returner_types import (
    Error_Backend,
    Error_Invalid,
    Error_Unsupported,
)

ROOT = "/data"
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _name(field, value):
    """A jid or minion id, refused when it could name another file."""
    if not value or value.startswith(".") or any(c in value for c in "/\\\0"):
        raise Err(Error_Invalid(f"{field}: {value!r} cannot be a file name"))
    return value


def _job_dir(jid):
    return os.path.join(ROOT, _name("jid", jid))


def _write_atomic(path, text):
    """Write aside and rename into place, so a reader never sees half a file."""
    temp = _temp_path(path)
    with open(temp, "w", encoding="utf-8") as f:
        f.write(text)
    os.rename(temp, path)


def _temp_path(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, f".tmp.{name}.{os.urandom(8).hex()}")


def _backend(what, e):
    return Err(Error_Backend(f"{what}: {e}"))


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _jids():
    return [
        entry.name
        for entry in os.scandir(ROOT)
        if entry.is_dir() and not entry.name.startswith(".")
    ]


def _load(jid):
    try:
        return _read_json(os.path.join(_job_dir(jid), "load.json"))
    except FileNotFoundError:
        return {}


def _returns(jid):
    directory = os.path.join(_job_dir(jid), "returns")
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return {}
    return {
        name[: -len(".json")]: _read_json(os.path.join(directory, name))
        for name in names
        if name.endswith(".json") and not name.startswith(".")
    }


def jid_to_time(jid):
    """Salt's salt.utils.jid.jid_to_time, for 20-digit jids ('' otherwise)."""
    jid = str(jid)
    if len(jid) != 20 or not jid.isdigit() or not 1 <= int(jid[4:6]) <= 12:
        return ""
    return "{}, {} {} {}:{}:{}.{}".format(
        jid[:4], MONTHS[int(jid[4:6]) - 1], jid[6:8], jid[8:10], jid[10:12], jid[12:14], jid[14:20]
    )


def format_jid_instance(jid, load):
    """Salt's salt.utils.jid.format_jid_instance: what the jobs runner lists."""
    job = {
        "Function": load.get("fun", "unknown-function"),
        "Arguments": list(load.get("arg", [])),
        "Target": load.get("tgt", "unknown-target"),
        "Target-type": load.get("tgt_type", "list"),
        "User": load.get("user", "root"),
    }
    if "metadata" in load:
        job["Metadata"] = load["metadata"]
    elif "metadata" in load.get("kwargs", {}):
        job["Metadata"] = load["kwargs"]["metadata"]
    job["StartTime"] = jid_to_time(jid)
    return job


def _unsupported(function):
    raise Err(Error_Unsupported(f"json-files-py has no {function}"))


class Returner(exports.Returner):
    def returner(self, ret):
        directory = os.path.join(_job_dir(ret.jid), "returns")
        path = os.path.join(directory, _name("id", ret.id) + ".json")
        try:
            os.makedirs(directory, exist_ok=True)
            _write_atomic(path, ret.full)
        except OSError as e:
            raise _backend(f"storing the return of {ret.id} for {ret.jid}", e)

    def save_load(self, jid, load, minions):
        directory = _job_dir(jid)
        target = os.path.join(directory, "load.json")
        try:
            os.makedirs(directory, exist_ok=True)
            # Linking fails when a load is already there: the first one wins,
            # even against a racing call.
            temp = _temp_path(target)
            with open(temp, "w", encoding="utf-8") as f:
                f.write(load)
            try:
                os.link(temp, target)
            except FileExistsError:
                log.log(log.Level.DEBUG, f"job {jid} already has a load; kept the first one")
            finally:
                os.remove(temp)
        except OSError as e:
            raise _backend(f"saving the load of {jid}", e)

    def get_load(self, jid):
        return json.dumps(_load(jid))

    def get_jid(self, jid):
        minions = {}
        for minion, ret in _returns(jid).items():
            minions[minion] = {k: ret[k] for k in ("return", "retcode", "success") if k in ret}
        return json.dumps(minions)

    def get_fun(self, fun):
        _unsupported("get_fun")

    def get_jids(self):
        jobs = {}
        for jid in _jids():
            load = _load(jid)
            if load:
                jobs[jid] = format_jid_instance(jid, load)
        return json.dumps(jobs)

    def get_jids_filter(self, count, filter_find_job):
        jobs = []
        for jid in sorted(_jids()):
            load = _load(jid)
            if not load or (filter_find_job and load.get("fun") == "saltutil.find_job"):
                continue
            job = format_jid_instance(jid, load)
            job["JID"] = jid
            jobs.append(job)
        return json.dumps(jobs[-count:] if count else [])

    def get_minions(self):
        minions = set()
        for jid in _jids():
            minions.update(_returns(jid))
        return sorted(minions)

    def prep_jid(self, nocache, passed_jid):
        if passed_jid is not None:
            os.makedirs(_job_dir(passed_jid), exist_ok=True)
            return passed_jid
        now = datetime.datetime.now(datetime.timezone.utc)
        for micros in range(100):
            jid = (now + datetime.timedelta(microseconds=micros)).strftime("%Y%m%d%H%M%S%f")
            try:
                os.mkdir(_job_dir(jid))
                return jid
            except FileExistsError:
                continue
        raise Err(Error_Backend("no free jid in 100 tries"))

    def save_minions(self, jid, minions, syndic_id):
        _unsupported("save_minions")

    def clean_old_jobs(self):
        _unsupported("clean_old_jobs")

    def event_return(self, events):
        _unsupported("event_return")

    def update_endtime(self, jid, time):
        _unsupported("update_endtime")

    def get_endtime(self, jid):
        _unsupported("get_endtime")
