// The Ensemble dashboard: polls this node's admin API and draws what it answers.
//
// Everything is drawn with DOM calls and textContent (never HTML from data). The token, if
// the page was opened as /#token=TOKEN, is kept in this tab's sessionStorage and sent as a
// bearer header; it never travels in a URL the server sees.

"use strict";

(function () {
  const REFRESH_MS = 1000;
  const TOKEN_KEY = "ensemble.admin.token";
  const ENDPOINTS = ["status", "members", "leases", "trees", "apps", "names", "locks"];

  // Why the token in the address could not be read, shown in the notice until it can.
  let tokenProblem = null;
  let token = readToken();
  const drawn = new Map(); // what each section last drew, to redraw on changes only
  let refreshes = 0;

  function readToken() {
    tokenProblem = null;
    const match = /(?:^#|&)token=([^&]*)/.exec(window.location.hash);
    if (match) {
      let value;
      try {
        value = decodeURIComponent(match[1]);
      } catch (_) {
        // A stray % (say, in a token pasted as it is): the page keeps running and says so.
        tokenProblem =
          "The token in this page's address (#token=…) is not valid percent-encoding: " +
          "write each % in it as %25 (and & as %26).";
        return storedToken();
      }
      try {
        window.sessionStorage.setItem(TOKEN_KEY, value);
      } catch (_) {
        // Storage may be disabled; the token still works until the page is reloaded.
      }
      return value;
    }
    return storedToken();
  }

  function storedToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  class ApiFailure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function get(endpoint) {
    const headers = { Accept: "application/json" };
    if (token) {
      headers.Authorization = "Bearer " + token;
    }
    let response;
    try {
      response = await fetch("api/v1/" + endpoint, { headers, cache: "no-store" });
    } catch (e) {
      throw new ApiFailure(0, "cannot reach the admin server: " + e.message);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error : response.status + " " + response.statusText;
      throw new ApiFailure(response.status, message);
    }
    return body;
  }

  // --- small DOM helpers -------------------------------------------------------------------

  // Children as DOM nodes: strings become text, null, undefined and false are left out.
  function nodes(children) {
    return children
      .flat()
      .filter((child) => child !== undefined && child !== null && child !== false)
      .map((child) => (child instanceof Node ? child : document.createTextNode(String(child))));
  }

  function put(target, ...children) {
    target.replaceChildren(...nodes(children));
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) {
        continue;
      }
      if (key === "class") {
        node.className = value;
      } else {
        node.setAttribute(key, String(value));
      }
    }
    node.append(...nodes(children));
    return node;
  }

  const byId = (id) => document.getElementById(id);

  function badge(text, kind) {
    return el("span", { class: "badge " + (kind || "") }, text);
  }

  // A node id `name#incarnation`, shown by its name; the incarnation is in the tooltip.
  function nodeId(id) {
    const [name, incarnation] = String(id).split("#");
    return el("span", { class: "node-id", title: id }, name, incarnation ? el("span", { class: "incarnation" }, "#" + incarnation) : null);
  }

  function chips(map) {
    const entries = Object.entries(map || {});
    if (entries.length === 0) {
      return el("span", { class: "muted" }, "–");
    }
    return entries.map(([key, value]) => el("span", { class: "chip" }, key + "=" + value));
  }

  function emptyRow(table, text) {
    const columns = table.tHead.rows[0].cells.length;
    return el("tr", { class: "empty" }, el("td", { colspan: columns }, text));
  }

  function fillTable(table, rows, emptyText) {
    const body = table.tBodies[0];
    body.replaceChildren(...(rows.length ? rows : [emptyRow(table, emptyText)]));
  }

  function sectionError(sectionId, message) {
    const section = byId(sectionId);
    const p = section.querySelector(".section-error");
    p.textContent = message || "";
    p.hidden = !message;
    section.classList.toggle("failed", Boolean(message));
  }

  // Draws `key` with `draw(data)` unless the same data was drawn last time.
  function redraw(key, data, draw) {
    const text = JSON.stringify(data);
    if (drawn.get(key) === text) {
      return;
    }
    drawn.set(key, text);
    draw(data);
  }

  function lower(name) {
    // "OneForOne" -> "one for one", "Running" -> "running"
    return String(name).replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
  }

  function duration(secs) {
    const h = Math.floor(secs / 3600);
    const m = Math.floor((secs % 3600) / 60);
    const s = secs % 60;
    return h > 0 ? `${h}h ${m}m` : m > 0 ? `${m}m ${s}s` : `${s}s`;
  }

  // --- sections ----------------------------------------------------------------------------

  function drawStatus({ status, registry: hasRegistry }) {
    put(
      byId("node-name"),
      el("strong", {}, status.node),
      el("span", { class: "muted" }, "#" + status.incarnation),
    );
    byId("node").setAttribute("data-node", status.node);
    byId("cluster-name").textContent = status.cluster || "none (a node on its own)";
    const registry = status.registry;
    if (hasRegistry) {
      put(
        byId("leader"),
        registry.leader || el("span", { class: "muted" }, "unknown"),
        registry.fenced ? badge("fenced", "bad") : null,
      );
      drawVoters(registry);
      put(
        byId("revision"),
        String(registry.revision),
        registry.synced ? null : el("span", { class: "muted" }, " (catching up)"),
      );
    } else {
      put(byId("leader"), el("span", { class: "muted" }, "none (no registry)"));
      put(byId("voters"), el("span", { class: "muted" }, "–"));
      put(byId("revision"), el("span", { class: "muted" }, "–"));
    }
    byId("actor-count").textContent = String(status.actors);
    byId("uptime").textContent = duration(status.uptime_secs);
    document.title = status.node + " · " + (status.cluster || "Ensemble");
  }

  // How many nodes vote, and the count the leader keeps them at: an operator's (`ensemble
  // voters count`), or else the nodes' `voters` setting. An empty list of voters means the
  // leader did not answer in time.
  function drawVoters(registry) {
    const voters = registry.voters || [];
    const set = registry.voter_count;
    const target = byId("voters");
    target.setAttribute("data-voters", voters.length > 0 ? String(voters.length) : "unknown");
    target.setAttribute("data-count", set == null ? "settings" : String(set));
    target.title = voters.length > 0 ? voters.join(", ") : "";
    put(
      target,
      voters.length > 0 ? String(voters.length) : el("span", { class: "muted" }, "unknown"),
      el("span", { class: "muted" }, set == null ? " (count from node settings)" : ` (count ${set} set)`),
    );
  }

  function drawMembers({ members, leases, leader }) {
    const ttl = new Map((leases || []).map((l) => [l.node + "#" + l.incarnation, l]));
    const rows = members.map((m) => {
      const lease = ttl.get(m.node + "#" + m.incarnation);
      return el(
        "tr",
        {
          "data-node": m.node,
          "data-status": m.status,
          "data-session": m.session ? "open" : "none",
          "data-voter": m.voter === true ? "yes" : m.voter === false ? "no" : "unknown",
        },
        el(
          "td",
          {},
          el("strong", {}, m.node),
          el("span", { class: "muted" }, "#" + m.incarnation),
          m.node === leader ? badge("leader", "info") : null,
          m.voter ? badge("voter", "info") : null,
        ),
        el("td", {}, badge(m.status, "status-" + m.status)),
        el(
          "td",
          {},
          m.session ? badge("open", "good") : badge("none", "bad"),
          lease ? el("span", { class: "muted" }, ` ttl ${lease.ttl_ms} ms`) : null,
        ),
        el("td", { class: "mono" }, m.listen || "–"),
        el("td", {}, chips(m.resources)),
        el("td", {}, chips(m.labels)),
      );
    });
    byId("members-count").textContent = String(members.length);
    fillTable(byId("members"), rows, "no members");
  }

  function drawTree(tree) {
    const children = tree.children.map((child) => {
      const state = lower(child.state);
      return el(
        "li",
        { class: "child", "data-child": child.id, "data-state": state, "data-kind": lower(child.kind) },
        el(
          "div",
          { class: "child-row" },
          el("span", { class: "state-dot state-" + state, title: state }),
          el("span", { class: "child-id" }, child.id),
          badge(state, "state-" + state),
          el("span", { class: "tag" }, lower(child.kind)),
          el("span", { class: "tag" }, child.restart),
          child.restarts > 0 ? badge("restarted " + child.restarts + "×", "warn") : null,
          el("span", { class: "mono muted" }, child.actor || ""),
        ),
        child.tree ? drawTree(child.tree) : null,
      );
    });
    return el(
      "div",
      { class: "tree", "data-supervisor": tree.name, "data-actor": tree.actor },
      el(
        "div",
        { class: "tree-head" },
        el("span", { class: "supervisor-name" }, tree.name),
        el("span", { class: "tag" }, lower(tree.strategy)),
        el("span", { class: "mono muted" }, tree.actor),
      ),
      children.length ? el("ul", { class: "children" }, children) : el("p", { class: "muted" }, "no children"),
    );
  }

  function drawTrees(trees) {
    const box = byId("trees");
    byId("trees-count").textContent = String(trees.length);
    if (trees.length === 0) {
      box.replaceChildren(el("p", { class: "empty" }, "No supervision trees on this node."));
      return;
    }
    box.replaceChildren(...trees.map(drawTree));
  }

  function drawApps(apps) {
    const box = byId("apps");
    byId("apps-count").textContent = String(apps.length);
    if (apps.length === 0) {
      box.replaceChildren(el("p", { class: "empty" }, "No apps deployed."));
      return;
    }
    box.replaceChildren(
      ...apps.map((app) => {
        const statusOf = new Map(((app.status && app.status.roles) || []).map((r) => [r.name, r]));
        const rows = app.spec.roles.map((role) => {
          const status = statusOf.get(role.name);
          const running = status ? Object.values(status.running).reduce((a, b) => a + b, 0) : 0;
          const wanted = status ? status.wanted : role.instances;
          const state = !status ? "waiting" : running >= wanted ? "ok" : "short";
          return el(
            "tr",
            { "data-role": role.name, "data-state": state },
            el("td", {}, el("strong", {}, role.name), role.singleton ? badge("singleton", "info") : null),
            el("td", { class: "mono" }, role.module),
            el("td", {}, badge(running + "/" + wanted, state === "ok" ? "good" : "warn")),
            el(
              "td",
              {},
              status
                ? Object.entries(status.running).map(([node, n]) =>
                    el("span", { class: "chip", "data-node": node }, n > 1 ? `${node} ×${n}` : node),
                  )
                : el("span", { class: "muted" }, "–"),
            ),
            el("td", { class: "problem" }, (status && status.problem) || ""),
          );
        });
        return el(
          "div",
          { class: "app", "data-app": app.spec.name },
          el("h3", {}, app.spec.name, app.status ? null : el("span", { class: "muted" }, " waiting for the app controller")),
          el(
            "table",
            {},
            el("thead", {}, el("tr", {}, ["role", "module", "running", "nodes", "problem"].map((h) => el("th", {}, h)))),
            el("tbody", {}, rows),
          ),
        );
      }),
    );
  }

  function drawNames(names) {
    byId("names-count").textContent = String(names.length);
    const rows = names.map((n) =>
      el(
        "tr",
        { "data-name": n.name },
        el("td", { class: "mono" }, n.name),
        el("td", {}, nodeId(n.node)),
        el("td", { class: "mono muted actor" }, n.actor),
      ),
    );
    fillTable(byId("names"), rows, "no global names");
  }

  function drawLocks(locks) {
    byId("locks-count").textContent = String(locks.length);
    const rows = locks.map((l) =>
      el(
        "tr",
        { "data-lock": l.name, "data-held": l.holder ? "yes" : "no", "data-holder": l.holder },
        el("td", { class: "mono" }, l.name),
        el("td", {}, l.holder ? nodeId(l.holder) : el("span", { class: "muted" }, "free")),
        el("td", { class: "mono" }, l.holder ? String(l.token) : "–"),
        el(
          "td",
          {},
          l.waiters.length
            ? l.waiters.map((w) => el("span", { class: "chip", "data-waiter": w }, nodeId(w)))
            : el("span", { class: "muted" }, "–"),
        ),
      ),
    );
    fillTable(byId("locks"), rows, "no locks held or waited for");
  }

  // --- the loop ----------------------------------------------------------------------------

  // Shows `message` (none: hides the notice), after the token's problem if there is one.
  function showNotice(message) {
    const text = [tokenProblem, message].filter(Boolean).join(" ");
    const notice = byId("notice");
    notice.textContent = text;
    notice.hidden = !text;
  }

  function setConnection(state, text) {
    byId("connection").setAttribute("data-state", state);
    byId("connection-text").textContent = text;
  }

  // Whether a failure of /api/v1/names says the node has no registry; any other 503 (too
  // many requests at once, say) passes. The words are those of the server's `registry`
  // check (src/admin/handlers.rs).
  function lacksRegistry(failure) {
    return Boolean(failure && failure.status === 503 && /has no registry/.test(failure.message));
  }

  function apply(results) {
    const answers = {};
    const failures = {};
    ENDPOINTS.forEach((endpoint, i) => {
      const result = results[i];
      if (result.status === "fulfilled") {
        answers[endpoint] = result.value;
      } else {
        failures[endpoint] = result.reason;
      }
    });
    const all = Object.values(failures);
    const unauthorized = all.find((f) => f.status === 401);
    const unreachable = all.find((f) => f.status === 0);
    if (unauthorized) {
      setConnection("refused", "token needed");
      const origin = window.location.origin;
      showNotice(
        (token
          ? "The token in this page's address was refused"
          : "This admin server needs its token") +
          `: open the dashboard as ${origin}/#token=TOKEN, with the node's admin.token.`,
      );
      return false;
    }
    if (unreachable && all.length === ENDPOINTS.length) {
      setConnection("offline", "offline");
      showNotice(unreachable.message + " (is the node running?) — retrying every second.");
      return false;
    }
    showNotice(null);

    const sections = [
      [
        "status",
        "members-section",
        () =>
          answers.status &&
          redraw(
            "status",
            { status: answers.status, registry: !lacksRegistry(failures.names) },
            drawStatus,
          ),
      ],
      [
        "members",
        "members-section",
        () =>
          redraw(
            "members",
            {
              members: answers.members,
              leases: answers.leases || [],
              leader: answers.status ? answers.status.registry.leader : null,
            },
            drawMembers,
          ),
      ],
      ["trees", "trees-section", () => redraw("trees", answers.trees, drawTrees)],
      ["apps", "apps-section", () => redraw("apps", answers.apps, drawApps)],
      ["names", "names-section", () => redraw("names", answers.names, drawNames)],
      ["locks", "locks-section", () => redraw("locks", answers.locks, drawLocks)],
    ];
    for (const [endpoint, sectionId, draw] of sections) {
      if (endpoint === "status") {
        draw();
        continue;
      }
      const failure = failures[endpoint];
      if (failure) {
        sectionError(sectionId, failure.message);
        drawn.delete(endpoint);
        continue;
      }
      sectionError(sectionId, null);
      draw();
    }
    const failed = Object.keys(failures).length;
    setConnection(failed ? "partial" : "live", failed ? "live, some parts unavailable" : "live");
    return true;
  }

  async function refresh() {
    try {
      const results = await Promise.allSettled(ENDPOINTS.map(get));
      if (apply(results)) {
        refreshes += 1;
        document.body.setAttribute("data-refreshes", String(refreshes));
        byId("updated").textContent = "Last update " + new Date().toLocaleTimeString() + ".";
      }
    } catch (e) {
      setConnection("offline", "error");
      showNotice("The dashboard failed to draw the node's answer: " + e.message);
    } finally {
      window.setTimeout(refresh, REFRESH_MS);
    }
  }

  // A token pasted into the address bar (#token=...) applies from the next refresh.
  window.addEventListener("hashchange", () => {
    token = readToken();
  });

  refresh();
})();
