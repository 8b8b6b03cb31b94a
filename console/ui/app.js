// The gtc console: polls the node's view with ETags (an unchanged view is a
// 304 and costs nothing to render) and sends every action to the /v1 admin
// API with the caller's own token. The token lives in sessionStorage: it is
// gone when the tab closes. Nothing here builds HTML from data: every value
// goes in through textContent, so a name in the state cannot inject markup.

const POLL_MS = 1000;
const TOKEN_KEY = "gtc-console-token";
const ENV_KEY = "gtc-console-env";

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  env: sessionStorage.getItem(ENV_KEY) || "local",
  viewTag: null,
  view: null,
  rendered: new Map(), // deployment id -> the JSON it was last drawn from
  timer: null,
  firstRender: null,
  messages: new Map(), // deployment id -> [text, class] of its last action
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const percent = (bps) => `${(bps / 100).toFixed(2)} %`;
const short = (id) => (id ? `${id.slice(0, 6)}…${id.slice(-4)}` : "");
// "sha256:<64 hex>" shown as its first 12 hex digits.
const shortDigest = (digest) => (digest ? digest.replace(/^sha256:/, "").slice(0, 12) : "");

function setStatus(text, kind = "") {
  const status = $("status");
  status.textContent = text;
  status.className = kind;
}

function showSignIn(message = "") {
  clearTimeout(state.timer);
  $("main").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("env").value = state.env;
  $("sign-in-error").textContent = message;
  setStatus("signed out");
}

