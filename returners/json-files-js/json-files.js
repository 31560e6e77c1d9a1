// A Salt returner in JavaScript for returner-host, built with componentize-js.
//
// It keeps jobs as JSON files in the directory the host grants it (`/data`
// inside the sandbox), laid out like the Rust template's returner:
//
//     /data/<jid>/load.json              the job's publish load (the first save_load wins)
//     /data/<jid>/returns/<minion>.json  each minion's return, as Salt sent it
//
// StarlingMonkey has no file API, so files go through the wasi:filesystem
// imports of the returner world directly. Expected failures are thrown as
// the WIT error variant ({tag, val}); anything else traps, which the host
// reports as a broken guest.

import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';
import { log } from 'salt:returner/log@0.1.4';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const fail = (tag, message) => {
  throw { tag, val: message };
};

// The error code of a failed wasi:filesystem call (`exist`, `no-entry`, ...).
const code = (e) => (e && (e.payload ?? e.val)) ?? String(e);

function root() {
  const found = getDirectories().find(([, path]) => path === '/data');
  if (!found) fail('denied', 'no directory is granted to this returner (grants.fs)');
  return found[0];
}

// A jid or minion id, refused when it could name another file.
function name(field, value) {
  if (!value || value.startsWith('.') || /[/\\\0]/.test(value)) {
    fail('invalid', `${field}: ${JSON.stringify(value)} cannot be a file name`);
  }
  return value;
}

function backend(what, e) {
  fail('backend', `${what}: ${code(e)}`);
}

function mkdir(dir, path) {
  try {
    dir.createDirectoryAt(path);
    return true;
  } catch (e) {
    if (code(e) === 'exist') return false;
    backend(`creating ${path}`, e);
  }
}

function writeNew(dir, path, text) {
  const file = dir.openAt({}, path, { create: true, exclusive: true }, { write: true });
  const bytes = encoder.encode(text);
  let offset = 0;
  while (offset < bytes.length) {
    offset += Number(file.write(bytes.subarray(offset), BigInt(offset)));
  }
}

// The file's text, or undefined when it does not exist.
function readText(dir, path) {
  let file;
  try {
    file = dir.openAt({}, path, {}, { read: true });
  } catch (e) {
    if (code(e) === 'no-entry') return undefined;
    backend(`opening ${path}`, e);
  }
  const chunks = [];
  let offset = 0n;
  for (;;) {
    const [chunk, end] = file.read(1048576n, offset);
    chunks.push(chunk);
    offset += BigInt(chunk.length);
    if (end || chunk.length === 0) break;
  }
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return decoder.decode(all);
}

// Names in a directory (without the dot-files), or [] when it does not exist.
function list(dir, path, type) {
  let sub;
  try {
    sub = path ? dir.openAt({}, path, { directory: true }, { read: true }) : dir;
  } catch (e) {
    if (code(e) === 'no-entry') return [];
    backend(`opening ${path}`, e);
  }
  const names = [];
  const entries = sub.readDirectory();
  for (let entry = entries.readDirectoryEntry(); entry; entry = entries.readDirectoryEntry()) {
    if (!entry.name.startsWith('.') && (!type || entry.type === type)) names.push(entry.name);
  }
  return names;
}

