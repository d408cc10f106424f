// What the page knows of the box, and how it shows it: no DOM here, so it is
// tested on its own (tests/web_model.test.mjs, under node).

/** The files of the box, by path, kept up to date from the event stream. */
export class BoxModel {
  constructor() {
    /** @type {Map<string, {path: string, size: number, seq: number, mtime_ns: number, sha256: string, origin: string}>} */
    this.files = new Map();
    /** The seq each path was deleted at, so an older record cannot bring it back. */
    this.deleted = new Map();
    /**
     * Where a new event stream starts from: the highest seq the stream has
     * brought (the plan comes in seq order), never one only a listing or a
     * record said.
     */
    this.seq = 0;
  }

  /** Take in a record of GET /files (or /web/record/...). */
  put(record) {
    const known = this.files.get(record.path);
    if (known && known.seq > record.seq) return false;
    if ((this.deleted.get(record.path) || 0) > record.seq) return false;
    this.files.set(record.path, { origin: "", ...known, ...record });
    return true;
  }

  /** Take in the deletion of a file at `seq` (an answer to DELETE /files/...). */
  remove({ path, seq }) {
    this.deleted.set(path, Math.max(seq, this.deleted.get(path) || 0));
    const known = this.files.get(path);
    if (!known || known.seq >= seq) return false;
    this.files.delete(path);
    return true;
  }

  /**
   * Take in an event of the stream (its name and data); return whether the
   * box changed. Events older than what is known change nothing.
   */
  apply(name, data) {
    // "hello" tells the seq at the start, before the plan: not covered yet.
    if (name !== "hello" && Number.isInteger(data.seq)) this.seq = Math.max(this.seq, data.seq);
    if (name === "download") {
      const known = this.files.get(data.path);
      if (known && known.seq >= data.seq) return false;
      // Who made it is not in the event: kept empty until asked for.
      return this.put({ path: data.path, size: data.size, seq: data.seq, mtime_ns: data.mtime_ns, sha256: data.sha256, origin: "" });
    }
    if (name === "delete") return this.remove(data);
    return false;
  }

  /** Whether `folder` ("" for the top) holds anything. */
  isFolder(folder) {
    if (folder === "") return true;
    const prefix = folder + "/";
    for (const path of this.files.keys()) {
      if (path.startsWith(prefix)) return true;
    }
    return false;
  }

  /** The live files below `folder` (all of them for ""). */
  *under(folder) {
    const prefix = folder === "" ? "" : folder + "/";
    for (const file of this.files.values()) {
      if (file.path.startsWith(prefix)) yield file;
    }
  }

  /**
   * The entries to show in `folder`: its files and sub-folders (a folder's
   * size is what it holds, its last change the latest inside). With a
   * `filter`, every file below `folder` whose name contains it instead
   * (case-insensitive), named by its path from `folder`.
   */
  entries(folder, filter = "") {
    const prefix = folder === "" ? "" : folder + "/";
    const wanted = filter.trim().toLowerCase();
    const found = new Map();
    for (const file of this.under(folder)) {
      const rest = file.path.slice(prefix.length);
      if (wanted) {
        if (baseName(rest).toLowerCase().includes(wanted)) {
          found.set(rest, fileEntry(rest, file));
        }
        continue;
      }
      const slash = rest.indexOf("/");
      if (slash < 0) {
        found.set(rest, fileEntry(rest, file));
        continue;
      }
      const name = rest.slice(0, slash);
      const entry = found.get("/" + name) || {
        name, path: prefix + name, folder: true, size: 0, mtime_ns: 0, origin: "", count: 0, seq: 0,
      };
      entry.size += file.size;
      entry.count += 1;
      if (file.mtime_ns > entry.mtime_ns) {
        entry.mtime_ns = file.mtime_ns;
        entry.origin = file.origin;
      }
      found.set("/" + name, entry);
    }
    return [...found.values()];
  }
}

function fileEntry(name, file) {
  return { name, path: file.path, folder: false, size: file.size, mtime_ns: file.mtime_ns, origin: file.origin, seq: file.seq, count: 1 };
}

