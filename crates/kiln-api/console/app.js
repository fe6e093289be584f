// Kiln's console: a client of the public API and nothing more. The API key lives in this
// tab's sessionStorage and goes out as an `Authorization` header; nothing is kept in cookies.
// Every string that came from a user or a file is put on the page as text, never as markup.

const KEY = "kiln.apiKey";
const PAGE = 100;
const LARGE = 8 * 1024 * 1024; // bigger files go through the resumable upload URL
const PIECE = 4 * 1024 * 1024;

const $ = (id) => document.getElementById(id);

const state = {
  key: sessionStorage.getItem(KEY),
  org: null,
  store: null,
  skip: 0,
  total: 0,
  rows: new Map(), // file id -> {tr, file}
  stream: null,
  poll: null,
  refreshSoon: null,
};

// Words for a file's error code: what happened and what to do.
const ERROR_WORDS = {
  UNSUPPORTED_FORMAT: "Kiln cannot read this kind of file. Convert it to a supported format and upload it again.",
  CORRUPT_FILE: "The file is damaged or not what its name says. Re-export or re-save it, then upload it again.",
  ENCRYPTED_FILE: "The file is password-protected. Remove the protection and upload it again.",
  NO_TEXT_EXTRACTED: "No text was found in the file (empty, or only images). Add text or use a file with text.",
  FILE_TOO_LARGE: "The file is larger than this file type allows. Split it and upload the parts.",
  EMBEDDING_FAILED: "Computing the file's vectors failed. Retry; if it keeps failing, tell the operator.",
  EMBEDDING_RATE_LIMITED: "The embedding service was busy. Retry in a little while.",
  INDEX_FAILED: "Adding the file to the search index failed. Retry; if it keeps failing, tell the operator.",
  TIMEOUT: "Reading the file took too long. Retry; very large or complex files may need splitting.",
  WORKER_LOST: "The worker processing the file stopped repeatedly. Retry; if it keeps failing, the file may be crashing the processor.",
  INTERNAL_ERROR: "Something went wrong inside Kiln. Retry; if it keeps failing, tell the operator.",
};

// ---- small helpers ------------------------------------------------------------------------

