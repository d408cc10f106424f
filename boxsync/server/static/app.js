// The page: signs in, lists the box, follows its event stream, and sends the
// person's changes through the same routes the clients use. Every name shown
// goes in as text (textContent), never as HTML.

import {
  BoxModel, SSEParser, baseName, describeTransfer, fileUrl, formatAgo, formatSize, historyBase, parentOf, plural, snapshotPlan,
  sortEntries,
} from "./model.js";

const CSRF = "X-Boxsync-CSRF";
const CLIENT = "web";
const $ = (id) => document.getElementById(id);

const state = {
  model: new BoxModel(),
  session: null,
  folder: "",
  sort: { key: "name", descending: false },
  stream: null,
  clientsTimer: 0,
  // Paths whose last change's client is still to be asked for.
  origins: new Set(),
  asking: false,
  // Bumped at each sign-in and sign-out: what an older one started stops.
  generation: 0,
};

// ---- helpers

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

let sayTimer = 0;

function say(text) {
  $("status").textContent = text;
  clearTimeout(sayTimer);
  sayTimer = setTimeout(() => { $("status").textContent = ""; }, 6000);
}

async function api(method, url, { body, headers = {}, signal } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin", signal };
  if (method !== "GET" && method !== "HEAD" && state.session) init.headers[CSRF] = state.session.csrf;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (response.status === 401) {
    signedOut("Your session is over: sign in again.");
    throw new Error("signed out");
  }
  if (!response.ok) {
    let reason = `${response.status} ${response.statusText}`;
    try {
      reason = (await response.json()).error || reason;
    } catch (e) { /* not JSON */ }
    const error = new Error(reason);
    error.status = response.status;
    throw error;
  }
  return response;
}

// ---- signing in and out

async function start() {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value).catch((e) => { $("sign-in-error").textContent = e.message; });
  });
  $("sign-out").addEventListener("click", () => signOut());
  wireUp();
  window.addEventListener("hashchange", () => useLink());
  if (await useLink()) return;
  const response = await fetch("/web/session", { credentials: "same-origin" });
  if (response.ok) {
    opened(await response.json());
  } else {
    signedOut("");
  }
}

// A one-time link (boxsync-admin web-link) carries its token after the "#",
// which never reaches the server's logs.
async function useLink() {
  const link = new URLSearchParams(location.hash.slice(1)).get("link");
  if (!link) return false;
  // It works once: keep it out of the history.
  history.replaceState(null, "", location.pathname + location.search);
  try {
    await signIn(link);
  } catch (e) {
    signedOut(`This sign-in link does not work (${e.message}): ask for a new one, or use a token.`);
  }
  return true;
}

async function signIn(token) {
  const response = await fetch("/web/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: token.trim() }),
  });
  if (!response.ok) {
    let reason = "the token is not valid";
    try { reason = (await response.json()).error || reason; } catch (e) { /* not JSON */ }
    throw new Error(reason);
  }
  $("token").value = "";
  opened(await (await api("GET", "/web/session")).json());
}

async function signOut() {
  try {
    await api("DELETE", "/web/session");
  } finally {
    signedOut("You are signed out.");
  }
}

// Stop what the last sign-in started: its event stream, its polling.
function closed() {
  state.generation += 1;
  if (state.stream) state.stream.abort();
  state.stream = null;
  clearInterval(state.clientsTimer);
  state.origins.clear();
  state.model = new BoxModel();
}

function signedOut(message) {
  closed();
  closePanel();
  state.session = null;
  $("box").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("token").focus();
}

function opened(who) {
  closed();
  state.session = who;
  $("sign-in").hidden = true;
  $("box").hidden = false;
  $("account").textContent = who.account;
  navigate(folderFromUrl());
  load(who.seq, state.generation).catch((e) => say(`Could not list the box: ${e.message}`));
  clients();
  state.clientsTimer = setInterval(clients, CLIENTS_EVERY);
}

// ---- the box, live

