// fastdtm operator console: a hand-written single-page app (no framework, no build step, no network but
// this node). Views are chosen by the URL hash; each one renders into <main> and may register what to stop
// when it is left (the live view's polling).
//
// Every value shown comes from transactions, which are hostile input (a gid or a branch URL may hold markup):
// the DOM is built with createElement and textContent only, never from HTML text.
"use strict";

(() => {
  const PAGE_SIZE = 10;
  const STATUSES = ["prepared", "submitted", "aborting", "succeed", "failed"];
  const UNFINISHED = ["prepared", "submitted", "aborting"];
  const TYPES = ["saga", "msg", "tcc", "xa", "workflow"];
  const TOKEN_KEY = "fastdtm.operatorToken";
  const POLL_MS = 2000;
  // 60 rates need 61 snapshots.
  const MAX_SNAPSHOTS = 61;
  const PALETTE = ["#2f6fde", "#1e8a4c", "#c8372d", "#b86e00", "#7b4bc4", "#0f8a8a", "#c04a8f", "#5b6b7b"];
  const ERROR_EXCERPT = 300;

  // ---------------------------------------------------------------- DOM helpers

  /** An element; `props`: class, test (data-test), data (dataset), on<event> handlers, other attributes. */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    setProps(el, props || {});
    append(el, children);
    return el;
  }

  function setProps(el, props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "test") el.dataset.test = value;
      else if (key === "data") Object.assign(el.dataset, value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "value") el.value = value;
      else if (value === true) el.setAttribute(key, "");
      else el.setAttribute(key, String(value));
    }
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  const SVG_NS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "test") el.dataset.test = value;
      else if (key === "text") el.textContent = value;
      else el.setAttribute(key, String(value));
    }
    append(el, children);
    return el;
  }

  function badge(status, test) {
    return h("span", { class: `badge s-${status}`, test: test || "status", data: { status } }, status || "?");
  }

  function pausedBadge() {
    return h("span", { class: "badge paused", test: "paused-badge" }, "paused");
  }

  function gidLink(gid) {
    return h("a", { href: `#/transactions/${encodeURIComponent(gid)}`, class: "mono", test: "gid-link" }, gid);
  }

  function select(test, options, value) {
    return h(
      "select",
      { test },
      options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)),
    );
  }

  function field(label, control) {
    return h("label", { class: "field" }, label, control);
  }

  function table(test, headers, rows, emptyText) {
    const body = rows.length
      ? rows
      : [h("tr", {}, h("td", { class: "empty", colspan: headers.length, test: "empty" }, emptyText))];
    return h(
      "div",
      { class: "table-wrap" },
      h("table", { test }, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))), h("tbody", {}, body)),
    );
  }

  /** A message in a view's own notice area; kind: "ok" | "error" | "" (neutral). */
  function notice(area, kind, text) {
    area.replaceChildren();
    if (text) area.append(h("div", { class: `banner ${kind}`, test: "notice", data: { kind } }, text));
  }

  // ---------------------------------------------------------------- time and numbers

  function toDate(value) {
    if (value === null || value === undefined || value === "" || value === 0) return null;
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  const pad = (n) => String(n).padStart(2, "0");

  /** Local time, e.g. 2026-12-02 14:03:07; "" for none. Takes ms integers and RFC 3339 strings. */
  function fmtTime(value) {
    const d = toDate(value);
    if (!d) return "";
    const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    return `${day} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function timeCell(value, test) {
    const d = toDate(value);
    return h("td", { class: "nowrap", title: d ? d.toISOString() : null, test }, fmtTime(value));
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return "";
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  /** A datetime-local input's value (local time) as ms since the epoch; "" when empty. */
  function localInputMs(input) {
    if (!input.value) return "";
    const ms = new Date(input.value).getTime();
    return Number.isNaN(ms) ? "" : ms;
  }

  function fmtNumber(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "–";
    if (v >= 100) return String(Math.round(v));
    return String(Number(v.toPrecision(3)));
  }

  function excerpt(text, n) {
    const s = String(text ?? "");
    return s.length > n ? `${s.slice(0, n)}…` : s;
  }

  // ---------------------------------------------------------------- the node's API

  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  async function api(method, path, { query, body } = {}) {
    const url = new URL(path, location.origin);
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== "" && value !== null && value !== undefined) url.searchParams.set(key, String(value));
    }
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      // The node refuses a POST whose type a browser may send unasked; JSON is what it expects.
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (exc) {
      throw new ApiError(0, `the node does not answer (${exc.message})`, null);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if (!response.ok) throw apiError(response.status, data);
    if (data && typeof data === "object") setBanner("", "");
    return data;
  }

  function apiError(status, data) {
    const message =
      data && typeof data === "object" && typeof data.message === "string"
        ? data.message
        : `HTTP ${status}${typeof data === "string" && data ? `: ${excerpt(data, 200)}` : ""}`;
    if (status === 401 || status === 403) {
      setBanner(
        "auth",
        status === 401
          ? "Operator token needed: this node asks for a token. Paste an operator token in the top bar."
          : "Operator token needed: the token given is not an operator's. Paste an operator token in the top bar.",
      );
    }
    return new ApiError(status, message, data);
  }

  function setBanner(kind, text) {
    const banner = document.getElementById("banner");
    if (!text) {
      // Only a later success clears an auth warning; other messages belong to their view.
      if (banner.dataset.kind === "auth") banner.hidden = true;
      return;
    }
    banner.dataset.kind = kind;
    banner.className = `banner ${kind === "auth" ? "" : kind}`;
    banner.textContent = text;
    banner.hidden = false;
  }

  // ---------------------------------------------------------------- modal dialogs

  // The one dialog open, if any: leaving a view (or opening another dialog) cancels it.
  const openDialog = { close: null };

  /**
   * A modal asking to confirm `title`; with `reason` ("required" | "optional") it has a textarea. `run`
   * gets the reason and does the work: a refusal (ApiError) is shown in the dialog, which stays open.
   * Resolves true once `run` succeeded, false when cancelled.
   */
  function dialog({ title, text, confirmLabel, danger, reason, run }) {
    const backdrop = document.getElementById("modal");
    if (openDialog.close) openDialog.close(false);
    return new Promise((resolve) => {
      const area = reason
        ? h("textarea", {
            test: "modal-reason",
            maxlength: 500,
            placeholder: reason === "required" ? "Reason (required, kept with the transaction)" : "Reason (optional)",
          })
        : null;
      const error = h("div", { class: "error-text", test: "modal-error" });
      const confirm = h(
        "button",
        { class: danger ? "danger solid" : "primary", test: "modal-confirm", type: "button" },
        confirmLabel,
      );
      const cancel = h("button", { test: "modal-cancel", type: "button" }, "Cancel");
      const close = (result) => {
        openDialog.close = null;
        backdrop.hidden = true;
        backdrop.replaceChildren();
        document.removeEventListener("keydown", onKey);
        resolve(result);
      };
      openDialog.close = close;
      const onKey = (event) => {
        if (event.key === "Escape") close(false);
      };
      const syncConfirm = () => {
        confirm.disabled = reason === "required" && !area.value.trim();
      };
      confirm.addEventListener("click", async () => {
        confirm.disabled = true;
        error.textContent = "";
        try {
          await run(area ? area.value.trim() : "");
          close(true);
        } catch (exc) {
          error.textContent = exc.message;
          syncConfirm();
        }
      });
      cancel.addEventListener("click", () => close(false));
      if (area) area.addEventListener("input", syncConfirm);
      document.addEventListener("keydown", onKey);
      backdrop.replaceChildren(
        h(
          "div",
          { class: "modal", role: "dialog", "aria-modal": "true", test: "modal-box" },
          h("h2", { test: "modal-title" }, title),
          text ? h("p", {}, text) : null,
          area,
          error,
          h("div", { class: "actions" }, cancel, confirm),
        ),
      );
      backdrop.hidden = false;
      if (area) {
        syncConfirm();
        area.focus();
      } else {
        confirm.focus();
      }
    });
  }

  // ---------------------------------------------------------------- operator actions

  // A gid may hold "/", "?" or "%": the admin endpoints take it in the query or the body, never in the path.
  const admin = (action, body) => api("POST", `/api/admin/${action}`, { body });

  /** Retry now (DTM's "reset next cron time"): due at once, after a running round's hold. */
  function retryNow(gid) {
    return admin("retry", { gid });
  }

  function forceStop(gid) {
    return api("POST", "/api/dtmsvr/forceStop", { body: { gid } });
  }

  // ---------------------------------------------------------------- view: transaction list

  // Kept across views, so that coming back from a detail shows the same page.
  const listState = { filters: { gid: "", status: "", type: "", from: "", to: "" }, stack: [], position: "" };

  function listView(ctx) {
    const f = listState.filters;
    const gid = h("input", { test: "filter-gid", value: f.gid, placeholder: "exact gid", class: "wide" });
    const status = select("filter-status", [["", "any"], ...STATUSES.map((s) => [s, s])], f.status);
    const type = select("filter-type", [["", "any"], ...TYPES.map((t) => [t, t])], f.type);
    const from = h("input", { type: "datetime-local", step: 1, test: "filter-from", value: f.from });
    const to = h("input", { type: "datetime-local", step: 1, test: "filter-to", value: f.to });
    const form = h(
      "form",
      { class: "filters", test: "filters" },
      field("Gid", gid),
      field("Status", status),
      field("Type", type),
      field("Created from", from),
      field("Created to", to),
      h("div", { class: "actions" }, [
        h("button", { type: "submit", class: "primary", test: "filter-apply" }, "Search"),
        h("button", { type: "button", test: "filter-reset", onclick: reset }, "Reset"),
      ]),
    );
    const area = h("div", { test: "list-notice" });
    const results = h("div", { test: "list-results" });
    const prev = h("button", { test: "page-prev", onclick: previous }, "‹ Previous");
    const next = h("button", { test: "page-next", onclick: forward }, "Next ›");
    const info = h("span", { class: "muted", test: "page-info" });
    ctx.main.append(
      h("h1", {}, "Transactions"),
      h("div", { class: "panel" }, form),
      area,
      results,
      h("div", { class: "pager" }, prev, next, info),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      Object.assign(listState.filters, {
        gid: gid.value.trim(),
        status: status.value,
        type: type.value,
        from: from.value,
        to: to.value,
      });
      listState.stack = [];
      listState.position = "";
      load();
    });
    let nextPosition = "";

    function reset() {
      listState.filters = { gid: "", status: "", type: "", from: "", to: "" };
      listState.stack = [];
      listState.position = "";
      route();
    }

    function previous() {
      listState.position = listState.stack.pop() || "";
      load();
    }

    function forward() {
      listState.stack.push(listState.position);
      listState.position = nextPosition;
      load();
    }

    async function load() {
      prev.disabled = next.disabled = true;
      info.textContent = "Loading…";
      let reply;
      try {
        reply = await api("GET", "/api/dtmsvr/all", { query: listQuery(from, to) });
      } catch (exc) {
        if (!ctx.alive()) return;
        notice(area, "error", exc.message);
        info.textContent = "";
        return;
      }
      if (!ctx.alive()) return;
      notice(area, "", "");
      const rows = (reply.transactions || []).map(listRow);
      results.replaceChildren(
        table(
          "trans-table",
          ["Gid", "Type", "Status", "Created", "Updated", "Next cron time"],
          rows,
          "No transaction matches.",
        ),
      );
      nextPosition = listState.filters.gid ? "" : reply.next_position || "";
      next.disabled = !nextPosition;
      prev.disabled = listState.stack.length === 0;
      info.textContent = `Page ${listState.stack.length + 1}`;
    }

    load();
  }

  function listQuery(from, to) {
    const f = listState.filters;
    if (f.gid) return { gid: f.gid };
    return {
      limit: PAGE_SIZE,
      position: listState.position,
      status: f.status,
      transType: f.type,
      createTimeStart: localInputMs(from),
      createTimeEnd: localInputMs(to),
    };
  }

  function listRow(t) {
    return h(
      "tr",
      { test: "trans-row", data: { gid: t.gid, status: t.status } },
      h("td", {}, gidLink(t.gid)),
      h("td", { test: "trans-type" }, t.trans_type),
      h("td", {}, badge(t.status, "trans-status")),
      timeCell(t.create_time),
      timeCell(t.update_time),
      timeCell(t.next_cron_time),
    );
  }

  // ---------------------------------------------------------------- view: one transaction

  function loadDetail(gid) {
    return api("GET", "/api/admin/transaction", { query: { gid } });
  }

  function detailView(ctx, gid) {
    const area = h("div", { test: "detail-notice" });
    const body = h("div", { test: "detail" }, h("p", { class: "muted" }, "Loading…"));
    ctx.main.append(h("p", {}, h("a", { href: "#/transactions" }, "‹ Transactions")), area, body);

    async function load(message) {
      let detail;
      try {
        detail = await loadDetail(gid);
      } catch (exc) {
        if (!ctx.alive()) return;
        notice(area, "error", exc.status === 404 ? `No transaction ${gid} (${exc.message})` : exc.message);
        body.replaceChildren();
        return;
      }
      if (!ctx.alive()) return;
      notice(area, message ? "ok" : "", message || "");
      body.replaceChildren(...renderDetail(detail, act));
    }

    /** Runs an operator action through its dialog, then reloads with `done` as the message. */
    async function act(options, done) {
      if (await dialog(options)) await load(done);
    }

    act.refresh = () => load("");
    act.plain = async (work, done) => {
      try {
        await work();
      } catch (exc) {
        notice(area, "error", exc.message);
        return;
      }
      await load(done);
    };
    load("");
  }

  function renderDetail(detail, act) {
    const t = detail.transaction;
    const gid = t.gid;
    const head = h(
      "div",
      { class: "detail-head" },
      h("h1", { test: "detail-gid" }, gid),
      badge(t.status, "detail-status"),
      t.paused ? pausedBadge() : null,
    );
    return [
      head,
      h("div", { class: "panel" }, detailActions(t, act)),
      h("div", { class: "panel" }, detailFields(t)),
      h("h2", {}, "Branches"),
      table(
        "branch-table",
        ["Branch", "Op", "Status", "URL", "Created", "Finished", "Last error", "Operator", ""],
        detail.branches.map((b) => branchRow(gid, b, act)),
        "No branch.",
      ),
      h(
        "details",
        { test: "raw-json", class: "panel" },
        h("summary", {}, "Raw JSON"),
        h("pre", { class: "raw", test: "raw-json-text" }, JSON.stringify(detail.raw ?? detail, null, 2)),
      ),
    ];
  }

  function detailActions(t, act) {
    const gid = t.gid;
    const finished = t.finished || t.status === "succeed" || t.status === "failed";
    const button = (test, label, cls, onclick) =>
      h("button", { test, class: cls, disabled: finished, onclick }, label);
    return h(
      "div",
      { class: "actions" },
      h("button", { test: "detail-refresh", onclick: act.refresh }, "Refresh"),
      button("detail-retry", "Retry now (reset next cron time)", "", () =>
        act.plain(() => retryNow(gid), "Due now: the next cron tick takes it."),
      ),
      t.paused
        ? button("detail-resume", "Resume", "", () => act.plain(() => admin("resume", { gid }), "Resumed."))
        : button("detail-pause", "Pause", "", () =>
            act(
              {
                title: `Pause ${gid}?`,
                text: "No branch is called while it is paused: its retries wait until it is resumed.",
                confirmLabel: "Pause",
                run: () => admin("pause", { gid }),
              },
              "Paused.",
            ),
          ),
      button("detail-force-stop", "Force stop", "danger", () =>
        act(
          {
            title: `Force stop ${gid}?`,
            text: "The transaction ends as failed at once: no further branch is called, nothing more is compensated.",
            confirmLabel: "Force stop",
            danger: true,
            run: () => forceStop(gid),
          },
          "Stopped.",
        ),
      ),
    );
  }

  function detailFields(t) {
    const item = (label, value, test) => [h("dt", {}, label), h("dd", { test }, value === "" ? "–" : value)];
    let options = t.options;
    if (options && typeof options === "object") options = JSON.stringify(options);
    return h(
      "div",
      {},
      h(
        "dl",
        { class: "fields", test: "detail-fields" },
        item("Type", t.trans_type || "", "detail-type"),
        item("Protocol", t.protocol || "", "detail-protocol"),
        item("Created", fmtTime(t.create_time_ms), "detail-created"),
        item("Updated", fmtTime(t.update_time_ms), "detail-updated"),
        item("Finished", fmtTime(t.finish_time_ms), "detail-finished"),
        item("Rolled back", fmtTime(t.rollback_time_ms), "detail-rollback-time"),
        item("Next cron time", fmtTime(t.next_cron_time_ms), "detail-next-cron"),
        item("Retry interval", t.next_cron_interval_s ? `${t.next_cron_interval_s}s` : "", "detail-interval"),
        item("Retries", t.retries ?? "", "detail-retries"),
        item(
          "Failing since",
          t.failing_since_ms ? `${fmtTime(t.failing_since_ms)} (${fmtDuration(Date.now() - t.failing_since_ms)})` : "",
          "detail-failing-since",
        ),
        item("Paused", t.paused ? `yes, since ${fmtTime(t.paused_at_ms)}` : "no", "detail-paused"),
        item("Options", options || "", "detail-options"),
        item("Custom data", t.custom_data || "", "detail-custom-data"),
        item("Query prepared", t.query_prepared || "", "detail-query-prepared"),
      ),
      t.rollback_reason
        ? h("div", { class: "reason", test: "detail-rollback-reason" }, "Rollback reason: ", t.rollback_reason)
        : null,
    );
  }

  function branchRow(gid, b, act) {
    const mark = (action, label, cls, what) =>
      h(
        "button",
        {
          class: `small ${cls}`,
          test: `branch-${action}`,
          onclick: () =>
            act(
              {
                title: `${label}: branch ${b.branch_id} ${b.op} of ${gid}`,
                text: what,
                confirmLabel: label,
                danger: action === "fail",
                reason: "required",
                run: (reason) => admin(action, { gid, branch_id: b.branch_id, op: b.op, reason }),
              },
              `Branch ${b.branch_id} ${b.op} marked ${action === "skip" ? "succeeded" : "failed"}.`,
            ),
        },
        label,
      );
    return h(
      "tr",
      { test: "branch-row", data: { branchId: b.branch_id, op: b.op, status: b.status } },
      h("td", { class: "mono" }, b.branch_id),
      h("td", {}, h("span", { class: "badge op" }, b.op)),
      h("td", {}, badge(b.status, "branch-status")),
      h("td", { class: "url" }, b.url || h("span", { class: "muted" }, "(none)")),
      timeCell(b.create_time_ms),
      timeCell(b.finish_time_ms),
      h("td", { test: "branch-error" }, lastError(b.last_error)),
      h("td", { test: "branch-operator" }, operatorMark(b.operator)),
      h(
        "td",
        { class: "nowrap" },
        b.can_skip ? mark("skip", "Skip", "", "The branch is recorded as succeeded without calling it again.") : null,
        b.can_fail ? mark("fail", "Mark failed", "danger", "The branch is recorded as failed.") : null,
      ),
    );
  }

  function lastError(e) {
    if (!e) return "";
    return h(
      "div",
      {},
      h("span", { class: "badge s-failed" }, e.outcome || "ERROR"),
      e.code ? ` ${e.code}` : "",
      " ",
      h("span", { class: "muted" }, fmtTime(e.at_ms)),
      h("div", { class: "error-text", title: e.detail || "" }, excerpt(e.detail, ERROR_EXCERPT)),
    );
  }

  function operatorMark(o) {
    if (!o) return "";
    return h(
      "div",
      { class: "operator-mark" },
      h("b", {}, o.action === "skip" ? "skipped" : "marked failed"),
      ` ${fmtTime(o.at_ms)}`,
      h("div", { test: "branch-operator-reason" }, o.reason),
    );
  }

  // ---------------------------------------------------------------- view: needs attention

  function attentionView(ctx) {
    const area = h("div", { test: "attention-notice" });
    const results = h("div", {});
    const more = h("button", { test: "attention-more", hidden: true }, "Show more");
    ctx.main.append(
      h("h1", {}, "Needs attention"),
      h(
        "p",
        { class: "muted" },
        "Unfinished transactions whose branches keep failing, longest-retrying first.",
      ),
      area,
      results,
      h("div", { class: "pager" }, more),
      bulkPanel(ctx, () => load()),
    );
    let rows = [];
    let position = "";
    more.addEventListener("click", () => load(position));

    async function load(from) {
      let reply;
      try {
        reply = await api("GET", "/api/admin/attention", { query: { limit: 20, position: from || "" } });
      } catch (exc) {
        if (ctx.alive()) notice(area, "error", exc.message);
        return;
      }
      if (!ctx.alive()) return;
      notice(area, "", "");
      if (!from) rows = [];
      rows.push(...(reply.transactions || []).map((t) => attentionRow(t, retry)));
      position = reply.next_position || "";
      more.hidden = !position;
      results.replaceChildren(
        table(
          "attention-table",
          ["Gid", "Type", "Status", "Retrying for", "Retries", "Next attempt", "Failing branches", ""],
          rows,
          "Nothing needs attention.",
        ),
      );
    }

    async function retry(gid) {
      try {
        await retryNow(gid);
      } catch (exc) {
        notice(area, "error", exc.message);
        return;
      }
      await load();
      if (ctx.alive()) notice(area, "ok", `${gid} is due now.`);
    }

    load();
  }

  function attentionRow(t, retry) {
    const now = Date.now();
    return h(
      "tr",
      { test: "attention-row", data: { gid: t.gid } },
      h("td", {}, gidLink(t.gid), t.paused ? [" ", pausedBadge()] : null),
      h("td", {}, t.trans_type),
      h("td", {}, badge(t.status)),
      h("td", { class: "nowrap" }, t.failing_since_ms ? fmtDuration(now - t.failing_since_ms) : ""),
      h("td", {}, String(t.retries ?? "")),
      timeCell(t.next_cron_time_ms),
      h(
        "td",
        { test: "attention-errors" },
        (t.branches || []).map((b) =>
          h(
            "div",
            { test: "attention-error", data: { branchId: b.branch_id, op: b.op } },
            h("span", { class: "mono" }, `${b.branch_id} ${b.op} `),
            h("span", { class: "badge s-failed" }, (b.last_error && b.last_error.outcome) || "ERROR"),
            b.last_error && b.last_error.code ? ` ${b.last_error.code}` : "",
            h("div", { class: "error-text" }, excerpt(b.last_error && b.last_error.detail, 160)),
          ),
        ),
      ),
      h("td", {}, h("button", { class: "small", test: "attention-retry", onclick: () => retry(t.gid) }, "Retry now")),
    );
  }

  function bulkPanel(ctx, reload) {
    const status = select("bulk-status", [["", "any unfinished"], ...UNFINISHED.map((s) => [s, s])], "");
    const type = select("bulk-type", [["", "any"], ...TYPES.map((t) => [t, t])], "");
    const from = h("input", { type: "datetime-local", step: 1, test: "bulk-from" });
    const to = h("input", { type: "datetime-local", step: 1, test: "bulk-to" });
    const action = select("bulk-action", [["retry", "Retry now"], ["force_stop", "Force stop"]], "retry");
    const preview = h("button", { class: "primary", test: "bulk-preview", type: "button" }, "Preview");
    const result = h("div", { class: "bulk-result", test: "bulk-result" });
    const panel = h(
      "div",
      { class: "panel", test: "bulk" },
      h("h2", {}, "Bulk action"),
      h(
        "div",
        { class: "filters" },
        field("Status", status),
        field("Type", type),
        field("Created from", from),
        field("Created to", to),
        field("Action", action),
        preview,
      ),
      result,
    );
    const request = () => ({
      action: action.value,
      filter: {
        status: status.value,
        trans_type: type.value,
        create_from_ms: localInputMs(from) || null,
        create_to_ms: localInputMs(to) || null,
      },
    });
    // A preview answers for the filter it was asked with: change the filter, ask again.
    for (const control of [status, type, from, to, action]) {
      control.addEventListener("change", () => result.replaceChildren());
    }
    preview.addEventListener("click", async () => {
      const asked = request();
      let reply;
      try {
        reply = await api("POST", "/api/admin/bulk", { body: asked });
      } catch (exc) {
        result.replaceChildren(h("div", { class: "error-text", test: "bulk-error" }, exc.message));
        return;
      }
      if (ctx.alive()) result.replaceChildren(...bulkPreview(asked, reply, result, reload));
    });
    return panel;
  }

  function bulkPreview(asked, reply, result, reload) {
    const n = reply.count;
    const verb = asked.action === "force_stop" ? "Force stop" : "Retry now";
    const outcome = h("div", { test: "bulk-outcome" });
    const apply = h(
      "button",
      { class: asked.action === "force_stop" ? "danger solid" : "primary", test: "bulk-apply", disabled: n === 0 },
      `Apply to ${n} transactions`,
    );
    apply.addEventListener("click", () =>
      dialog({
        title: `${verb}: ${n} transactions?`,
        text:
          asked.action === "force_stop"
            ? "Each one ends as failed at once, without calling any further branch."
            : "Each one becomes due at once.",
        confirmLabel: `${verb} ${n}`,
        danger: asked.action === "force_stop",
        run: async () => {
          try {
            const done = await api("POST", "/api/admin/bulk", { body: { ...asked, confirm: n } });
            outcome.textContent = `Done: ${done.done}, refused: ${done.refused}.`;
            outcome.className = "banner ok";
          } catch (exc) {
            // 409: the matching set changed since the preview; its new count comes with the refusal.
            outcome.textContent = exc.message;
            outcome.className = "banner error";
          }
          apply.disabled = true;
          reload();
        },
      }),
    );
    return [
      h(
        "p",
        { test: "bulk-count", data: { count: n } },
        h("b", {}, String(n)),
        ` unfinished transaction${n === 1 ? "" : "s"} match`,
        reply.capped ? " (capped: more may match)" : "",
        ".",
      ),
      (reply.sample || []).length
        ? h("div", { class: "sample", test: "bulk-sample" }, "e.g. ", reply.sample.join(", "))
        : null,
      h("div", { class: "actions" }, apply),
      outcome,
    ];
  }

  // ---------------------------------------------------------------- view: topics

  const MAX_TOPIC_PAGES = 50;

  function topicsView(ctx) {
    const area = h("div", { test: "topics-notice" });
    const results = h("div", {});
    const topic = h("input", { test: "topic-name", placeholder: "topic", required: true });
    const url = h("input", { test: "topic-url", placeholder: "http://svc/api/handler", class: "wide", required: true });
    const remark = h("input", { test: "topic-remark", placeholder: "optional" });
    const form = h(
      "form",
      { class: "filters", test: "subscribe-form" },
      field("Topic", topic),
      field("Subscriber URL", url),
      field("Remark", remark),
      h("button", { type: "submit", class: "primary", test: "topic-subscribe" }, "Subscribe"),
    );
    ctx.main.append(h("h1", {}, "Topics"), h("div", { class: "panel" }, form), area, results);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      await change(
        () => api("GET", "/api/dtmsvr/subscribe", { query: { topic: topic.value, url: url.value, remark: remark.value } }),
        `Subscribed ${url.value} to ${topic.value}.`,
      );
    });

    async function change(work, done) {
      try {
        await work();
      } catch (exc) {
        notice(area, "error", exc.message);
        return;
      }
      await load();
      if (ctx.alive()) notice(area, "ok", done);
    }

    const actions = {
      unsubscribe: (name, sub) =>
        dialog({
          title: `Unsubscribe from ${name}?`,
          text: sub.url,
          confirmLabel: "Unsubscribe",
          danger: true,
          run: () => api("GET", "/api/dtmsvr/unsubscribe", { query: { topic: name, url: sub.url } }),
        }).then((ok) => ok && change(async () => {}, `Unsubscribed ${sub.url} from ${name}.`)),
      remove: (name) =>
        dialog({
          title: `Delete the topic ${name}?`,
          text: "Messages sent to it afterwards are refused.",
          confirmLabel: "Delete topic",
          danger: true,
          run: () => api("DELETE", `/api/dtmsvr/topic/${encodeURIComponent(name)}`),
        }).then((ok) => ok && change(async () => {}, `Deleted the topic ${name}.`)),
    };

    async function load() {
      let entries;
      try {
        entries = await scanTopics();
      } catch (exc) {
        if (ctx.alive()) notice(area, "error", exc.message);
        return;
      }
      if (!ctx.alive()) return;
      const rows = entries.map((e) => topicRow(e, actions));
      results.replaceChildren(table("topics-table", ["Topic", "Subscribers", "Updated", ""], rows, "No topic."));
    }

    load();
  }

  async function scanTopics() {
    const entries = [];
    let position = "";
    for (let page = 0; page < MAX_TOPIC_PAGES; page += 1) {
      const reply = await api("GET", "/api/dtmsvr/scanKV", { query: { cat: "topics", limit: 100, position } });
      entries.push(...(reply.kv || []));
      position = reply.next_position || "";
      if (!position) break;
    }
    return entries;
  }

  function subscribersOf(entry) {
    try {
      const list = JSON.parse(entry.v);
      return Array.isArray(list) ? list : [];
    } catch {
      return [];
    }
  }

  function topicRow(entry, actions) {
    const name = entry.k;
    const subs = subscribersOf(entry);
    return h(
      "tr",
      { test: "topic-row", data: { topic: name } },
      h("td", { class: "mono", test: "topic-cell" }, name),
      h(
        "td",
        {},
        subs.length
          ? subs.map((sub) =>
              h(
                "div",
                { test: "subscriber", data: { url: sub.url } },
                h("span", { class: "mono" }, sub.url),
                sub.remark ? h("span", { class: "muted" }, ` (${sub.remark})`) : null,
                " ",
                h(
                  "button",
                  { class: "small danger", test: "unsubscribe", onclick: () => actions.unsubscribe(name, sub) },
                  "Unsubscribe",
                ),
              ),
            )
          : h("span", { class: "muted" }, "no subscriber"),
      ),
      timeCell(entry.update_time),
      h(
        "td",
        {},
        h("button", { class: "small danger", test: "topic-delete", onclick: () => actions.remove(name) }, "Delete"),
      ),
    );
  }

  // ---------------------------------------------------------------- view: live

  function liveView(ctx) {
    const area = h("div", { test: "live-notice" });
    const figures = h("div", { class: "stat-row", test: "live-figures" });
    const charts = h("div", { class: "charts", test: "charts" });
    const nodes = h("div", { test: "nodes" });
    ctx.main.append(
      h("h1", {}, "Live"),
      area,
      figures,
      charts,
      h("h2", {}, "Nodes and shard leases"),
      nodes,
    );
    const snapshots = [];
    let timer = 0;
    ctx.onLeave(() => clearTimeout(timer));

    async function poll() {
      try {
        const [stats, members] = await Promise.all([
          api("GET", "/api/admin/stats"),
          api("GET", "/api/admin/nodes").catch((exc) => exc),
        ]);
        if (!ctx.alive()) return;
        notice(area, "", "");
        snapshots.push({ at: Date.now(), stats });
        if (snapshots.length > MAX_SNAPSHOTS) snapshots.shift();
        figures.replaceChildren(...liveFigures(stats));
        charts.replaceChildren(...liveCharts(snapshots));
        nodes.replaceChildren(
          members instanceof Error
            ? h("div", { class: "error-text" }, members.message)
            : nodesTable(members, stats.node_id),
        );
      } catch (exc) {
        if (!ctx.alive()) return;
        notice(area, "error", exc.message);
      }
      if (ctx.alive()) timer = setTimeout(poll, POLL_MS);
    }

    poll();
  }

  function liveFigures(stats) {
    const figure = (label, value, test) => h("div", { class: "stat", test }, h("b", {}, String(value)), h("span", {}, label));
    const calls = stats.branch_calls || {};
    return [
      figure("unfinished (store-wide)", stats.unfinished ?? "–", "stat-unfinished"),
      figure("rounds in flight here", stats.in_flight ?? "–", "stat-in-flight"),
      figure("branch calls here", calls.count ?? "–", "stat-calls"),
      figure("failed branch calls", calls.failed ?? "–", "stat-failed-calls"),
    ];
  }

  /** Per-second rates between consecutive snapshots, by the key `keyOf` gives each counter. */
  function rates(snapshots, countersOf) {
    const series = new Map();
    for (let i = 1; i < snapshots.length; i += 1) {
      const before = countersOf(snapshots[i - 1].stats);
      const after = countersOf(snapshots[i].stats);
      const seconds = (snapshots[i].stats.now_ms - snapshots[i - 1].stats.now_ms) / 1000;
      for (const [key, value] of after) {
        if (!series.has(key)) series.set(key, []);
        const previous = before.get(key) ?? 0;
        // A counter that went down belongs to a restarted node: no rate across that gap.
        const rate = seconds > 0 && value >= previous ? (value - previous) / seconds : null;
        series.get(key).push({ t: snapshots[i].stats.now_ms, v: rate });
      }
    }
    return series;
  }

  function transactionCounters(stats) {
    const counters = new Map();
    for (const c of stats.transactions || []) counters.set(`${c.trans_type} ${c.status}`, c.count);
    return counters;
  }

  function callCounters(stats) {
    const calls = stats.branch_calls || {};
    return new Map([
      ["all", calls.count || 0],
      ["failed", calls.failed || 0],
    ]);
  }

  /** Mean and p99 (ms) of the branch calls between consecutive snapshots; null where none was made. */
  function latencies(snapshots) {
    const mean = [];
    const p99 = [];
    for (let i = 1; i < snapshots.length; i += 1) {
      const a = snapshots[i - 1].stats.branch_latency || {};
      const b = snapshots[i].stats.branch_latency || {};
      const count = (b.count || 0) - (a.count || 0);
      const t = snapshots[i].stats.now_ms;
      const ok = count > 0;
      mean.push({ t, v: ok ? (((b.sum_s || 0) - (a.sum_s || 0)) / count) * 1000 : null });
      p99.push({ t, v: ok ? quantile(a.buckets || [], b.buckets || [], 0.99) : null });
    }
    return { mean, p99 };
  }

  /** The q-quantile (ms) of the observations between two cumulative histograms, interpolated in its bucket. */
  function quantile(before, after, q) {
    const earlier = new Map(before.map(([le, n]) => [String(le), n]));
    const bound = (le) => (le === "+Inf" ? Infinity : Number(le));
    const diff = after.map(([le, n]) => [bound(le), n - (earlier.get(String(le)) || 0)]);
    const total = diff.length ? diff[diff.length - 1][1] : 0;
    if (total <= 0) return null;
    const rank = q * total;
    let lower = 0;
    let below = 0;
    for (const [le, n] of diff) {
      if (n >= rank) {
        // The +Inf bucket has no upper bound: report its lower one.
        if (!Number.isFinite(le)) return lower * 1000;
        const inBucket = n - below;
        return (lower + (le - lower) * (inBucket > 0 ? (rank - below) / inBucket : 1)) * 1000;
      }
      lower = le;
      below = n;
    }
    return lower * 1000;
  }

  function liveCharts(snapshots) {
    const tx = rates(snapshots, transactionCounters);
    const calls = rates(snapshots, callCounters);
    const lat = latencies(snapshots);
    const gauges = ["unfinished", "in_flight"].map((key) => ({
      name: key === "unfinished" ? "unfinished" : "in flight",
      values: snapshots.map((s) => ({ t: s.stats.now_ms, v: s.stats[key] ?? null })),
    }));
    const named = (map) => [...map.keys()].sort().map((name) => ({ name, values: map.get(name) }));
    return [
      lineChart("chart-tx", "Transactions finished / s (this node)", named(tx)),
      lineChart("chart-calls", "Branch calls / s (this node)", named(calls)),
      lineChart("chart-latency", "Branch-call latency, ms (this node)", [
        { name: "mean", values: lat.mean },
        { name: "p99 (estimate)", values: lat.p99 },
      ]),
      lineChart("chart-unfinished", "Unfinished transactions", gauges),
    ];
  }

  const CHART = { w: 600, h: 180, left: 52, right: 10, top: 12, bottom: 24 };

  function lineChart(test, title, series) {
    const points = series.flatMap((s) => s.values).filter((p) => p.v !== null);
    const times = series.flatMap((s) => s.values.map((p) => p.t));
    const t0 = Math.min(...times);
    const t1 = Math.max(...times);
    const top = niceMax(Math.max(0, ...points.map((p) => p.v)));
    const x = (t) => CHART.left + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (CHART.w - CHART.left - CHART.right) : 0);
    const y = (v) => CHART.top + (1 - v / top) * (CHART.h - CHART.top - CHART.bottom);
    const grid = [0, top / 2, top].map((v) => [
      svg("line", { class: "axis", x1: CHART.left, x2: CHART.w - CHART.right, y1: y(v), y2: y(v) }),
      svg("text", { class: "label", x: CHART.left - 6, y: y(v) + 3, "text-anchor": "end", text: fmtNumber(v) }),
    ]);
    const lines = series.map((s, i) =>
      svg("path", {
        class: "line",
        test: "chart-line",
        "data-series": s.name,
        stroke: PALETTE[i % PALETTE.length],
        d: pathOf(s.values, x, y),
      }),
    );
    const span = t1 > t0 ? `last ${fmtDuration(t1 - t0)}` : "collecting…";
    const axis = svg("text", { class: "label", x: CHART.w - CHART.right, y: CHART.h - 6, "text-anchor": "end", text: span });
    return h(
      "div",
      { class: "panel chart", test },
      h("h2", {}, title),
      svg("svg", { viewBox: `0 0 ${CHART.w} ${CHART.h}`, role: "img", "aria-label": title }, grid, lines, axis),
      h(
        "div",
        { class: "legend" },
        series.map((s, i) => {
          const swatch = h("i", {});
          swatch.style.background = PALETTE[i % PALETTE.length];
          const last = s.values.length ? s.values[s.values.length - 1].v : null;
          return h("span", {}, swatch, `${s.name} ${fmtNumber(last)}`);
        }),
      ),
    );
  }

  /** An SVG path through the points, broken where a value is missing. */
  function pathOf(values, x, y) {
    let d = "";
    let pen = "M";
    for (const p of values) {
      if (p.v === null || p.v === undefined) {
        pen = "M";
        continue;
      }
      d += `${pen}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)} `;
      pen = "L";
    }
    return d.trim();
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const step = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * step) return m * step;
    return 10 * step;
  }

  function nodesTable(reply, self) {
    const rows = (reply.nodes || []).map((n) =>
      h(
        "tr",
        { test: "node-row", data: { node: n.node_id } },
        h("td", { class: "mono" }, n.node_id, n.node_id === self ? h("span", { class: "muted" }, " (this node)") : null),
        h("td", {}, n.heartbeat_age_ms === null ? "none (lease only)" : `${fmtDuration(n.heartbeat_age_ms)} ago`),
        h("td", {}, n.expires_in_ms === null ? "" : fmtDuration(n.expires_in_ms)),
        h("td", { test: "node-shard-count" }, String((n.shards || []).length)),
        h("td", { class: "shards" }, ranges(n.shards || [])),
      ),
    );
    const unowned = reply.unowned || [];
    return h(
      "div",
      {},
      table("nodes-table", ["Node", "Heartbeat", "Expires in", "Shards", "Shard ranges"], rows, "No live node."),
      h(
        "p",
        { test: "unowned", data: { count: unowned.length } },
        `${reply.shards ?? "?"} shard${reply.shards === 1 ? "" : "s"}; `,
        unowned.length ? `unowned: ${ranges(unowned)}` : "every shard has an owner.",
      ),
    );
  }

  /** [0,1,2,5,7,8] -> "0-2, 5, 7-8". */
  function ranges(numbers) {
    const sorted = [...numbers].sort((a, b) => a - b);
    const parts = [];
    for (let i = 0; i < sorted.length; ) {
      let j = i;
      while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j += 1;
      parts.push(i === j ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
      i = j + 1;
    }
    return parts.join(", ");
  }

  // ---------------------------------------------------------------- routing and start-up

  const VIEWS = { transactions: listView, attention: attentionView, topics: topicsView, live: liveView };
  const current = { generation: 0, leave: [] };

  function route() {
    for (const stop of current.leave) stop();
    current.leave = [];
    const generation = ++current.generation;
    const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
    const view = VIEWS[name] ? name : "transactions";
    for (const link of document.querySelectorAll(".nav a")) {
      link.classList.toggle("active", link.dataset.view === view);
    }
    const main = document.getElementById("main");
    main.replaceChildren();
    if (openDialog.close) openDialog.close(false);
    const ctx = {
      main,
      alive: () => generation === current.generation,
      onLeave: (stop) => current.leave.push(stop),
    };
    if (view === "transactions" && rest.length && rest.join("/")) {
      detailView(ctx, decodeURIComponent(rest.join("/")));
    } else {
      VIEWS[view](ctx);
    }
  }

  async function showNode() {
    const target = document.getElementById("node-id");
    target.textContent = location.host;
    try {
      const stats = await api("GET", "/api/admin/stats");
      target.textContent = `${stats.node_id} · ${location.host}`;
    } catch {
      // The host is enough to say where the console points; a missing token is said by the banner.
    }
  }

  function start() {
    const input = document.getElementById("token-input");
    input.value = token();
    document.getElementById("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      else sessionStorage.removeItem(TOKEN_KEY);
      document.getElementById("banner").hidden = true;
      showNode();
      route();
    });
    window.addEventListener("hashchange", route);
    showNode();
    route();
  }

  start();
})();