/** An element with attributes and children; strings become text nodes (never markup). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function say(text) {
  $("message").textContent = text;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => ($("message").textContent = ""), 4000);
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.system_message || e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) signOut("Your key was refused. Sign in again.");
    throw new ApiError(response.status, data);
  }
  return data;
}

const orgPath = (rest) => `/v1/organizations/${encodeURIComponent(state.org)}${rest}`;
const filesPath = (store, rest = "") => orgPath(`/stores/${encodeURIComponent(store)}/files${rest}`);

function show(section) {
  for (const id of ["sign-in", "stores", "store", "file"]) $(id).hidden = id !== section;
  $("sign-out").hidden = section === "sign-in";
}

function crumbs(...parts) {
  $("crumbs").replaceChildren(...parts.flatMap((p, i) => [i ? " / " : "", p]));
}

// ---- sign in ------------------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  const answer = await api("GET", "/v1/organizations");
  const orgs = answer.organizations || answer.items || [];
  if (!orgs.length) throw new Error("This key sees no organization.");
  state.org = orgs[0].id;
  sessionStorage.setItem(KEY, key);
  startEvents();
}

function signOut(text) {
  sessionStorage.removeItem(KEY);
  state.key = null;
  state.org = null;
  stopEvents();
  location.hash = "#/";
  show("sign-in");
  $("sign-in-error").textContent = text || "";
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await signIn($("api-key").value.trim());
    $("api-key").value = "";
    route();
  } catch (err) {
    state.key = null;
    $("sign-in-error").textContent = err.message;
  }
});
$("sign-out").addEventListener("click", () => signOut());

// ---- stores -------------------------------------------------------------------------------

async function showStores() {
  show("stores");
  crumbs(el("a", { href: "#/" }, "Stores"));
  const [stores, usage] = await Promise.all([
    api("GET", orgPath("/knowledge/stores?limit=100")),
    api("GET", orgPath("/knowledge/usage")).catch(() => null),
  ]);
  const sizes = new Map(((usage && usage.stores) || []).map((s) => [s.store_id, s.total_bytes]));
  $("usage-total").textContent = usage
    ? `${usage.file_count} files · ${bytes(usage.total_bytes)} stored in all`
    : "";
  $("stores-body").replaceChildren(
    ...stores.items.map((s) =>
      el("tr", { "data-store": s.id },
        el("td", { class: "name" }, el("a", { href: `#/stores/${encodeURIComponent(s.id)}` }, s.name)),
        el("td", {}, s.file_counts.total),
        el("td", {}, s.file_counts.completed),
        el("td", {}, s.file_counts.pending + s.file_counts.processing),
        el("td", { class: s.file_counts.failed ? "status-failed" : "" }, s.file_counts.failed),
        el("td", {}, bytes(sizes.get(s.id) ?? s.data_size)),
      )),
  );
}

$("create-store-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("new-store-name").value.trim();
  try {
    const answer = await api("POST", orgPath("/vector-stores"), { name });
    $("new-store-name").value = "";
    location.hash = `#/stores/${encodeURIComponent(answer.data.id)}`;
  } catch (err) {
    say(err.message);
  }
});

// ---- a store's files ----------------------------------------------------------------------

async function showStore(id) {
  if (state.store?.id !== id) {
    state.skip = 0;
    $("results").replaceChildren();
    $("search-info").textContent = "";
    $("uploads").replaceChildren();
  }
  const store = await api("GET", orgPath(`/knowledge/stores/${encodeURIComponent(id)}`));
  state.store = store;
  show("store");
  crumbs(el("a", { href: "#/" }, "Stores"), el("a", { href: `#/stores/${encodeURIComponent(id)}` }, store.name));
  $("store-name").textContent = store.name;
  await loadFiles();
}

function countsText(c) {
  return `${c.total} files · ${c.completed} completed · ${c.pending + c.processing} in progress · ${c.failed} failed`;
}

async function loadFiles() {
  const store = state.store;
  if (!store) return;
  const params = new URLSearchParams({ skip: state.skip, limit: PAGE });
  if ($("status-filter").value) params.set("status", $("status-filter").value);
  if ($("name-filter").value.trim()) params.set("search", $("name-filter").value.trim());
  const [page, fresh] = await Promise.all([
    api("GET", filesPath(store.id, `?${params}`)),
    api("GET", orgPath(`/knowledge/stores/${encodeURIComponent(store.id)}`)),
  ]);
  $("store-counts").textContent = countsText(fresh.file_counts);
  state.total = page.total;
  state.rows.clear();
  $("files-body").replaceChildren(...page.items.map(fileRow));
  const last = Math.min(state.skip + page.items.length, page.total);
  $("page-info").textContent = page.total ? `${state.skip + 1}–${last} of ${page.total}` : "No files";
  $("prev-page").disabled = state.skip === 0;
  $("next-page").disabled = !page.has_more;
}

function fileRow(file) {
  const tr = el("tr", { "data-file": file.id });
  state.rows.set(file.id, { tr, file });
  paintRow(tr, file);
  return tr;
}

function paintRow(tr, file) {
  const progress = el("progress", { max: 100, value: file.progress_percent ?? 0 });
  const link = el("a", { href: `#/stores/${encodeURIComponent(file.store_id)}/files/${encodeURIComponent(file.id)}` },
    file.relative_path ? `${file.relative_path}/${file.file_name}` : file.file_name);
  const actions = file.status === "failed"
    ? el("button", { class: "retry", onclick: () => retry(file.store_id, file.id) }, "Retry")
    : "";
  tr.replaceChildren(
    el("td", { class: "name" }, link),
    el("td", { class: `status status-${file.status}` }, file.status),
    el("td", { class: "step" }, file.current_step || ""),
    el("td", {}, progress, ` ${file.progress_percent ?? 0}%`),
    el("td", { class: "error-code", title: file.error_message || "" }, file.error_code || ""),
    el("td", {}, actions),
  );
}

async function retry(store, file) {
  try {
    await api("POST", filesPath(store, `/${encodeURIComponent(file)}/retry`), {});
    say("Retry queued");
  } catch (err) {
    say(err.message);
  }
}

$("retry-failed").addEventListener("click", async () => {
  const store = state.store.id;
  // The failed files as they are now, each retried once (a file that fails again at once is
  // not retried again: that would loop).
  const ids = [];
  for (let skip = 0; ; skip += PAGE) {
    const page = await api("GET", filesPath(store, `?status=failed&limit=${PAGE}&skip=${skip}`));
    ids.push(...page.items.map((f) => f.id));
    if (!page.has_more || !page.items.length) break;
  }
  let retried = 0;
  for (let i = 0; i < ids.length; i += 8) {
    const results = await Promise.allSettled(ids.slice(i, i + 8).map((id) =>
      api("POST", filesPath(store, `/${encodeURIComponent(id)}/retry`), {})));
    retried += results.filter((r) => r.status === "fulfilled").length;
  }
  say(`${retried} of ${ids.length} failed file(s) queued again`);
  loadFiles();
});

$("status-filter").addEventListener("change", () => { state.skip = 0; loadFiles(); });
let nameTimer;
$("name-filter").addEventListener("input", () => {
  clearTimeout(nameTimer);
  nameTimer = setTimeout(() => { state.skip = 0; loadFiles(); }, 250);
});
$("prev-page").addEventListener("click", () => { state.skip = Math.max(0, state.skip - PAGE); loadFiles(); });
$("next-page").addEventListener("click", () => { state.skip += PAGE; loadFiles(); });

// At most one reload of the shown page per 400 ms, however many events arrive (a debounce
// would never fire while thousands of files stream in).
function refreshSoon() {
  if (state.refreshSoon) return;
  state.refreshSoon = setTimeout(() => {
    state.refreshSoon = null;
    if (!$("store").hidden) loadFiles();
  }, 400);
}

// ---- uploads ------------------------------------------------------------------------------

function uploadRow(name) {
  const bar = el("progress", { max: 100, value: 0 });
  const note = el("span", { class: "muted" }, "waiting");
  const li = el("li", {}, el("span", { class: "name" }, name), bar, note);
  $("uploads").prepend(li);
  return { bar, note };
}

/** Sends a request with upload progress (fetch cannot report it). */
function send(method, url, body, headers, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded, e.total);
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { /* empty */ }
      resolve({ status: xhr.status, data, range: xhr.getResponseHeader("Range") });
    };
    xhr.onerror = () => reject(new Error("network error"));
    xhr.send(body);
  });
}