// Every live file of the box, a page at a time; false if a sign-out came first.
async function listAll(generation) {
  let after = "";
  for (;;) {
    const response = await api("GET", `/files?limit=1000&after=${encodeURIComponent(after)}`);
    const page = await response.json();
    if (generation !== state.generation) return false;
    for (const record of page) state.model.put(record);
    if (page.length < 1000) return true;
    after = page[page.length - 1].path;
  }
}

async function load(seq, generation) {
  if (!(await listAll(generation))) return;
  // Everything committed since `seq` comes again on the stream: nothing is
  // missed between the listing and the stream.
  state.model.seq = seq;
  render();
  follow(generation);
}

async function follow(generation) {
  while (generation === state.generation) {
    const controller = new AbortController();
    state.stream = controller;
    try {
      const response = await api("POST", "/sync", {
        body: { client: CLIENT, cursor: state.model.seq, files: [], deleted: [] },
        headers: { Accept: "text/event-stream" },
        signal: controller.signal,
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SSEParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        let changed = false;
        for (const message of parser.feed(value)) {
          const data = JSON.parse(message.data);
          if (message.event === "ready") live(true);
          if (state.model.apply(message.event, data)) {
            changed = true;
            if (message.event === "download") askOrigin(data.path);
          }
        }
        if (changed) render();
      }
    } catch (e) {
      if (generation !== state.generation) return;
    }
    live(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function live(on) {
  $("live").textContent = on ? "Live" : "Reconnecting…";
  $("live").className = on ? "live on" : "live";
}

// Events do not say which client made a change: ask, one at a time, once the
// change is in; past a burst of changes, list the whole box again instead.
function askOrigin(path) {
  state.origins.add(path);
  if (!state.asking) askOrigins(state.generation);
}

async function askOrigins(generation) {
  state.asking = true;
  try {
    while (state.origins.size && generation === state.generation) {
      if (state.origins.size > 50) {
        state.origins.clear();
        if (await listAll(generation)) render();
        return;
      }
      const [path] = state.origins;
      state.origins.delete(path);
      try {
        const record = await (await api("GET", fileUrl("/web/record/", path))).json();
        if (generation === state.generation && state.model.put(record)) render();
      } catch (e) {
        // Gone again meanwhile.
      }
    }
  } finally {
    state.asking = false;
  }
}

// Asked again this often (ms) while the panel is on screen, so transfers move.
const CLIENTS_EVERY = 1500;

async function clients() {
  const list = $("clients-list");
  if (!state.session || document.hidden || !list.offsetParent) return;
  let answer;
  try {
    answer = await (await api("GET", "/web/clients")).json();
  } catch (e) {
    return;
  }
  list.replaceChildren(...answer.clients.map((client) => element(
    "li", { class: client.streams ? "client on" : "client" },
    element("span", { class: "dot", "aria-hidden": "true" }),
    element("span", { class: "client-name", text: client.client }),
    element("span", {
      class: "client-seen",
      text: client.streams ? "connected" : `last seen ${formatAgo(client.last_seen, answer.now)}`,
    }),
    ...(client.transfers.length ? [element("ul", { class: "transfers" }, ...client.transfers.map(transferItem))] : []),
  )));
  if (!answer.clients.length) list.append(element("li", { class: "muted", text: "No client has connected since the server started." }));
}

function transferItem(transfer) {
  const bar = element("progress", { "aria-label": `${transfer.path}: ${transfer.direction}` });
  if (transfer.size !== null) {
    bar.max = Math.max(transfer.size, 1);
    bar.value = Math.min(transfer.moved, bar.max);
  }
  return element(
    "li", { class: `transfer ${transfer.direction}` },
    element("span", { class: "transfer-path", text: transfer.path }),
    bar,
    element("span", { class: "transfer-text", text: describeTransfer(transfer) }),
  );
}

// ---- showing a folder

function folderFromUrl() {
  const wanted = new URLSearchParams(location.search).get("folder") || "";
  return wanted.replace(/^\/+|\/+$/g, "");
}

function navigate(folder, push = false) {
  state.folder = folder;
  $("filter").value = "";
  if (push) {
    const url = folder ? `?folder=${encodeURIComponent(folder)}` : location.pathname;
    history.pushState({ folder }, "", url);
  }
  render();
}

window.addEventListener("popstate", () => navigate(folderFromUrl()));

function render() {
  if (!state.session) return;
  const model = state.model;
  // A folder emptied by another client: show the closest one left.
  while (state.folder && !model.isFolder(state.folder)) state.folder = parentOf(state.folder);
  renderCrumbs();
  const filter = $("filter").value;
  const entries = sortEntries(model.entries(state.folder, filter), state.sort.key, state.sort.descending);
  const rows = entries.map(row);
  $("rows").replaceChildren(...rows);
  $("empty").hidden = rows.length > 0;
  $("empty").textContent = filter ? "No file matches." : "This folder is empty: drop files here.";
  let files = 0;
  let bytes = 0;
  for (const file of model.under("")) { files += 1; bytes += file.size; }
  $("summary").textContent = `${plural(files, "file")}, ${formatSize(bytes)} in the box`;
  for (const button of document.querySelectorAll("th[data-sort]")) {
    const on = button.dataset.sort === state.sort.key;
    button.setAttribute("aria-sort", on ? (state.sort.descending ? "descending" : "ascending") : "none");
  }
  const zip = $("zip");
  zip.href = state.folder ? fileUrl("/web/zip/", state.folder) : "/web/zip";
  zip.hidden = model.files.size === 0;
}

function renderCrumbs() {
  const crumbs = [element("button", { type: "button", class: "crumb", text: "Box", onclick: () => navigate("", true) })];
  let path = "";
  for (const part of state.folder ? state.folder.split("/") : []) {
    path = path ? `${path}/${part}` : part;
    const target = path;
    crumbs.push(element("span", { class: "sep", "aria-hidden": "true", text: "/" }));
    crumbs.push(element("button", { type: "button", class: "crumb", text: part, onclick: () => navigate(target, true) }));
  }
  crumbs[crumbs.length - 1].setAttribute("aria-current", "location");
  $("crumbs").replaceChildren(...crumbs);
}

function row(entry) {
  const name = entry.folder
    ? element("button", { type: "button", class: "name folder", onclick: () => navigate(entry.path, true) },
      element("span", { class: "icon", "aria-hidden": "true" }), element("span", { text: entry.name }))
    : element("a", { class: "name file", href: fileUrl("/web/download/", entry.path), download: "" },
      element("span", { class: "icon", "aria-hidden": "true" }), element("span", { text: entry.name }));
  const when = new Date(entry.mtime_ns / 1e6);
  const actions = element("td", { class: "actions" },
    element("a", {
      class: "action", href: entry.folder ? fileUrl("/web/zip/", entry.path) : fileUrl("/web/download/", entry.path),
      text: entry.folder ? "Zip" : "Download", "aria-label": `Download ${entry.name}`,
    }),
    entry.folder ? "" : element("button", {
      type: "button", class: "action", text: "History", "aria-label": `History of ${entry.name}`, onclick: () => showHistory(entry.path),
    }),
    element("button", { type: "button", class: "action", text: "Move", "aria-label": `Move or rename ${entry.name}`, onclick: () => move(entry) }),
    element("button", { type: "button", class: "action danger", text: "Delete", "aria-label": `Delete ${entry.name}`, onclick: () => remove(entry) }),
  );
  return element("tr", { "data-path": entry.path },
    element("td", { class: "cell-name" }, name),
    element("td", { class: "cell-size", text: entry.folder ? `${plural(entry.count, "file")}, ${formatSize(entry.size)}` : formatSize(entry.size) }),
    element("td", { class: "cell-time", text: when.toLocaleString(), title: when.toISOString() }),
    element("td", { class: "cell-origin", text: entry.origin || "" }),
    actions,
  );
}

// ---- changing the box

async function remove(entry) {
  const what = entry.folder ? `the folder ${entry.path} and the ${plural(entry.count, "file")} in it` : entry.path;
  if (!confirm(`Delete ${what}? Every client deletes it too.`)) return;
  const files = entry.folder ? [...state.model.under(entry.path)] : [state.model.files.get(entry.path)];
  let done = 0;
  for (const file of files) {
    try {
      await deleteFile(file.path, file.seq);
      done += 1;
    } catch (e) {
      say(`Could not delete ${file.path}: ${e.message}`);
      return;
    }
  }
  say(`Deleted ${done === 1 ? files[0].path : plural(done, "file")}.`);
}

// Delete the file at `path`, as the page shows it at `seq` (412 if it changed).
async function deleteFile(path, seq) {
  const response = await api("DELETE", fileUrl("/files/", path), { headers: { "X-Boxsync-Base": String(seq), "X-Boxsync-Client": CLIENT } });
  if (state.model.remove(await response.json())) render();
}

async function move(entry) {
  const target = prompt(`Move or rename ${entry.path} to:`, entry.path);
  if (target === null) return;
  const cleaned = target.trim().replace(/^\/+|\/+$/g, "");
  if (!cleaned || cleaned === entry.path) return;
  try {
    const answer = await (await api("POST", "/web/move", { body: { from: entry.path, to: cleaned }, headers: { "X-Boxsync-Client": CLIENT } })).json();
    say(`Moved ${entry.path} to ${cleaned} (${plural(answer.moved, "file")}).`);
  } catch (e) {
    say(`Could not move ${entry.path}: ${e.message}`);
  }
}

function upload(file, path, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("PUT", fileUrl("/files/", path));
    request.setRequestHeader(CSRF, state.session.csrf);
    request.setRequestHeader("X-Boxsync-Client", CLIENT);
    if (file.lastModified) request.setRequestHeader("X-Boxsync-Mtime", String(BigInt(file.lastModified) * 1000000n));
    request.upload.onprogress = (event) => onProgress(event.loaded);
    request.onload = () => {
      if (request.status === 201) {
        resolve(JSON.parse(request.responseText));
        return;
      }
      let reason = `${request.status}`;
      try { reason = JSON.parse(request.responseText).error || reason; } catch (e) { /* not JSON */ }
      reject(new Error(reason));
    };
    request.onerror = () => reject(new Error("the connection failed"));
    request.send(file);
  });
}

async function uploadAll(items) {
  if (!items.length) return;
  const total = items.reduce((sum, item) => sum + item.file.size, 0) || 1;
  let sent = 0;
  const bar = $("progress-bar");
  $("progress").hidden = false;
  const show = (now) => {
    bar.value = Math.round(((sent + now) / total) * 100);
    $("progress-text").textContent = `Uploading ${plural(items.length, "file")}: ${formatSize(sent + now)} of ${formatSize(total)}`;
  };
  let failed = 0;
  for (const item of items) {
    const path = state.folder ? `${state.folder}/${item.path}` : item.path;
    try {
      const record = await upload(item.file, path, show);
      if (state.model.put({ ...record, origin: CLIENT })) render();
    } catch (e) {
      failed += 1;
      say(`Could not upload ${path}: ${e.message}`);
    }
    sent += item.file.size;
    show(0);
  }
  $("progress").hidden = true;
  if (!failed) say(`Uploaded ${plural(items.length, "file")}.`);
}

// What was dropped: files, and folders walked to their files.
async function dropped(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return [...dataTransfer.files].map((file) => ({ file, path: file.name }));
  const found = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      found.push({ file, path: prefix + entry.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  };
  for (const entry of entries) await walk(entry, "");
  return found;
}

function wireUp() {
  $("filter").addEventListener("input", () => render());
  $("panel-close").addEventListener("click", () => closePanel());
  $("open-trash").addEventListener("click", () => showTrash(false));
  $("open-restore").addEventListener("click", () => showRestoreFolder());
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sort = { key, descending: state.sort.key === key ? !state.sort.descending : key !== "name" };
      render();
    });
  }
  for (const id of ["pick-files", "pick-folder"]) {
    $(id).addEventListener("change", (event) => {
      const input = event.target;
      const items = [...input.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
      input.value = "";
      uploadAll(items);
    });
  }
  const zone = document.body;
  zone.addEventListener("dragover", (event) => {
    if (!state.session) return;
    event.preventDefault();
    $("box").classList.add("dragging");
  });
  zone.addEventListener("dragleave", (event) => {
    if (event.target === zone || !zone.contains(event.relatedTarget)) $("box").classList.remove("dragging");
  });
  zone.addEventListener("drop", async (event) => {
    if (!state.session) return;
    event.preventDefault();
    $("box").classList.remove("dragging");
    uploadAll(await dropped(event.dataTransfer));
  });
}

// ---- history, trash and restoring

// One dialog at a time (modal: the keyboard stays in it; Escape closes it).
function openPanel(title, ...content) {
  $("panel-title").textContent = title;
  $("panel-body").replaceChildren(...content);
  const panel = $("panel");
  if (!panel.open) {
    $("panel-status").textContent = "";
    panel.showModal();
  }
}

function closePanel() {
  if ($("panel").open) $("panel").close();
}

function tell(text) {
  $("panel-status").textContent = text;
  say(text);
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function table(headings, rows, empty) {
  if (!rows.length) return element("p", { class: "muted", text: empty });
  return element("div", { class: "panel-table" }, element("table", { class: "versions" },
    element("thead", {}, element("tr", {}, ...headings.map((text) => element("th", { scope: "col", text })))),
    element("tbody", {}, ...rows)));
}

/**
 * Make version `seq` of `path` the current one, from `base` (the seq the page
 * showed the file at, 0 if deleted). True if restored, false if the file
 * changed meanwhile (412): nothing is overwritten then.
 */
async function restoreVersion(path, seq, base) {
  try {
    const response = await api("POST", "/restore", { body: { path, seq, base }, headers: { "X-Boxsync-Client": CLIENT } });
    if (state.model.put({ ...(await response.json()), origin: CLIENT })) render();
    return true;
  } catch (e) {
    if (e.status === 412) return false;
    throw e;
  }
}

async function restoreOne(path, seq, base, again) {
  try {
    tell(await restoreVersion(path, seq, base)
      ? `Restored ${path} (version ${seq}).`
      : `${path} changed meanwhile: not restored.`);
  } catch (e) {
    tell(`Could not restore ${path}: ${e.message}`);
  }
  await again();
}

async function showHistory(path) {
  let history;
  try {
    history = await (await api("GET", fileUrl("/history/", path))).json();
  } catch (e) {
    say(`No history of ${path}: ${e.message}`);
    return;
  }
  const base = historyBase(history);
  const rows = history.versions.map((version) => {
    const live = !history.deleted && version.seq === base;
    const label = `version ${version.seq} of ${baseName(path)}`;
    return element("tr", { "data-seq": String(version.seq), class: live ? "current" : "" },
      element("td", { text: String(version.seq) }, live ? element("span", { class: "badge", text: "current" }) : ""),
      element("td", { text: when(version.time), title: version.time || "" }),
      element("td", { text: formatSize(version.size) }),
      element("td", { text: version.client }),
      element("td", { class: "actions" },
        element("a", { class: "action", href: `/versions/${version.seq}`, download: baseName(path), text: "Download", "aria-label": `Download ${label}` }),
        live ? "" : element("button", {
          type: "button", class: "action", text: "Restore", "aria-label": `Restore ${label}`,
          onclick: () => restoreOne(path, version.seq, base, () => showHistory(path)),
        })));
  });
  openPanel(`History of ${path}${history.deleted ? " (deleted)" : ""}`,
    table(["Version", "Time", "Size", "By", ""], rows, "No version is kept."));
}

async function showTrash(whole) {
  const under = whole ? "" : state.folder;
  let trash;
  try {
    trash = await (await api("GET", `/trash?under=${encodeURIComponent(under)}`)).json();
  } catch (e) {
    say(`Could not open the trash: ${e.message}`);
    return;
  }
  const scope = element("label", { class: "check" },
    element("input", { type: "checkbox", id: "trash-whole", onchange: (event) => showTrash(event.target.checked) }),
    "The whole box");
  scope.querySelector("input").checked = whole || !state.folder;
  scope.querySelector("input").disabled = !state.folder;
  const rows = trash.files.map((file) => element("tr", { "data-path": file.path },
    element("td", { class: "cell-name", text: file.path }),
    element("td", { text: when(file.ended_time), title: file.ended_time || "" }),
    element("td", { text: formatSize(file.size) }),
    element("td", { text: file.client }),
    element("td", { class: "actions" },
      element("button", { type: "button", class: "action", text: "History", "aria-label": `History of ${file.path}`, onclick: () => showHistory(file.path) }),
      element("button", {
        type: "button", class: "action", text: "Restore", "aria-label": `Restore ${file.path}`,
        onclick: () => restoreOne(file.path, file.seq, 0, () => showTrash(whole)),
      }))));
  openPanel(`Trash${under ? ` of ${under}` : ""}`, scope,
    table(["Deleted file", "Deleted", "Size", "By", ""], rows, "Nothing deleted here is kept."));
}

function showRestoreFolder() {
  const folder = state.folder;
  const plan = element("div", { id: "restore-plan" });
  const form = element("form", { class: "restore-form" },
    element("label", { for: "restore-at", text: "As it was at" }),
    element("input", { id: "restore-at", type: "datetime-local", step: "1", required: "" }),
    element("label", { class: "check" }, element("input", { id: "restore-exact", type: "checkbox" }), "Exact: also delete the files made since"),
    element("button", { type: "submit", text: "Show what changes" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    planSnapshot(folder, $("restore-at").value, $("restore-exact").checked, plan);
  });
  openPanel(`Restore ${folder || "the box"} as it was`, form, plan);
}

async function planSnapshot(folder, local, exact, shown) {
  const at = new Date(local);
  if (Number.isNaN(at.getTime())) return;
  let snapshot;
  try {
    snapshot = await (await api("GET", `/snapshot?under=${encodeURIComponent(folder)}&at=${encodeURIComponent(at.toISOString())}`)).json();
  } catch (e) {
    tell(`Could not read the folder as it was: ${e.message}`);
    return;
  }
  const { restore, remove } = snapshotPlan(snapshot.files, state.model.under(folder), exact);
  const items = [
    ...restore.map((each) => element("li", { text: `${each.base ? "Restore" : "Bring back"} ${each.path} (version ${each.seq})` })),
    ...remove.map((each) => element("li", { text: `Delete ${each.path} (made since)` })),
  ];
  if (!items.length) {
    shown.replaceChildren(element("p", { class: "muted", text: "Nothing differs: the folder is as it was." }));
    return;
  }
  shown.replaceChildren(element("ul", { class: "plan" }, ...items), element("button", {
    type: "button", class: "primary", id: "restore-apply", text: `Restore ${plural(items.length, "change")}`,
    onclick: (event) => { event.target.disabled = true; applySnapshot(restore, remove); },
  }));
}

async function applySnapshot(restore, remove) {
  let done = 0;
  const changed = [];
  const failed = [];
  const attempt = async (path, step) => {
    try {
      if (await step()) done += 1;
      else changed.push(path);
    } catch (e) {
      if (e.status === 412) changed.push(path);
      else failed.push(`${path} (${e.message})`);
    }
  };
  await fewAtATime(restore, (each) => attempt(each.path, () => restoreVersion(each.path, each.seq, each.base)));
  await fewAtATime(remove, (each) => attempt(each.path, async () => { await deleteFile(each.path, each.base); return true; }));
  const parts = [`Restored ${plural(done, "change")}.`];
  if (changed.length) parts.push(`Changed meanwhile: not restored: ${changed.sort().join(", ")}.`);
  if (failed.length) parts.push(`Could not restore ${failed.sort().join(", ")}.`);
  tell(parts.join(" "));
}

/**
 * Do `work` for each of `items`, a few at a time (as many as a browser
 * opens connections to one server): the server commits those that come
 * together as one group, and each costs a round trip less.
 */
async function fewAtATime(items, work, atOnce = 6) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(atOnce, items.length) }, worker));
}

start();
