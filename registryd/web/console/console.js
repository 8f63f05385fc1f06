// registryd web console: reads ../debug/console (and ../debug/endpointz, ../debug/history)
// and renders it.  Read-only.  Every text from the daemon is put in with textContent or
// SVG text nodes, never parsed as HTML: registry data and proxy ids are untrusted.
"use strict";

(function () {
  const POLL_MS = 2000; // between refreshes while the daemon answers
  const MAX_BACKOFF_MS = 30000; // longest wait between refreshes while it does not
  const ROWS = 500; // rows shown per table; a search narrows them
  const HISTORY_EVERY = 5; // refreshes between two reads of /debug/history
  const RERENDER_EVERY = 5; // refreshes between two renders of an unchanged answer
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    data: null,
    etag: null,
    delay: POLL_MS,
    refreshes: 0,
    selectedPush: null,
    openService: null,
    history: false,
  };

  const $ = (id) => document.getElementById(id);

  // el("td", {class: "x"}, "text", child...): an element; strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.dataset[camel(key.slice(5))] = String(value);
      else if (key === "title") node.title = String(value);
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) append(node, child);
    return node;
  }

  function append(node, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) child.forEach((c) => append(node, c));
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }

  function camel(name) {
    return name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function replaceRows(body, rows) {
    body.replaceChildren(...rows);
  }

  function badge(text, cls) {
    return el("span", { class: "badge " + (cls || text) }, text);
  }

  function since(iso) {
    if (!iso) return "";
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " d ago";
  }

  function when(iso) {
    return iso ? el("span", { title: iso, class: "nowrap" }, since(iso)) : "";
  }

  function ms(value) {
    if (value === null || value === undefined) return "";
    return value < 1000 ? value.toFixed(1) + " ms" : (value / 1000).toFixed(2) + " s";
  }

  function query() {
    return $("search").value.trim().toLowerCase();
  }

  function more(id, shown, total) {
    $(id).textContent = shown < total ? `showing ${shown} of ${total}: search to narrow` : "";
  }

  // -- registries ------------------------------------------------------------------------
  function renderRegistries(registries) {
    replaceRows(
      $("registries-body"),
      registries.map((r) =>
        el(
          "tr",
          { "data-registry": r.registry },
          el("td", { class: "mono nowrap" }, r.registry),
          el("td", {}, r.type),
          el("td", { class: "num" }, r.priority),
          el("td", {}, badge(r.synced ? "synced" : "not synced", r.synced ? "yes" : "no")),
          el("td", {}, when(r.lastSync)),
          el(
            "td",
            { class: "error-text" },
            r.lastError || "",
            r.errors ? ` (${r.errors} source errors)` : "",
            r.restarts ? ` ${r.restarts} restarts` : "",
            r.nextRetry ? `; retry ${r.nextRetry}` : ""
          ),
          el("td", { class: "num" }, r.services),
          el("td", { class: "num" }, r.endpoints),
          el("td", {}, r.exported ? "yes" : "no")
        )
      )
    );
  }

  // -- services --------------------------------------------------------------------------
  function renderServices(services) {
    const q = query();
    const matching = q ? services.filter((s) => s.hostname.toLowerCase().includes(q)) : services;
    const rows = [];
    for (const s of matching.slice(0, ROWS)) {
      const conflict = s.conflict
        ? `${s.conflict.fields.join(", ")} differ (${s.conflict.losers.join(", ")} lost)`
        : "";
      rows.push(
        el(
          "tr",
          {
            class: "clickable" + (state.openService === s.hostname ? " selected" : ""),
            "data-hostname": s.hostname,
            onclick: () => toggleService(s.hostname),
          },
          el("td", { class: "mono" }, s.hostname),
          el("td", {}, s.namespace),
          el("td", {}, s.ports.join(", ")),
          el("td", { class: "mono" }, s.registry),
          el("td", { class: "mono" }, s.registries.join(", ")),
          el("td", { class: "num" }, `${s.served} / ${s.endpoints}`),
          el("td", { class: "error-text" }, conflict)
        )
      );
      if (state.openService === s.hostname) rows.push(serviceDetailRow(s.hostname));
    }
    replaceRows($("services-body"), rows);
    $("services-count").textContent = `${services.length}`;
    more("services-more", Math.min(matching.length, ROWS), matching.length);
  }

  const endpointCache = new Map(); // hostname -> rendered detail (while it stays open)

  function serviceDetailRow(hostname) {
    const cell = el("td", { colspan: 7 }, endpointCache.get(hostname) || "loading endpoints…");
    return el("tr", { class: "detail-row" }, cell);
  }

  async function toggleService(hostname) {
    state.openService = state.openService === hostname ? null : hostname;
    endpointCache.clear();
    renderServices(state.data.services);
    if (!state.openService) return;
    try {
      const response = await fetch("../debug/endpointz?hostname=" + encodeURIComponent(hostname));
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      endpointCache.set(hostname, endpointDetail(await response.json(), hostname));
    } catch (error) {
      endpointCache.set(hostname, el("span", { class: "error-text" }, String(error)));
    }
    if (state.openService === hostname) renderServices(state.data.services);
  }

  function endpointDetail(data, hostname) {
    const box = el("div", { class: "detail" });
    const byNamespace = data[hostname] || {};
    for (const [namespace, registries] of Object.entries(byNamespace)) {
      for (const [registry, entry] of Object.entries(registries)) {
        const a = entry.attributes || {};
        box.appendChild(
          el(
            "h3",
            {},
            `${registry} (namespace ${namespace || "-"}, priority ${a.priority}) `,
            a.winner ? badge("attributes won", "yes") : "",
            a.conflictingFields ? badge("conflict: " + a.conflictingFields.join(", "), "no") : ""
          )
        );
        box.appendChild(el("div", { class: "hint" }, a.rule || ""));
        box.appendChild(
          el(
            "table",
            {},
            el(
              "thead",
              {},
              el(
                "tr",
                {},
                ["address", "service port", "health", "locality", "weight", "network"].map((h) =>
                  el("th", {}, h)
                )
              )
            ),
            el(
              "tbody",
              {},
              (entry.endpoints || []).map((e) =>
                el(
                  "tr",
                  {},
                  el("td", { class: "mono" }, `${e.address}:${e.port}`),
                  el("td", {}, e.servicePort),
                  el("td", {}, e.health),
                  el("td", {}, e.locality),
                  el("td", { class: "num" }, e.weight),
                  el("td", {}, e.network)
                )
              )
            )
          )
        );
      }
    }
    return box;
  }

  // -- proxies ---------------------------------------------------------------------------
  function renderProxies(proxies) {
    const q = query();
    const matching = q ? proxies.filter((p) => p.proxyID.toLowerCase().includes(q)) : proxies;
    const rows = [];
    for (const p of matching.slice(0, ROWS)) {
      const types = Object.entries(p.types || {});
      rows.push(
        el(
          "tr",
          { "data-proxy": p.proxyID, "data-kind": p.kind, "data-state": p.state, "data-version": p.version },
          el("td", { class: "mono" }, p.proxyID),
          el("td", {}, p.kind),
          el("td", {}, p.worker === undefined ? "" : `${p.worker} (pid ${p.workerPid})`),
          el("td", {}, when(p.connectedAt)),
          el("td", { class: "num" }, p.version),
          el("td", {}, badge(p.state)),
          el(
            "td",
            {},
            types.map(([t, s]) => el("span", { title: s.version || "" }, badge(`${t} ${s.state}`, s.state)))
          )
        )
      );
      for (const [t, s] of types) {
        if (s.error) {
          rows.push(
            el("tr", {}, el("td", { colspan: 7, class: "error-text" }, `${t} NACK: ${s.error}`))
          );
        }
      }
    }
    replaceRows($("proxies-body"), rows);
    $("proxies-count").textContent = `${proxies.length}`;
    more("proxies-more", Math.min(matching.length, ROWS), matching.length);
  }

  // -- pushes ----------------------------------------------------------------------------
  function markClass(p) {
    let cls = "mark " + p.kind + (p.lastAckMs === null || p.lastAckMs === undefined ? " unacked" : "");
    if (p.nacked) cls += " nacked";
    else if (p.pending) cls += " pending";
    if (state.selectedPush === p.version) cls += " selected";
    return cls;
  }

  function renderChart(pushes) {
    const W = 900, H = 220, L = 56, R = 12, T = 10, B = 28;
    const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    box.appendChild(svg("title", {}, "time to the last ACK per push"));
    const times = pushes.map((p) => Date.parse(p.at));
    const t0 = Math.min(...times), t1 = Math.max(...times);
    const span = Math.max(t1 - t0, 1000);
    const top = Math.max(10, ...pushes.map((p) => p.lastAckMs || 0)) * 1.1;
    const x = (t) => (pushes.length > 1 ? L + ((t - t0) / span) * (W - L - R) : (L + W - R) / 2);
    const y = (v) => H - B - (v / top) * (H - T - B);
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      box.appendChild(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      box.appendChild(svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, ms(v)));
    }
    box.appendChild(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    box.appendChild(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    const ticks = pushes.length > 1 ? [[t0, "start"], [t0 + span / 2, "middle"], [t1, "end"]] : [[t0, "middle"]];
    for (const [t, anchor] of ticks) {
      const label = new Date(t).toISOString().slice(11, 19);
      box.appendChild(svg("text", { x: x(t), y: H - 10, "text-anchor": anchor }, label));
    }
    for (const p of pushes) {
      const cx = x(Date.parse(p.at));
      const cy = y(p.lastAckMs || 0);
      const attrs = { class: markClass(p), "data-version": p.version, tabindex: 0 };
      const mark =
        p.kind === "full"
          ? svg("circle", { ...attrs, cx, cy, r: 5 })
          : svg("path", { ...attrs, d: `M${cx} ${cy - 6}L${cx + 6} ${cy}L${cx} ${cy + 6}L${cx - 6} ${cy}Z` });
      mark.appendChild(
        svg(
          "title",
          {},
          `push ${p.version} (${p.kind}) from ${p.registries.join(", ") || "-"}: ` +
            `${p.hostnames} hostnames, last ACK ${ms(p.lastAckMs) || "-"}, ${p.pending || 0} pending`
        )
      );
      mark.addEventListener("click", () => selectPush(p.version));
      box.appendChild(mark);
    }
    $("chart").replaceChildren(box);
  }

  function selectPush(version) {
    state.selectedPush = state.selectedPush === version ? null : version;
    renderPushes(state.data.pushes);
  }

  function pushDetail(p) {
    const list = (items) => el("ul", {}, items.map((i) => el("li", { class: "mono" }, i)));
    return [
      el("h3", {}, `Push ${p.version}: ${p.kind === "full" ? "full" : "endpoints only"}, ${p.at}`),
      el("div", {}, `Trigger registries: ${p.registries.join(", ") || "-"}; ${p.events} events`),
      el("div", {}, `Hostnames: ${p.hostnames}`),
      list(p.sample || []),
      el(
        "div",
        {},
        `Proxies reached: ${p.proxies ?? "-"}, ACKed ${p.acked ?? "-"}, last ACK ${ms(p.lastAckMs) || "-"}`
      ),
      el("h3", {}, `Pending (${p.pending || 0})`),
      list(p.pendingProxies || []),
      el("h3", {}, `NACKed (${p.nacked || 0})`),
      el(
        "ul",
        {},
        (p.nackedProxies || []).map((n) =>
          el("li", {}, el("span", { class: "mono" }, n.proxyID), ": ", el("span", { class: "error-text" }, n.error))
        )
      ),
    ];
  }

  function renderPushes(pushes) {
    if (pushes.length) renderChart(pushes);
    else $("chart").replaceChildren(el("p", { class: "hint" }, "no push yet"));
    const selected = pushes.find((p) => p.version === state.selectedPush);
    const detail = $("push-detail");
    detail.hidden = !selected;
    detail.replaceChildren(...(selected ? pushDetail(selected) : []));
    replaceRows(
      $("pushes-body"),
      pushes.map((p) =>
        el(
          "tr",
          {
            class: "clickable" + (p.version === state.selectedPush ? " selected" : ""),
            "data-push": p.version,
            "data-pending": p.pending ?? "",
            onclick: () => selectPush(p.version),
          },
          el("td", { class: "num" }, p.version),
          el("td", {}, when(p.at)),
          el("td", {}, p.kind),
          el("td", { class: "mono" }, p.registries.join(", ")),
          el("td", { class: "num" }, p.hostnames),
          el("td", { class: "num" }, p.proxies ?? ""),
          el("td", { class: "num" }, p.acked ?? ""),
          el("td", { class: "num" }, p.pending ?? ""),
          el("td", { class: "num" }, p.nacked ?? ""),
          el("td", { class: "num" }, ms(p.lastAckMs))
        )
      )
    );
  }

  // -- changes (/debug/history, when the daemon has it) ----------------------------------
  function cellText(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "object") return JSON.stringify(value).slice(0, 300);
    return String(value);
  }

  // One row per registry change of each push, when the answer has registryd's shape.
  function historyRows(data) {
    if (!Array.isArray(data) || !data.every((e) => e && Array.isArray(e.changes) && e.outcome)) {
      return null;
    }
    const head = ["push", "at", "kind", "registry", "services", "endpoints", "hostnames", "outcome"];
    const rows = [];
    for (const entry of data) {
      const o = entry.outcome;
      const outcome =
        `${o.proxiesAcked}/${o.proxiesReached} ACKed` +
        (o.proxiesNacked ? `, ${o.proxiesNacked} NACKed` : "") +
        (o.pending ? `, ${o.pending} pending` : "") +
        (o.lastAckMs !== null && o.lastAckMs !== undefined ? `, last ACK ${ms(o.lastAckMs)}` : "");
      for (const c of entry.changes) {
        const s = c.services || {};
        const e = c.endpoints || {};
        const hosts = (c.hostnames || []).join(" ");
        const more = c.hostnamesTotal > (c.hostnames || []).length ? ` (+${c.hostnamesTotal - c.hostnames.length})` : "";
        rows.push(
          el(
            "tr",
            { "data-push": entry.version, "data-registry": c.registry, "data-acked": o.proxiesAcked, "data-reached": o.proxiesReached },
            el("td", { class: "num" }, entry.version),
            el("td", {}, when(entry.at)),
            el("td", {}, entry.kind),
            el("td", { class: "mono" }, c.registry + (c.revision ? ` @${c.revision}` : "")),
            el("td", { class: "mono" }, `+${s.added || 0} -${s.removed || 0} ~${s.attributesChanged || 0}`),
            el("td", { class: "mono" }, `+${e.added || 0} -${e.removed || 0} ~${e.changed || 0}`),
            el("td", { class: "mono" }, hosts + more),
            el("td", { class: o.proxiesNacked ? "error-text" : "" }, outcome)
          )
        );
      }
    }
    return { head, rows: rows.slice(0, ROWS) };
  }

  function renderHistory(data) {
    const known = historyRows(data);
    if (known) {
      $("changes-head").replaceChildren(el("tr", {}, known.head.map((k) => el("th", {}, k))));
      replaceRows($("changes-body"), known.rows);
      return;
    }
    let items = Array.isArray(data) ? data : null;
    if (!items && data && typeof data === "object") {
      items = Object.values(data).find(Array.isArray) || [data];
    }
    items = (items || []).slice(0, ROWS).map((i) => (i && typeof i === "object" ? i : { value: i }));
    const keys = [];
    for (const item of items) for (const k of Object.keys(item)) if (!keys.includes(k) && keys.length < 10) keys.push(k);
    $("changes-head").replaceChildren(el("tr", {}, keys.map((k) => el("th", {}, k))));
    replaceRows(
      $("changes-body"),
      items.map((item) => el("tr", {}, keys.map((k) => el("td", { class: "mono" }, cellText(item[k])))))
    );
  }

  // Asked only when /debug/list names it, so a daemon without it logs no failed request.
  async function refreshHistory() {
    try {
      const listed = await fetch("../debug/list", { cache: "no-cache" });
      const paths = listed.ok ? (await listed.json()).map((e) => e.path) : [];
      state.history = false;
      if (paths.includes("/debug/history")) {
        const response = await fetch("../debug/history", { cache: "no-cache" });
        state.history = response.ok;
        if (response.ok) renderHistory(await response.json());
      }
    } catch (error) {
      state.history = false;
    }
    $("changes").hidden = !state.history;
    $("changes-link").hidden = !state.history;
  }

  // -- refresh loop ----------------------------------------------------------------------
  function render() {
    const d = state.data;
    const banner = $("unanswered");
    banner.hidden = !d.unanswered.length;
    banner.textContent = d.unanswered.length
      ? "Clients of these serving processes are missing: " + d.unanswered.join("; ")
      : "";
    renderRegistries(d.registries);
    renderServices(d.services);
    renderProxies(d.proxies);
    renderPushes(d.pushes);
  }

  function setStatus(text, error) {
    const status = $("status");
    status.textContent = text;
    status.className = "status" + (error ? " error" : "");
  }

  async function refresh() {
    try {
      const response = await fetch("../debug/console", { cache: "no-cache" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const etag = response.headers.get("ETag");
      const stale = state.refreshes % RERENDER_EVERY === 0; // "N s ago" moves on
      if (!etag || etag !== state.etag || !state.data || stale) {
        const first = !state.data;
        state.data = await response.json();
        state.etag = etag;
        if (first) performance.mark("console-data");
        render();
      }
      if (!document.documentElement.dataset.rendered) {
        document.documentElement.dataset.rendered = "true"; // the first full render is done
        performance.mark("console-rendered");
      }
      if (state.refreshes % HISTORY_EVERY === 0) await refreshHistory();
      state.refreshes += 1;
      state.delay = POLL_MS;
      setStatus(`live: view ${state.data.version}, ${new Date().toLocaleTimeString()}`, false);
    } catch (error) {
      state.delay = Math.min(state.delay * 2, MAX_BACKOFF_MS);
      setStatus(`unreachable (${error.message}); retry in ${state.delay / 1000} s`, true);
    }
    setTimeout(refresh, state.delay);
  }

  let searchTimer = null;
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      if (!state.data) return;
      renderServices(state.data.services);
      renderProxies(state.data.proxies);
    }, 150);
  });

  refresh();
})();