async function uploadOne(store, file, relativePath) {
  const row = uploadRow(relativePath ? `${relativePath}/${file.name}` : file.name);
  const auth = { Authorization: `Bearer ${state.key}` };
  try {
    if (file.size <= LARGE) {
      const form = new FormData();
      form.append("file", file, file.name);
      if (relativePath) form.append("relative_path", relativePath);
      row.note.textContent = "uploading";
      const r = await send("POST", filesPath(store, "/upload"), form, auth,
        (done, total) => (row.bar.value = Math.round((100 * done) / total)));
      if (r.status !== 201) throw new ApiError(r.status, r.data);
    } else {
      // Resumable: a signed URL, the bytes in pieces (each retried), then registration.
      const start = await api("POST", filesPath(store, "/upload-url"), {
        file_name: file.name, file_size: file.size, mime_type: file.type || "application/octet-stream",
      });
      let sent = 0;
      while (sent < file.size) {
        const end = Math.min(sent + PIECE, file.size);
        let r;
        for (let attempt = 0; attempt < 4; attempt++) {
          row.note.textContent = attempt ? `retrying piece (${attempt})` : "uploading";
          try {
            r = await send("PUT", start.upload_url, file.slice(sent, end),
              { "Content-Range": `bytes ${sent}-${end - 1}/${file.size}` },
              (done) => (row.bar.value = Math.round((100 * (sent + done)) / file.size)));
            if (r.status === 200 || r.status === 201 || r.status === 308) break;
          } catch { /* retried */ }
          await new Promise((ok) => setTimeout(ok, 500 * 2 ** attempt));
        }
        if (!r || ![200, 201, 308].includes(r.status)) throw new ApiError(r ? r.status : 0, r && r.data);
        // The server says what it holds; go on from there.
        const held = r.range && /bytes=0-(\d+)/.exec(r.range);
        sent = r.status === 308 && held ? Number(held[1]) + 1 : end;
      }
      await api("POST", filesPath(store, "/register"), { upload_id: start.upload_id, relative_path: relativePath || undefined });
    }
    row.bar.value = 100;
    row.note.textContent = "uploaded";
  } catch (err) {
    row.note.textContent = `failed: ${err.message}`;
    row.note.className = "error";
  }
}

