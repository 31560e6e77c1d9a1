#!/usr/bin/env bash
# Rebuild tests/salt-http/expected/ by running the real Python returners
# (run_returner.py) against record_server.py on loopback, with the clock, host
# name and uuid4 pinned. Usage: regenerate-expected.sh [PYTHON]
# PYTHON defaults to the salt venv's python (scripts/setup installs the saltext
# packages there). Plain http: the bodies do not depend on the scheme.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${1:-${RETURNER_HOST_SALT_VENV:-$HOME/.cache/returner-host/salt-venv}/bin/python}"
fixtures="${FIXTURES:-$here/../../host/src/testkit/salt}"
out="$here/expected"
work="$(mktemp -d)"
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# 2026-11-23T08:43:00.320186Z: not a whole second, so @timestamp keeps its
# microseconds as it does in almost every real run.
pins=(--pin-time 1795423380.320186 --pin-host minion-host --pin-uuid)

# run NAME MODE [server args] -- [harness args] < input: requests go to $work/NAME.jsonl
run() {
    local name="$1" mode="$2"; shift 2
    local server_args=()
    while [ "$1" != -- ]; do server_args+=("$1"); shift; done
    shift
    rm -f "$work/port"
    python3 "$here/record_server.py" --mode "$mode" --log "$work/$name.jsonl" --port-file "$work/port" \
        "${server_args[@]}" >/dev/null &
    server_pid=$!
    for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
    [ -s "$work/port" ] || { echo "record_server did not start" >&2; exit 1; }
    local url="http://127.0.0.1:$(cat "$work/port")"
    SPLUNK_TOKEN=test-token "$python" "$here/run_returner.py" "$mode" --url "$url" "${pins[@]}" "$@" \
        >"$work/$name.stdout" 2>"$work/$name.stderr" || { cat "$work/$name.stderr" >&2; exit 1; }
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
}

run splunk splunk -- --option 'index="main"' --option 'sourcetype="_json"' <"$fixtures/minion-returns.jsonl"
head -n 1 "$fixtures/minion-returns.jsonl" >"$work/first.in"
run splunk-unset splunk -- <"$work/first.in"
# Fresh server, `host:` profile: index creation included.
run elasticsearch elasticsearch -- --es-host-key host <"$fixtures/minion-returns.jsonl"
# `hosts: [URL]` profile (the documented form): works only while the index exists.
run elasticsearch-hosts elasticsearch --es-index-exists -- <"$fixtures/minion-returns.jsonl"
grep -v '"call": "save_load"' "$fixtures/master-job-cache-calls.jsonl" >"$work/splunk-master-calls.in"
run splunk-master-calls splunk -- --option 'index="main"' --option 'sourcetype="_json"' <"$work/splunk-master-calls.in"
run elasticsearch-master-calls elasticsearch -- --es-host-key host <"$fixtures/master-job-cache-calls.jsonl"

rm -rf "$out"
mkdir -p "$out"
python3 - "$work" "$out" <<'EOF'
import json, os, sys
work, out = sys.argv[1:]
def load(name):
    with open(os.path.join(work, name + ".jsonl"), encoding="utf-8", errors="surrogateescape") as f:
        return [json.loads(line) for line in f]
for name in ("splunk", "splunk-unset", "elasticsearch", "elasticsearch-hosts",
             "splunk-master-calls", "elasticsearch-master-calls"):
    requests = load(name)
    for r in requests:  # the server's port is the one thing that varies between runs
        r["headers"] = [[k, "127.0.0.1:PORT" if k.lower() == "host" else v] for k, v in r["headers"]]
    with open(os.path.join(out, name + ".requests.jsonl"), "w", encoding="utf-8") as f:
        for r in requests:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
# One file per fixture line: the exact body bytes of its document request.
for name, is_doc in (("splunk", lambda r: True),
                     ("elasticsearch", lambda r: r["path"].split("?")[0].endswith("/_doc"))):
    os.makedirs(os.path.join(out, name), exist_ok=True)
    docs = [r for r in load(name) if is_doc(r)]
    assert len(docs) == 8, (name, len(docs))
    for n, r in enumerate(docs, 1):
        with open(os.path.join(out, name, f"{n}.json"), "wb") as f:
            f.write(r["body"].encode("utf-8", "surrogateescape"))
EOF
echo "expected/ rebuilt from $fixtures with $python" >&2