function tempName(path) {
  const random = crypto.getRandomValues(new Uint8Array(8));
  const slash = path.lastIndexOf('/');
  const hex = Array.from(random, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${path.slice(0, slash + 1)}.tmp.${path.slice(slash + 1)}.${hex}`;
}

function loadOf(dir, jid) {
  const text = readText(dir, `${name('jid', jid)}/load.json`);
  return text === undefined ? {} : JSON.parse(text);
}

function returnsOf(dir, jid) {
  const returns = {};
  for (const file of list(dir, `${name('jid', jid)}/returns`)) {
    if (file.endsWith('.json')) {
      returns[file.slice(0, -'.json'.length)] = JSON.parse(readText(dir, `${jid}/returns/${file}`));
    }
  }
  return returns;
}

// Salt's salt.utils.jid.jid_to_time, for 20-digit jids ('' otherwise).
function jidToTime(jid) {
  const month = Number(jid.slice(4, 6));
  if (!/^\d{20}$/.test(jid) || month < 1 || month > 12) return '';
  const p = (a, b) => jid.slice(a, b);
  return `${p(0, 4)}, ${MONTHS[month - 1]} ${p(6, 8)} ${p(8, 10)}:${p(10, 12)}:${p(12, 14)}.${p(14, 20)}`;
}

// Salt's salt.utils.jid.format_jid_instance: what the jobs runner lists.
function formatJidInstance(jid, load) {
  const has = (key) => Object.prototype.hasOwnProperty.call(load, key);
  const job = {
    Function: has('fun') ? load.fun : 'unknown-function',
    Arguments: Array.isArray(load.arg) ? load.arg : [],
    Target: has('tgt') ? load.tgt : 'unknown-target',
    'Target-type': has('tgt_type') ? load.tgt_type : 'list',
    User: has('user') ? load.user : 'root',
  };
  if (has('metadata')) job.Metadata = load.metadata;
  else if (load.kwargs && typeof load.kwargs === 'object' && 'metadata' in load.kwargs) job.Metadata = load.kwargs.metadata;
  job.StartTime = jidToTime(jid);
  return job;
}

function jobsWithLoads(dir) {
  return list(dir, '', 'directory')
    .sort()
    .map((jid) => [jid, loadOf(dir, jid)])
    .filter(([, load]) => Object.keys(load).length > 0);
}

const unsupported = (fn) => () => fail('unsupported', `json-files-js has no ${fn}`);

export const returner = {
  returner(ret) {
    const dir = root();
    const job = name('jid', ret.jid);
    mkdir(dir, job);
    mkdir(dir, `${job}/returns`);
    const path = `${job}/returns/${name('id', ret.id)}.json`;
    const temp = tempName(path);
    try {
      writeNew(dir, temp, ret.full);
      dir.renameAt(temp, dir, path);
    } catch (e) {
      if (e && e.tag) throw e;
      backend(`storing the return of ${ret.id} for ${ret.jid}`, e);
    }
  },

  saveLoad(jid, load, _minions) {
    const dir = root();
    mkdir(dir, name('jid', jid));
    const path = `${jid}/load.json`;
    const temp = tempName(path);
    // Linking fails when a load is already there: the first one wins, even
    // against a racing call, and a reader never sees half a file.
    try {
      writeNew(dir, temp, load);
      try {
        dir.linkAt({}, temp, dir, path);
      } catch (e) {
        if (code(e) !== 'exist') throw e;
        log('debug', `job ${jid} already has a load; kept the first one`);
      }
      dir.unlinkFileAt(temp);
    } catch (e) {
      if (e && e.tag) throw e;
      backend(`saving the load of ${jid}`, e);
    }
  },

  getLoad(jid) {
    return JSON.stringify(loadOf(root(), jid));
  },

  getJid(jid) {
    const minions = {};
    for (const [minion, ret] of Object.entries(returnsOf(root(), jid))) {
      const entry = {};
      for (const key of ['return', 'retcode', 'success']) if (key in ret) entry[key] = ret[key];
      minions[minion] = entry;
    }
    return JSON.stringify(minions);
  },

  getJids() {
    const jobs = {};
    for (const [jid, load] of jobsWithLoads(root())) jobs[jid] = formatJidInstance(jid, load);
    return JSON.stringify(jobs);
  },

  getJidsFilter(count, filterFindJob) {
    const jobs = jobsWithLoads(root())
      .filter(([, load]) => !(filterFindJob && load.fun === 'saltutil.find_job'))
      .map(([jid, load]) => ({ ...formatJidInstance(jid, load), JID: jid }));
    return JSON.stringify(count === 0 ? [] : jobs.slice(-count));
  },

  getMinions() {
    const dir = root();
    const minions = new Set();
    for (const jid of list(dir, '', 'directory')) for (const m of Object.keys(returnsOf(dir, jid))) minions.add(m);
    return [...minions].sort();
  },

  prepJid(_nocache, passedJid) {
    const dir = root();
    if (passedJid !== undefined && passedJid !== null) {
      mkdir(dir, name('jid', passedJid));
      return passedJid;
    }
    // Date has millisecond precision: the last three digits count up until
    // a job directory is free.
    const iso = new Date().toISOString(); // 2026-11-23T08:43:00.320Z
    const base = iso.slice(0, 4) + iso.slice(5, 7) + iso.slice(8, 10) + iso.slice(11, 13) + iso.slice(14, 16) + iso.slice(17, 19) + iso.slice(20, 23);
    for (let n = 0; n < 1000; n++) {
      const jid = base + String(n).padStart(3, '0');
      if (mkdir(dir, jid)) return jid;
    }
    fail('backend', 'no free jid in 1000 tries');
  },

  getFun: unsupported('get_fun'),
  saveMinions: unsupported('save_minions'),
  cleanOldJobs: unsupported('clean_old_jobs'),
  eventReturn: unsupported('event_return'),
  updateEndtime: unsupported('update_endtime'),
  getEndtime: unsupported('get_endtime'),
};