async function uploadAll(items) {
  const store = state.store.id;
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const { file, path } = items[next++];
      await uploadOne(store, file, path);
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, items.length) }, worker));
  refreshSoon();
}

function fromInput(input) {
  const items = [...input.files].map((file) => {
    const rel = file.webkitRelativePath || "";
    const path = rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : "";
    return { file, path };
  });
  input.value = "";
  return items;
}

$("file-input").addEventListener("change", (e) => uploadAll(fromInput(e.target)));
$("folder-input").addEventListener("change", (e) => uploadAll(fromInput(e.target)));

async function walk(entry, path, out) {
  if (entry.isFile) {
    const file = await new Promise((ok, fail) => entry.file(ok, fail));
    out.push({ file, path });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    const sub = path ? `${path}/${entry.name}` : entry.name;
    for (;;) {
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const child of batch) await walk(child, sub, out);
    }
  }
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const items = [];
  const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  if (entries.length) for (const entry of entries) await walk(entry, "", items);
  else for (const file of e.dataTransfer.files) items.push({ file, path: "" });
  uploadAll(items);
});

// ---- a file -------------------------------------------------------------------------------

async function showFile(storeId, fileId) {
  if (state.store?.id !== storeId) state.store = await api("GET", orgPath(`/knowledge/stores/${encodeURIComponent(storeId)}`));
  const [file, logs] = await Promise.all([
    api("GET", filesPath(storeId, `/${encodeURIComponent(fileId)}`)),
    api("GET", filesPath(storeId, `/${encodeURIComponent(fileId)}/logs?limit=100`)),
  ]);
  show("file");
  crumbs(el("a", { href: "#/" }, "Stores"),
    el("a", { href: `#/stores/${encodeURIComponent(storeId)}` }, state.store.name), file.file_name);
  $("file-name").textContent = file.file_name;
  const facts = [
    ["Status", file.status], ["Step", file.current_step], ["Progress", `${file.progress_percent}%`],
    ["Type", file.mime_type], ["Size", bytes(file.file_size)], ["Path", file.relative_path || "—"],
    ["Attempts", file.attempts], ["Chunks", file.chunk_count], ["Uploaded", file.created_at],
    ["Completed", file.completed_at || "—"], ["SHA-256", file.sha256 || "—"],
  ];
  $("file-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-fact": k }, v ?? "")]));
  const box = $("file-error");
  box.hidden = !file.error_code;
  if (file.error_code) {
    box.replaceChildren(
      el("strong", { class: "error-code" }, file.error_code), " — ",
      el("span", {}, ERROR_WORDS[file.error_code] || ""),
      el("p", { class: "error-message" }, file.error_message || ""),
    );
  }
  $("file-retry").hidden = file.status !== "failed";
  $("file-retry").onclick = async () => { await retry(storeId, fileId); showFile(storeId, fileId); };
  $("file-delete").onclick = async () => {
    if (!confirm(`Delete ${file.file_name}?`)) return;
    await api("DELETE", filesPath(storeId, `/${encodeURIComponent(fileId)}`));
    location.hash = `#/stores/${encodeURIComponent(storeId)}`;
  };
  const attempts = new Map();
  for (const entry of logs.items) {
    if (!attempts.has(entry.attempt)) attempts.set(entry.attempt, []);
    attempts.get(entry.attempt).push(entry);
  }
  $("file-log").replaceChildren(...[...attempts].map(([attempt, entries]) =>
    el("div", { class: "attempt" },
      el("h3", {}, attempt ? `Attempt ${attempt}` : "Before processing"),
      el("ol", {}, entries.map((e) =>
        el("li", { class: `level-${e.level}` },
          el("span", { class: "muted" }, `${e.timestamp} · ${e.step || "—"} · ${e.event} · `), e.message))))));
}