function randomKey() {
  // crypto.getRandomValues works on plain http too (randomUUID needs a
  // secure context).
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${state.token}` }, options.headers || {});
  return fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
}

async function poll() {
  clearTimeout(state.timer);
  try {
    const headers = state.viewTag ? { "If-None-Match": state.viewTag } : {};
    const response = await api(`/ui/api/view/${encodeURIComponent(state.env)}`, { headers });
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      showSignIn(body.error ? body.error.message : `refused (${response.status})`);
      return;
    }
    if (response.status === 200) {
      state.viewTag = response.headers.get("ETag");
      state.view = await response.json();
      render(state.view);
      setStatus(`live · generation ${state.view.generation}`, "ok");
    } else if (response.status !== 304) {
      const body = await response.json().catch(() => ({}));
      setStatus(body.error ? body.error.message : `the view answered ${response.status}`, "error");
    }
  } catch (error) {
    setStatus(`the node did not answer: ${error}`, "error");
  }
  state.timer = setTimeout(poll, POLL_MS);
}

function render(view) {
  $("sign-in").hidden = true;
  $("main").hidden = false;
  $("sign-out").hidden = false;
  document.body.dataset.role = view.role;
  $("summary").textContent =
    `${view.environment_id} · node ${view.node} · role ${view.role}`;
  renderRouters(view);
  renderCluster(view);
  renderDeployments(view);
  renderAudit(view);
  if (state.firstRender === null) {
    state.firstRender = performance.now();
    window.gtcFirstRender = state.firstRender;
    document.body.dataset.ready = "true";
  }
}

function replaceRows(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows);
}

function renderRouters(view) {
  const rows = view.routers.map((router) => {
    const observed = Object.values(router.observed || {}).reduce(
      (sum, revisions) => sum + Object.values(revisions).reduce((s, r) => s + r.requests, 0),
      0,
    );
    return el(
      "tr",
      { "data-router": router.name, class: router.freshness },
      el("td", { text: router.name }),
      el("td", { class: "generation", text: router.generation ?? "?" }),
      el("td", { text: router.live ? "live" : "dead" }),
      el("td", { text: router.role || "" }),
      el("td", { text: router.applied_index ?? "" }),
      el("td", { text: router.instances_healthy ?? "" }),
      el("td", {
        text: router.unreachable
          ? `unreachable: ${router.unreachable}`
          : `${observed} requests in ${Math.round(router.observed_ms / 1000)} s`,
      }),
    );
  });
  replaceRows($("routers"), rows);
}

function renderCluster(view) {
  const cluster = view.cluster;
  $("cluster-section").hidden = !cluster;
  if (!cluster) return;
  $("cluster-summary").textContent =
    `leader ${cluster.leader ?? "none"} · term ${cluster.term} · committed ${cluster.committed_index ?? 0} · applied here ${cluster.applied_index ?? 0} (${cluster.node}, ${cluster.state})`;
  const rows = cluster.members.map((member) =>
    el(
      "tr",
      { "data-member": member.name, class: member.leader ? "leader" : "" },
      el("td", { text: member.name }),
      el("td", { text: member.node_id }),
      el("td", { text: member.voter ? "voter" : "learner" }),
      el("td", { text: member.leader ? "leader" : "" }),
      el("td", { text: member.gossip_live === null ? "?" : member.gossip_live ? "live" : "dead" }),
      el("td", { text: member.applied_index ?? "?" }),
      el("td", { class: "lag", text: member.lag ?? "?" }),
      el("td", { text: member.admin_addr }),
    ),
  );
  replaceRows($("members"), rows);
}

function renderDeployments(view) {
  const env = view.environment;
  const container = $("deployments");
  $("deployment-count").textContent = `(${env.bundles.length})`;
  const splits = new Map(env.traffic_splits.map((s) => [s.deployment_id, s]));
  const revisionsOf = new Map();
  for (const revision of env.revisions) {
    if (!revisionsOf.has(revision.deployment_id)) revisionsOf.set(revision.deployment_id, []);
    revisionsOf.get(revision.deployment_id).push(revision);
  }
  const seen = new Set();
  let previous = null;
  for (const deployment of env.bundles) {
    const id = deployment.deployment_id;
    seen.add(id);
    const input = {
      deployment,
      split: splits.get(id) || null,
      revisions: revisionsOf.get(id) || [],
      routers: view.routers.map((r) => [r.name, (r.observed || {})[id] || null]),
      instances: (revisionsOf.get(id) || []).map((r) => view.instances[r.revision_id] || []),
      role: view.role,
      etag: view.etag,
    };
    const key = JSON.stringify(input);
    let section = container.querySelector(`[data-deployment="${id}"]`);
    // A split being edited is not redrawn under the operator's hands.
    const editing = section && section.querySelector("input.dirty");
    if (!section || (state.rendered.get(id) !== key && !editing)) {
      const fresh = renderDeployment(input);
      if (section) section.replaceWith(fresh);
      else container.insertBefore(fresh, previous ? previous.nextSibling : container.firstChild);
      section = fresh;
      state.rendered.set(id, key);
    }
    previous = section;
  }
  for (const section of Array.from(container.children)) {
    if (!seen.has(section.dataset.deployment)) {
      state.rendered.delete(section.dataset.deployment);
      section.remove();
    }
  }
}

function renderDeployment({ deployment, split, revisions, routers, instances, role }) {
  const id = deployment.deployment_id;
  const operator = role === "operator" || role === "admin";
  const routes = deployment.route_binding || {};
  const where = [
    ...(routes.hosts || []),
    ...(routes.path_prefixes || []),
  ].join(" ") || "every host and path";
  const section = el(
    "section",
    { class: "deployment", "data-deployment": id },
    el("h3", {}, deployment.bundle_id, " ", el("small", { text: `${id} · ${deployment.status} · ${where}` })),
  );
  const weights = new Map((split ? split.entries : []).map((e) => [e.revision_id, e]));
  const splitTable = el(
    "table",
    { class: "split", "data-split": id },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { text: "revision" }),
        el("th", { text: "desired" }),
        ...routers.map(([name]) => el("th", { text: `observed on ${name}` })),
        operator ? el("th", { text: "new weight %" }) : null,
      ),
    ),
  );
  const body = el("tbody");
  const candidates = revisions.filter((r) => r.lifecycle === "ready" || weights.has(r.revision_id));
  for (const revision of candidates) {
    const entry = weights.get(revision.revision_id);
    body.append(
      el(
        "tr",
        { "data-split-revision": revision.revision_id },
        el("td", { text: short(revision.revision_id), title: revision.revision_id }),
        el("td", { class: "desired", text: entry ? percent(entry.weight_bps) + (entry.tag ? ` (${entry.tag})` : "") : "0.00 %" }),
        ...routers.map(([name, observed]) => {
          const seen = observed && observed[revision.revision_id];
          return el("td", {
            class: "observed",
            "data-router": name,
            text: seen ? `${percent(seen.share_bps)} (${seen.requests})` : "–",
          });
        }),
        operator && revision.lifecycle === "ready"
          ? el(
              "td",
              {},
              el("input", {
                type: "number",
                min: "0",
                max: "100",
                step: "0.01",
                "data-weight-for": revision.revision_id,
                value: entry ? (entry.weight_bps / 100).toString() : "0",
                oninput: (event) => event.target.classList.add("dirty"),
                onchange: (event) => event.target.classList.add("dirty"),
                onfocus: (event) => event.target.classList.add("dirty"),
              }),
            )
          : operator
            ? el("td")
            : null,
      ),
    );
  }
  splitTable.append(body);
  section.append(el("h4", { text: split ? `Split (generation ${split.generation})` : "No split yet" }));
  if (candidates.length) section.append(splitTable);
  if (operator && candidates.length) {
    const [text, kind] = state.messages.get(id) || ["", ""];
    const message = el("span", { class: `message ${kind}`, text });
    message.dataset.messageFor = id;
    section.append(
      el(
        "p",
        { class: "actions" },
        el("button", { type: "button", "data-action": "set-split", onclick: () => setSplit(section, id, message) }, "Set split"),
        split && split.previous
          ? el("button", { type: "button", "data-action": "rollback", onclick: () => rollback(id, message) }, "Roll back")
          : null,
        message,
      ),
    );
  }
  const table = el(
    "table",
    { class: "revisions" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ...["revision", "lifecycle", "bundle digest", "instances", "created", ""].map((t) => el("th", { text: t })),
      ),
    ),
  );
  const rows = el("tbody");
  revisions.forEach((revision, index) => {
    const running = instances[index];
    const actions = el("td", { class: "row-actions" });
    actions.append(
      el("button", { type: "button", "data-action": "logs", onclick: () => showLogs(section, revision.revision_id) }, "Logs"),
    );
    if (operator && revision.lifecycle === "ready" && !weights.has(revision.revision_id)) {
      actions.append(
        el(
          "button",
          { type: "button", "data-action": "drain", onclick: () => drain(revision.revision_id, actions, id) },
          "Drain",
        ),
      );
    }
    rows.append(
      el(
        "tr",
        { "data-revision": revision.revision_id, class: revision.lifecycle },
        el("td", { text: revision.revision_id }),
        el("td", { class: "lifecycle", text: revision.lifecycle + (revision.failure_reason ? `: ${revision.failure_reason}` : "") }),
        el("td", { class: "digest", text: shortDigest(revision.bundle_digest), title: revision.bundle_digest }),
        el("td", { class: "instances", text: running.length ? running.map((i) => `${i.addr} (${i.node})`).join(", ") : "none ready" }),
        el("td", { text: revision.created_at }),
        actions,
      ),
    );
  });
  table.append(rows);
  section.append(el("h4", { text: `Revisions (${revisions.length})` }), table);
  return section;
}

function renderAudit(view) {
  const status = view.audit.status;
  const chain = $("chain");
  chain.textContent = status.problem
    ? `chain BROKEN: ${status.problem} (${status.events} events)`
    : `chain intact and anchored (${status.events} events)`;
  chain.className = status.problem ? "error" : "ok";
  const rows = view.audit.events
    .slice()
    .reverse()
    .map((event) =>
      el(
        "tr",
        {},
        el("td", { text: event.ts }),
        el("td", { text: event.actor ? event.actor.id || event.actor.kind || JSON.stringify(event.actor) : "" }),
        el("td", { text: `${event.noun} ${event.verb}` }),
        el("td", { text: event.authorization ? event.authorization.decision : "" }),
        el("td", { text: event.result ? event.result.status || event.result.kind || JSON.stringify(event.result) : "" }),
        el("td", { text: event.new_generation ?? "" }),
      ),
    );
  replaceRows($("audit"), rows);
}

function say(message, text, kind) {
  message.textContent = text;
  message.className = `message ${kind}`;
  if (message.dataset.messageFor) state.messages.set(message.dataset.messageFor, [text, kind]);
}

async function change(path, body, message) {
  say(message, "sending…", "");
  const response = await api(path, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "If-Match": `"${state.view.etag}"`,
      "Idempotency-Key": randomKey(),
    },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.ok) {
    say(message, `done: generation ${answer.generation}`, "ok");
    state.viewTag = null;
    return true;
  }
  say(message, answer.error ? `${answer.error.kind}: ${answer.error.message}` : `refused (${response.status})`, "error");
  return false;
}

function setSplit(section, deploymentId, message) {
  const entries = Array.from(section.querySelectorAll("input[data-weight-for]")).map((input) => ({
    revision_id: input.dataset.weightFor,
    weight_bps: Math.round(parseFloat(input.value || "0") * 100),
  }));
  const total = entries.reduce((sum, e) => sum + e.weight_bps, 0);
  if (total !== 10000) {
    say(message, `the weights add up to ${percent(total)}; they must make exactly 100 %`, "error");
    return;
  }
  const path = `/v1/environments/${encodeURIComponent(state.env)}/traffic`;
  change(path, { deployment_id: deploymentId, entries: entries.filter((e) => e.weight_bps > 0) }, message).then((ok) => {
    if (ok) {
      // Committed: the section may be redrawn from the new state again.
      for (const input of section.querySelectorAll("input.dirty")) input.classList.remove("dirty");
      state.rendered.delete(deploymentId);
    }
    poll();
  });
}

function rollback(deploymentId, message) {
  const path = `/v1/environments/${encodeURIComponent(state.env)}/traffic/rollback`;
  change(path, { deployment_id: deploymentId }, message).then(poll);
}

function drain(revisionId, cell, deploymentId) {
  const message = el("span", { class: "message" });
  message.dataset.messageFor = deploymentId;
  cell.append(message);
  const path = `/v1/environments/${encodeURIComponent(state.env)}/revisions/${revisionId}/drain`;
  change(path, {}, message).then(poll);
}

async function showLogs(section, revisionId) {
  let box = section.querySelector(`pre[data-logs="${revisionId}"]`);
  if (box) {
    box.remove();
    return;
  }
  box = el("pre", { class: "logs", "data-logs": revisionId, text: "loading…" });
  section.append(box);
  const response = await api(`/ui/api/logs/${encodeURIComponent(state.env)}/${revisionId}`);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    box.textContent = answer.error ? answer.error.message : `refused (${response.status})`;
    return;
  }
  box.textContent = answer.files.length
    ? answer.files.map((f) => `== ${f.name} (on ${answer.node})\n${f.lines.join("\n")}`).join("\n\n")
    : `no instance of this revision has logged on ${answer.node} (other members keep their own logs)`;
}

$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  state.env = $("env").value.trim() || "local";
  sessionStorage.setItem(TOKEN_KEY, state.token);
  sessionStorage.setItem(ENV_KEY, state.env);
  $("token").value = "";
  state.viewTag = null;
  state.rendered.clear();
  $("deployments").replaceChildren();
  setStatus("loading…");
  poll();
});

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.view = null;
  state.viewTag = null;
  showSignIn();
});

if (state.token) poll();
else showSignIn();