export function baseName(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

export function parentOf(path) {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "" : path.slice(0, slash);
}

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

/** `entries` sorted by `key` (name, size, mtime or origin), folders first. */
export function sortEntries(entries, key = "name", descending = false) {
  const sign = descending ? -1 : 1;
  const by = {
    name: (a, b) => collator.compare(a.name, b.name),
    size: (a, b) => a.size - b.size,
    mtime: (a, b) => a.mtime_ns - b.mtime_ns,
    origin: (a, b) => collator.compare(a.origin, b.origin),
  }[key] || ((a, b) => collator.compare(a.name, b.name));
  return [...entries].sort(
    (a, b) => (b.folder - a.folder) || sign * by(a, b) || collator.compare(a.name, b.name),
  );
}

/** A size as people read it: 0 B, 999 B, 1.5 KB, 12 MB... */
export function formatSize(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const shown = unit === 0 || value >= 10 ? Math.round(value) : Math.round(value * 10) / 10;
  return `${shown} ${units[unit]}`;
}

/** "1 file", "2 files". */
export function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

/** How long ago `seconds` (since the epoch) was, from `now`. */
export function formatAgo(seconds, now) {
  const ago = Math.max(0, Math.round(now - seconds));
  if (ago < 5) return "just now";
  if (ago < 60) return `${ago} s ago`;
  if (ago < 3600) return `${Math.floor(ago / 60)} min ago`;
  if (ago < 86400) return `${Math.floor(ago / 3600)} h ago`;
  return `${Math.floor(ago / 86400)} d ago`;
}

/**
 * A transfer under way (one of `GET /web/clients`'s), as the clients panel
 * shows it: which way, how far (bytes, and percent when its size is known).
 */
export function describeTransfer(transfer) {
  const arrow = transfer.direction === "up" ? "↑ uploading" : "↓ downloading";
  const { size, moved } = transfer;
  if (size === null || size === undefined) return `${arrow}: ${formatSize(moved)}`;
  const percent = size > 0 ? Math.min(100, Math.floor((moved * 100) / size)) : 100;
  return `${arrow}: ${formatSize(moved)} of ${formatSize(size)} (${percent}%)`;
}

/**
 * What restoring a folder as it was takes: `then` are the versions its files
 * had (GET /snapshot), `now` its live files. Each file that is missing or
 * holds other bytes is restored from its version, from the seq it is at now
 * (0: not there); with `exact`, each file made since is deleted too.
 */
export function snapshotPlan(then, now, exact = false) {
  const live = new Map([...now].map((file) => [file.path, file]));
  const restore = [];
  for (const version of then) {
    const current = live.get(version.path);
    live.delete(version.path);
    if (current && current.sha256 === version.sha256) continue;
    restore.push({ path: version.path, seq: version.seq, base: current ? current.seq : 0 });
  }
  const remove = exact
    ? [...live.values()].map((file) => ({ path: file.path, base: file.seq })).sort((a, b) => (a.path < b.path ? -1 : 1))
    : [];
  return { restore, remove };
}

/**
 * The seq a file's history shows it at (its live version), 0 if it is
 * deleted: the base of a restore from that history.
 */
export function historyBase(history) {
  if (history.deleted) return 0;
  const live = history.versions.find((version) => version.ended_seq === null || version.ended_seq === undefined);
  return live ? live.seq : 0;
}

/** The URL path of box path `path` below `prefix` ("/files/", ...). */
export function fileUrl(prefix, path) {
  return prefix + path.split("/").map(encodeURIComponent).join("/");
}

/**
 * Server-Sent Events, parsed as they arrive (fetch gives the page the body of
 * POST /sync, which EventSource cannot send).
 */
export class SSEParser {
  constructor() {
    this.buffer = "";
    this.event = "";
    this.data = [];
  }

  /** Feed decoded text; return the messages it completes, as {event, data}. */
  feed(text) {
    this.buffer += text;
    const messages = [];
    let end;
    while ((end = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, end);
      const newline = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      if (this.buffer[end] === "\r" && newline === 1 && end + 1 === this.buffer.length) break;
      this.buffer = this.buffer.slice(end + newline);
      if (line === "") {
        if (this.data.length) {
          messages.push({ event: this.event || "message", data: this.data.join("\n") });
        }
        this.event = "";
        this.data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.event = value;
      else if (field === "data") this.data.push(value);
    }
    return messages;
  }
}
