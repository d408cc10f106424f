// The page's logic without a browser: node --test tests/web_model.test.mjs
// (tests/test_web_model.py runs it).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  BoxModel, SSEParser, describeTransfer, fileUrl, formatAgo, formatSize, historyBase, parentOf, plural, snapshotPlan, sortEntries,
} from "../../boxsync/server/static/model.js";

function record(path, seq, size = 1, origin = "laptop") {
  return { path, seq, size, mtime_ns: seq * 1e9, sha256: "0".repeat(64), origin };
}

function boxOf(...records) {
  const model = new BoxModel();
  for (const each of records) model.put(each);
  return model;
}

test("a folder lists its files and sub-folders, with their totals", () => {
  const model = boxOf(record("a.txt", 1), record("docs/b.txt", 2, 10), record("docs/sub/c.txt", 5, 20, "phone"));
  const top = model.entries("");
  assert.deepEqual(top.map((e) => [e.name, e.folder]), [["a.txt", false], ["docs", true]]);
  const docs = top.find((e) => e.name === "docs");
  assert.equal(docs.path, "docs");
  assert.equal(docs.size, 30);
  assert.equal(docs.count, 2);
  assert.equal(docs.origin, "phone"); // who made its latest change
  assert.deepEqual(model.entries("docs").map((e) => e.name).sort(), ["b.txt", "sub"]);
  assert.equal(model.isFolder("docs/sub"), true);
  assert.equal(model.isFolder("doc"), false);
});

test("finding by name searches below the folder", () => {
  const model = boxOf(record("Report.pdf", 1), record("docs/old/report-2.pdf", 2), record("docs/x.txt", 3));
  assert.deepEqual(model.entries("", "REPORT").map((e) => e.name).sort(), ["Report.pdf", "docs/old/report-2.pdf"]);
  assert.deepEqual(model.entries("docs", "report").map((e) => e.name), ["old/report-2.pdf"]);
  assert.deepEqual(model.entries("docs", "nothing"), []);
});

test("events apply in seq order, and old ones change nothing", () => {
  const model = boxOf(record("a.txt", 3));
  assert.equal(model.apply("download", { path: "a.txt", sha256: "1".repeat(64), size: 9, mtime_ns: 1, seq: 2 }), false);
  assert.equal(model.apply("download", { path: "a.txt", sha256: "1".repeat(64), size: 9, mtime_ns: 1, seq: 4 }), true);
  assert.equal(model.files.get("a.txt").size, 9);
  assert.equal(model.files.get("a.txt").origin, ""); // not in the event: asked for afterwards
  assert.equal(model.apply("delete", { path: "a.txt", seq: 4 }), false);
  assert.equal(model.apply("delete", { path: "a.txt", seq: 6 }), true);
  assert.equal(model.files.size, 0);
  assert.equal(model.seq, 6);
  model.apply("hello", { stream: "s", seq: 12 });
  assert.equal(model.seq, 6); // the plan up to 12 is still to come
  model.apply("ready", { seq: 9 });
  assert.equal(model.seq, 9);
  model.put(record("c", 20)); // a record read aside: the stream has not brought it
  assert.equal(model.seq, 9);
  // A listing read before a deletion cannot bring the file back.
  assert.equal(model.put(record("a.txt", 5)), false);
  assert.equal(model.files.has("a.txt"), false);
  // A listing older than what the stream said is ignored.
  model.apply("download", { path: "b", sha256: "", size: 1, mtime_ns: 1, seq: 10 });
  assert.equal(model.put(record("b", 8)), false);
});

test("sorting keeps folders first", () => {
  const model = boxOf(record("b.txt", 1, 50), record("a10.txt", 2, 5), record("a9.txt", 3, 500), record("z/x", 4, 1));
  const names = (key, descending) => sortEntries(model.entries(""), key, descending).map((e) => e.name);
  assert.deepEqual(names("name", false), ["z", "a9.txt", "a10.txt", "b.txt"]);
  assert.deepEqual(names("size", true), ["z", "a9.txt", "b.txt", "a10.txt"]);
  assert.deepEqual(names("mtime", true), ["z", "a9.txt", "a10.txt", "b.txt"]);
});

test("the server-sent events of a stream, in pieces", () => {
  const parser = new SSEParser();
  const stream = 'retry: 2000\n\nevent: hello\ndata: {"stream":"s","seq":3}\n\n: keepalive\n\nid: 4\r\nevent: download\r\ndata: {"path":"a"}\r\n\r\n';
  const messages = [];
  for (let i = 0; i < stream.length; i += 7) messages.push(...parser.feed(stream.slice(i, i + 7)));
  assert.deepEqual(messages, [
    { event: "hello", data: '{"stream":"s","seq":3}' },
    { event: "download", data: '{"path":"a"}' },
  ]);
});

test("sizes, times, paths", () => {
  assert.equal(formatSize(0), "0 B");
  assert.equal(formatSize(999), "999 B");
  assert.equal(formatSize(1500), "1.5 KB");
  assert.equal(formatSize(2_400_000), "2.4 MB");
  assert.equal(formatSize(12_345_678_901), "12 GB");
  assert.equal(formatAgo(100, 102), "just now");
  assert.equal(formatAgo(100, 190), "1 min ago");
  assert.equal(formatAgo(0, 90_000), "1 d ago");
  assert.equal(plural(1, "file"), "1 file");
  assert.equal(plural(2, "file"), "2 files");
  assert.equal(parentOf("a/b/c"), "a/b");
  assert.equal(parentOf("a"), "");
  assert.equal(fileUrl("/files/", "docs/a b/#?.txt"), "/files/docs/a%20b/%23%3F.txt");
});

test("restoring a folder as it was: what differs comes back, what is new goes with exact", () => {
  const version = (path, seq, sha) => ({ path, seq, sha256: sha.repeat(64), size: 1 });
  const then = [version("d/same", 2, "a"), version("d/edited", 3, "b"), version("d/deleted", 4, "c")];
  const now = [version("d/same", 2, "a"), version("d/edited", 9, "e"), version("d/new", 10, "f")];
  assert.deepEqual(snapshotPlan(then, now), {
    restore: [{ path: "d/edited", seq: 3, base: 9 }, { path: "d/deleted", seq: 4, base: 0 }],
    remove: [],
  });
  assert.deepEqual(snapshotPlan(then, now, true).remove, [{ path: "d/new", base: 10 }]);
  // Put back to the same bytes since: nothing to do.
  assert.deepEqual(snapshotPlan([version("x", 1, "a")], [version("x", 5, "a")]), { restore: [], remove: [] });
});

test("a restore from a history is based on the version it shows live", () => {
  const versions = [{ seq: 7, ended_seq: null }, { seq: 3, ended_seq: 7 }];
  assert.equal(historyBase({ deleted: false, versions }), 7);
  assert.equal(historyBase({ deleted: true, versions: [{ seq: 3, ended_seq: 8, deleted: true }] }), 0);
});

test("a transfer under way, as the clients panel shows it", () => {
  assert.equal(describeTransfer({ direction: "up", size: 1000, moved: 300 }), "↑ uploading: 300 B of 1 KB (30%)");
  assert.equal(describeTransfer({ direction: "down", size: 3, moved: 3 }), "↓ downloading: 3 B of 3 B (100%)");
  assert.equal(describeTransfer({ direction: "down", size: 0, moved: 0 }), "↓ downloading: 0 B of 0 B (100%)");
  assert.equal(describeTransfer({ direction: "up", size: null, moved: 2500 }), "↑ uploading: 2.5 KB");
});
