// kmirror dashboard: polls api/flows every 2 s and renders every flow.
// Plain DOM, no framework; every value from the API is set as text, never
// as HTML. Throughput is computed here from successive totals.
"use strict";

(function () {
  const POLL_MS = 2000;
  const prev = new Map(); // flow name -> {records, bytes, at, rate}
  const prevErrors = new Map(); // flow name -> {kind: count}
  const flowsEl = document.getElementById("flows");
  const banner = document.getElementById("banner");
  const updated = document.getElementById("updated");

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function num(n) {
    if (n === undefined || n === null || Number.isNaN(n)) return "—";
    return Math.round(n).toLocaleString("en-US");
  }

  function rate(n) {
    if (n === undefined || n === null) return "—";
    if (n >= 100) return num(n);
    return n.toFixed(n >= 10 ? 1 : 2);
  }

  function bytes(n) {
    if (n === undefined || n === null) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? Math.round(n) : n.toFixed(1)) + " " + units[i];
  }

  function seconds(s) {
    if (s === undefined || s === null) return "—";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function ms(v) {
    if (v === undefined || v === null) return "—";
    return v < 1000 ? v.toFixed(v < 10 ? 1 : 0) + " ms" : seconds(v / 1000);
  }

  // latency shows p50 / p99 with one unit when both are below a second.
  function latency(p50, p99) {
    if (p99 < 1000) return ms(p50).replace(" ms", "") + " / " + ms(p99);
    return ms(p50) + " / " + ms(p99);
  }

  function stat(label, value, sub, key, raw) {
    return el("div", { class: "stat", "data-stat": key, "data-value": raw },
      el("div", { class: "label" }, label),
      el("div", { class: "value" }, value),
      sub ? el("div", { class: "sub" }, sub) : null);
  }

  // state returns [class, label, reason] of a flow.
  function state(f) {
    if (f.ready) return ["ready", "ready", ""];
    const o = f.owner;
    if (o && !o.holding) {
      const h = o.holder ? o.holder.instance + " (host " + o.holder.host + ", pid " + o.holder.pid + ")" : "no instance yet";
      return ["waiting", "waiting", "another instance holds the flow: " + h];
    }
    const why = [];
    if (f.source_error) why.push("source " + f.source + ": " + f.source_error);
    else if (!f.source_up) why.push("source " + f.source + " not reached yet");
    if (f.target_error) why.push("target " + f.target + ": " + f.target_error);
    else if (!f.target_up) why.push("target " + f.target + " not reached yet");
    if (why.length === 0) why.push("starting: setting up the flow");
    return ["not-ready", "not ready", why.join("; ")];
  }

  function recovery(rp) {
    if (!rp) return null;
    const parts = [];
    if (rp.records !== undefined) parts.push(num(rp.records) + " records");
    if (rp.bytes !== undefined) parts.push(bytes(rp.bytes));
    if (rp.seconds !== undefined && rp.seconds !== null) parts.push(seconds(rp.seconds));
    return parts.join(" · ");
  }

  function renderFlow(f, now) {
    const totals = f.totals || {};
    const records = totals.Records || 0, byteCount = totals.Bytes || 0;
    let p = prev.get(f.name);
    let recRate = p ? p.recRate : null, byteRate = p ? p.byteRate : null;
    if (p && now > p.at) {
      const dt = (now - p.at) / 1000;
      if (records >= p.records) {
        recRate = (records - p.records) / dt;
        byteRate = (byteCount - p.bytes) / dt;
      } else {
        recRate = byteRate = null; // restarted: counts began again
      }
    }
    prev.set(f.name, { records: records, bytes: byteCount, at: now, recRate: recRate, byteRate: byteRate });

    const [cls, label, reason] = state(f);
    const sec = el("section", { class: "flow", "data-flow": f.name, "data-state": cls });
    sec.append(el("div", { class: "flow-head" },
      el("h2", { class: "flow-name" }, f.name),
      el("span", { class: "state " + cls }, label),
      el("span", { class: "route" }, f.source + " → " + f.target)));
    if (reason) sec.append(el("p", { class: "reason " + cls }, reason));

    const lat = f.latency_ms;
    const rp = f.recovery_point;
    const stats = el("div", { class: "stats" },
      stat("records replicated", num(records), bytes(byteCount), "records", records),
      stat("throughput", recRate === null ? "—" : rate(recRate) + " rec/s",
        byteRate === null ? "measuring…" : bytes(byteRate) + "/s", "throughput", recRate === null ? "" : recRate.toFixed(3)),
      stat("lag", num(totals.Lag) + " records", rp && rp.seconds !== undefined ? "oldest " + seconds(rp.seconds) : null, "lag", totals.Lag),
      stat("latency p50 / p99", lat ? latency(lat.p50, lat.p99) : "—", lat ? "last minute" : "no records in the last minute", "latency"),
      stat("partitions", num(totals.Partitions), totals.Failing ? totals.Failing + " retrying a write" : null, "partitions", totals.Partitions),
      stat("group sync age", f.group_sync_age_seconds === undefined ? "—" : seconds(f.group_sync_age_seconds),
        f.group_sync_age_seconds === undefined ? "no group checkpointed" : "youngest checkpoint", "group-sync-age"));
    if (rp) stats.append(stat("recovery point", recovery(rp), "data not yet on the target", "recovery-point"));
    sec.append(stats);

    // Errors by kind since the start; kinds that grew since the last poll stand out.
    const errs = f.errors || {};
    const before = prevErrors.get(f.name) || {};
    prevErrors.set(f.name, errs);
    const kinds = Object.keys(errs).sort();
    sec.append(el("h3", {}, "errors by kind"));
    if (kinds.length === 0) sec.append(el("p", { class: "none errors" }, "none"));
    else {
      const ul = el("ul", { class: "plain errors" });
      for (const k of kinds) {
        const grew = before[k] !== undefined && errs[k] > before[k];
        ul.append(el("li", { class: grew ? "grew" : "", "data-kind": k }, k + ": " + num(errs[k]) + (grew ? " (+" + num(errs[k] - before[k]) + ")" : "")));
      }
      sec.append(ul);
    }

    const stuck = f.stuck || [];
    const stuckBy = new Map(stuck.map((s) => [s.topic, s]));
    if (stuck.length > 0) {
      sec.append(el("h3", {}, "stuck topics"));
      const ul = el("ul", { class: "plain stuck" });
      for (const s of stuck) {
        const parts = s.partitions && s.partitions.length ? "partitions " + s.partitions.join(", ") : "all partitions";
        ul.append(el("li", {}, s.topic + ", " + parts + ": " + s.reason));
      }
      sec.append(ul);
    }
    const stopped = totals.Stopped || [];
    if (stopped.length > 0) {
      sec.append(el("h3", {}, "stopped partitions"));
      const ul = el("ul", { class: "plain stopped" });
      for (const s of stopped) ul.append(el("li", {}, s.Topic + "/" + s.Partition + " at source offset " + s.Offset + ": " + s.Reason));
      sec.append(ul);
    }

    const o = f.owner;
    if (o && o.members && o.members.length > 0) {
      sec.append(el("h3", {}, "scale-out members"));
      const tb = el("tbody");
      for (const m of o.members) {
        const elected = o.holder && o.holder.member_id && m.member_id === o.holder.member_id;
        tb.append(el("tr", { "data-member": m.instance },
          el("td", {}, m.instance + (elected ? " (elected)" : "")),
          el("td", {}, m.host),
          el("td", { class: "num" }, m.pid),
          el("td", { class: "num" }, (m.partitions || []).length),
          el("td", { class: "num" }, ((m.revoking || []).length || "") + (m.released ? " (released)" : ""))));
      }
      sec.append(el("table", { class: "members" },
        el("thead", {}, el("tr", {}, el("th", {}, "instance"), el("th", {}, "host"), el("th", { class: "num" }, "pid"),
          el("th", { class: "num" }, "partitions owned"), el("th", { class: "num" }, "handing over"))), tb));
    }

    const topics = f.topics || [];
    const lagBy = f.lag_by_topic || {};
    const withRP = topics.some((t) => t.recovery_point);
    sec.append(el("h3", {}, "topics (" + topics.length + ")"));
    if (topics.length === 0) sec.append(el("p", { class: "none" }, "no topic replicated yet"));
    else {
      const tb = el("tbody");
      for (const t of topics) {
        const s = stuckBy.get(t.Source);
        tb.append(el("tr", { class: s ? "topic stuck" : "topic", "data-topic": t.Source },
          el("td", { class: "topic-source" }, t.Source),
          el("td", { class: "topic-target" }, t.Target),
          el("td", { class: "num" }, t.Partitions),
          el("td", { class: "num topic-lag", "data-value": lagBy[t.Source] }, lagBy[t.Source] === undefined ? "—" : num(lagBy[t.Source])),
          withRP ? el("td", { class: "num" }, t.recovery_point ? recovery(t.recovery_point) : "—") : null,
          el("td", {}, [s ? "stuck: " + s.reason : "", t.Leaderless && t.Leaderless.length ? "no leader: partitions " + t.Leaderless.join(", ") : ""].filter(Boolean).join("; "))));
      }
      sec.append(el("table", { class: "topics" },
        el("thead", {}, el("tr", {}, el("th", {}, "source topic"), el("th", {}, "target topic"), el("th", { class: "num" }, "partitions"),
          el("th", { class: "num" }, "lag (records)"), withRP ? el("th", { class: "num" }, "recovery point") : null, el("th", {}, "notes"))), tb));
    }
    return sec;
  }

  function showBanner(text) {
    banner.textContent = text;
    banner.hidden = !text;
  }

  async function poll() {
    try {
      const resp = await fetch("api/flows", { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
      if (resp.status === 401) {
        showBanner("Unauthorized: the admin endpoint needs credentials (http.basic_auth or http.auth_token). " +
          "Reload the page to enter them; a bearer token cannot be entered in a browser, see the dashboard documentation.");
        updated.textContent = "unauthorized";
        return;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const flows = await resp.json();
      const now = Date.now();
      const frag = document.createDocumentFragment();
      if (flows.length === 0) frag.append(el("p", { class: "none" }, "No flow configured."));
      for (const f of flows) frag.append(renderFlow(f, now));
      flowsEl.replaceChildren(frag);
      showBanner("");
      updated.textContent = "updated " + new Date(now).toLocaleTimeString();
      updated.setAttribute("data-polls", String(Number(updated.getAttribute("data-polls") || 0) + 1));
    } catch (e) {
      showBanner("Cannot read api/flows: " + e.message + ". Showing the last data; retrying every " + POLL_MS / 1000 + " s.");
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