// ---- search -------------------------------------------------------------------------------

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {
    query: $("query").value,
    mode: $("mode").value,
    top_k: Number($("top-k").value) || 10,
  };
  if ($("path-prefix").value.trim()) body.filters = { relative_path_prefix: $("path-prefix").value.trim() };
  try {
    const answer = await api("POST", orgPath(`/stores/${encodeURIComponent(state.store.id)}/search`), body);
    $("search-info").textContent = `${answer.results.length} result(s), ${answer.mode}, ${answer.took_ms} ms`;
    $("results").replaceChildren(...answer.results.map((r) =>
      el("li", { class: "result" },
        el("div", { class: "meta" },
          el("span", { class: "result-file" }, r.relative_path ? `${r.relative_path}/${r.file_name}` : r.file_name),
          ` · chunk ${r.chunk_index}${r.page ? ` · page ${r.page}` : ""} · score `,
          el("span", { class: "score" }, r.score.toFixed(4))),
        el("div", { class: "text" }, r.text))));
  } catch (err) {
    $("search-info").textContent = err.message;
  }
});

// ---- live updates -------------------------------------------------------------------------

function applyEvent(event) {
  const d = event.data || {};
  const onStore = state.store && event.store_id === state.store.id;
  if (!onStore) return;
  const row = state.rows.get(event.file_id);
  if (row && d.status) {
    Object.assign(row.file, {
      status: d.status, current_step: d.current_step, progress_percent: d.progress_percent,
      error_code: d.error_code || null, error_message: d.error_message || null,
    });
    paintRow(row.tr, row.file);
  }
  if (["file.uploaded", "file.deleted", "file.completed", "file.failed", "file.retried"].includes(event.type)) refreshSoon();
  if (!$("file").hidden && location.hash.endsWith(`/files/${encodeURIComponent(event.file_id)}`)) {
    clearTimeout(applyEvent.fileTimer);
    applyEvent.fileTimer = setTimeout(route, 300);
  }
}

/** Follows `GET …/events` (fetch, so the key can go in a header), resuming after drops. */
async function follow(signal) {
  let last = null;
  let failures = 0;
  while (!signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" };
      if (last !== null) headers["Last-Event-ID"] = String(last);
      const response = await fetch(orgPath("/events"), { headers, signal });
      if (response.status === 410) { last = null; refreshSoon(); continue; }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      setLive(true);
      failures = 0;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          const id = block.split("\n").find((l) => l.startsWith("id:"));
          if (id) last = Number(id.slice(3).trim());
          if (data) applyEvent(JSON.parse(data));
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      failures++;
    }
    setLive(false);
    await new Promise((ok) => setTimeout(ok, Math.min(30000, 1000 * 2 ** failures)));
  }
}

function setLive(on) {
  $("live").textContent = on ? "live" : "polling";
  $("live").classList.toggle("on", on);
  // Without the stream, poll the page that is shown.
  clearInterval(state.poll);
  state.poll = on ? null : setInterval(() => { if (!$("store").hidden) loadFiles(); }, 3000);
}

function startEvents() {
  stopEvents();
  const controller = new AbortController();
  state.stream = controller;
  follow(controller.signal);
}

function stopEvents() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  clearInterval(state.poll);
  $("live").textContent = "offline";
  $("live").classList.remove("on");
}

// ---- routing ------------------------------------------------------------------------------

async function route() {
  if (!state.key) return show("sign-in");
  try {
    if (!state.org) await signIn(state.key);
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    if (parts[0] === "stores" && parts[2] === "files" && parts[3]) await showFile(parts[1], parts[3]);
    else if (parts[0] === "stores" && parts[1]) await showStore(parts[1]);
    else { state.store = null; await showStores(); }
  } catch (err) {
    say(err.message);
  }
}

window.addEventListener("hashchange", route);
route();
