// TimeWarp viewer: plain JavaScript over window.TIMEWARP_DATA (data.js, written by timewarp/viewer.py).
(function () {
  "use strict";
  var DATA = window.TIMEWARP_DATA || { videos: [] };
  var VIDEOS = DATA.videos || [];
  var SVGNS = "http://www.w3.org/2000/svg";
  var state = { split: "", category: "", text: "", id: null, perm: 0 };

  function el(tag, attrs, children) {
    var n = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") n.textContent = attrs[k];
      else if (k === "cls") n.className = attrs[k];
      else if (k === "on") for (var ev in attrs.on) n.addEventListener(ev, attrs.on[ev]);
      else if (attrs[k] !== null && attrs[k] !== undefined) n.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) n.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return n;
  }
  function svg(tag, attrs) {
    var n = document.createElementNS(SVGNS, tag);
    for (var k in attrs) n.setAttribute(k, attrs[k]);
    return n;
  }
  function color(i, n) { return "hsl(" + Math.round((i * 360) / Math.max(n, 1) + 200) % 360 + ",62%,48%)"; }
  function fmt(t) { return (t == null ? "?" : Number(t).toFixed(2)) + " s"; }
  function letter(i) { return "ABCD".charAt(i); }

  // ------------------------------------------------------------------ filters and list
  function fillSelect(id, values) {
    var s = document.getElementById(id);
    values.forEach(function (v) { s.appendChild(el("option", { value: v, text: v })); });
  }
  function uniq(f) {
    var seen = {};
    VIDEOS.forEach(function (v) { seen[f(v)] = true; });
    return Object.keys(seen).sort();
  }
  function matches(v) {
    if (state.split && v.split !== state.split) return false;
    if (state.category && v.category !== state.category) return false;
    if (state.text) {
      var hay = [v.id, v.title, v.category].concat(v.clips.map(function (c) { return c.caption; })).join(" ").toLowerCase();
      if (hay.indexOf(state.text) < 0) return false;
    }
    return true;
  }
  function renderList() {
    var list = document.getElementById("list");
    list.textContent = "";
    var shown = VIDEOS.filter(matches);
    document.getElementById("summary").textContent =
      shown.length + " of " + VIDEOS.length + " videos";
    shown.forEach(function (v) {
      var thumb = v.clips.length && v.clips[0].thumb ? el("img", { src: v.clips[0].thumb, alt: "", loading: "lazy" }) : el("div", { cls: "noimg" });
      var changed = v.bench.filter(function (q) { return q.key_changed; }).length;
      var item = el("div", { cls: "item" + (v.id === state.id ? " active" : ""), "data-id": v.id, on: { click: function () { select(v.id); } } }, [
        thumb,
        el("div", {}, [
          el("div", { cls: "t", text: v.title || v.id, title: v.title || v.id }),
          el("div", { cls: "m" }, [
            el("span", { cls: "badge " + v.split, text: v.split }),
            el("span", { cls: "badge", text: v.clips.length + " clips" }),
            changed ? el("span", { cls: "badge changed", text: changed + " key changed" }) : null
          ]),
          el("div", { cls: "m", text: v.id + " \u00b7 " + v.category })
        ])
      ]);
      list.appendChild(item);
    });
    if (!shown.some(function (v) { return v.id === state.id; })) {
      if (shown.length) select(shown[0].id);
      else { state.id = null; document.getElementById("detail").replaceChildren(el("p", { cls: "empty", text: "No video matches the filters." })); }
    }
  }

  // ------------------------------------------------------------------ detail
  function select(id) {
    if (state.id !== id) state.perm = 0;
    state.id = id;
    if (location.hash.slice(1) !== encodeURIComponent(id)) history.replaceState(null, "", "#" + encodeURIComponent(id));
    Array.prototype.forEach.call(document.querySelectorAll(".item"), function (n) {
      n.classList.toggle("active", n.getAttribute("data-id") === id);
    });
    var v = VIDEOS.filter(function (x) { return x.id === id; })[0];
    if (v) renderDetail(v);
  }

  function player(label, src, id, captionOf) {
    var cap = el("div", { cls: "cap" });
    var body;
    if (src) {
      body = el("video", { id: id, src: src, controls: "", muted: "", preload: "metadata", playsinline: "" });
      body.muted = true;
      body.addEventListener("timeupdate", function () { cap.textContent = captionOf(body.currentTime); moveHead(id, body.currentTime); });
    } else {
      body = el("div", { cls: "missing", id: id, text: "video file not found" });
    }
    return el("div", { cls: "player" }, [el("div", { cls: "lbl", text: label }), body, cap]);
  }

  function clipAt(clips, t) {
    for (var i = 0; i < clips.length; i++) if (clips[i].start <= t && t < clips[i].end) return clips[i];
    return null;
  }

  var heads = {};
  function moveHead(id, t) {
    var h = heads[id];
    if (!h) return;
    var x = Math.max(0, Math.min(1, t / h.duration)) * h.w;
    h.line.setAttribute("x1", x); h.line.setAttribute("x2", x);
  }

  function timeline(v, s) {
    var W = 1000, H = 36, Y1 = 22, Y2 = 130, n = v.clips.length;
    var box = el("div", { id: "timeline" });
    var g = svg("svg", { viewBox: "0 0 " + W + " " + (Y2 + H + 22), preserveAspectRatio: "none", role: "img",
      "aria-label": "clip timeline: real order above, shuffled order below" });
    var dn = v.duration || (n ? v.clips[n - 1].end : 1);
    var ds = s ? (s.duration || s.clips[s.clips.length - 1].end) : 1;
    function xN(t) { return (t / dn) * W; }
    function xS(t) { return (t / ds) * W; }
    var axis1 = svg("text", { x: 0, y: 14, "class": "axis" }); axis1.textContent = "normal video (real order), " + fmt(dn);
    g.appendChild(axis1);
    if (s) {
      // the permutation: a band from each clip's place in the real order to its place in the shuffled video
      s.clips.forEach(function (c) {
        var o = v.clips[c.source_index];
        g.appendChild(svg("polygon", { "class": "link", fill: color(c.source_index, n),
          points: [xN(o.start), Y1 + H, xN(o.end), Y1 + H, xS(c.end), Y2, xS(c.start), Y2].join(" ") }));
      });
    }
    function seg(cls, x0, x1, y, i, title, onclick) {
      var r = svg("rect", { "class": "seg " + cls, x: x0, y: y, width: Math.max(1, x1 - x0), height: H, rx: 3,
        fill: color(i, n), "data-clip": i });
      var tt = svg("title", {}); tt.textContent = title; r.appendChild(tt);
      r.addEventListener("click", onclick);
      g.appendChild(r);
      if (x1 - x0 > 14) {
        var t = svg("text", { x: (x0 + x1) / 2, y: y + H / 2 + 4, "text-anchor": "middle" }); t.textContent = String(i + 1);
        g.appendChild(t);
      }
    }
    function seek(id, t) { var p = document.getElementById(id); if (p && p.tagName === "VIDEO") { p.currentTime = t + 0.001; } }
    v.clips.forEach(function (c, i) {
      seg("normal", xN(c.start), xN(c.end), Y1, i, "clip " + (i + 1) + " (" + fmt(c.start) + " - " + fmt(c.end) + "): " + c.caption,
        function () { seek("player-normal", c.start); });
    });
    if (s) {
      var axis2 = svg("text", { x: 0, y: Y2 + H + 16, "class": "axis" });
      axis2.textContent = "shuffled video " + s.id + " (order " + s.permutation.map(function (k) { return k + 1; }).join(" ") + "), " + fmt(ds);
      g.appendChild(axis2);
      s.clips.forEach(function (c) {
        var o = v.clips[c.source_index];
        seg("shuffled", xS(c.start), xS(c.end), Y2, c.source_index,
          "position " + (c.index + 1) + ": clip " + (c.source_index + 1) + ": " + o.caption, function () { seek("player-shuffled", c.start); });
      });
    }
    heads = {};
    [["player-normal", Y1, dn], ["player-shuffled", Y2, ds]].forEach(function (h) {
      if (h[0] === "player-shuffled" && !s) return;
      var line = svg("line", { "class": "head", x1: 0, x2: 0, y1: h[1] - 3, y2: h[1] + H + 3 });
      g.appendChild(line);
      heads[h[0]] = { line: line, duration: h[2], w: W };
    });
    box.appendChild(g);
    return box;
  }

  var empty = [];
  function section(title, items, render) {
    if (!items.length) { empty.push(title.toLowerCase()); return []; }
    var out = [el("h3", { text: title + " (" + items.length + ")" })];
    items.forEach(function (x) { out.push(render(x)); });
    return out;
  }

  function renderDetail(v) {
    var main = document.getElementById("detail");
    var s = v.shuffled[state.perm] || v.shuffled[0] || null;
    var kids = [
      el("h2", { text: v.title || v.id }),
      el("div", { cls: "sub" }, [
        el("span", { cls: "badge " + v.split, text: v.split }), el("span", { cls: "badge", text: v.category }),
        v.id + " \u00b7 " + v.clips.length + " clips \u00b7 " + fmt(v.duration) + " \u00b7 " + (v.size || []).join("x") +
        " \u00b7 source " + (v.source_id || "?")
      ])
    ];
    if (v.shuffled.length > 1) {
      var pick = el("select", { cls: "perm-pick", on: { change: function (e) { state.perm = Number(e.target.value); renderDetail(v); } } });
      v.shuffled.forEach(function (x, i) { var o = el("option", { value: i, text: x.id }); if (i === state.perm) o.selected = true; pick.appendChild(o); });
      kids.push(el("label", { cls: "sub", text: "permutation " }, [pick]));
    }
    kids.push(el("div", { cls: "players" }, [
      player("Normal (real order)", v.video, "player-normal", function (t) { var c = clipAt(v.clips, t); return c ? "clip " + (c.index + 1) + ": " + c.caption : ""; }),
      s ? player("Shuffled (" + s.id + ")", s.video, "player-shuffled", function (t) {
        var c = clipAt(s.clips, t); return c ? "clip " + (c.source_index + 1) + ": " + v.clips[c.source_index].caption : "";
      }) : el("div", { cls: "player" }, [el("div", { cls: "missing", text: "no shuffled video" })])
    ]));
    kids.push(timeline(v, s));
    kids.push(el("h3", { text: "Clips" }));
    var pos = {};
    if (s) s.clips.forEach(function (c) { pos[c.source_index] = c.index; });
    kids.push(el("div", { cls: "clips" }, v.clips.map(function (c, i) {
      return el("div", { cls: "clip", style: "--c:" + color(i, v.clips.length) }, [
        c.thumb ? el("img", { src: c.thumb, alt: "clip " + (i + 1), loading: "lazy" }) : null,
        el("div", { cls: "b" }, [
          el("b", { text: "clip " + (i + 1) }), " " + fmt(c.start) + " \u2013 " + fmt(c.end) +
          (s ? " \u00b7 shuffled position " + (pos[i] + 1) : ""), el("div", { text: c.caption })
        ])
      ]);
    })));
    kids = kids.concat(section("SFT questions", v.sft, function (q) {
      return el("div", { cls: "qa" }, [el("div", { cls: "qq", text: q.question }), el("div", { text: q.answer }),
        el("div", { cls: "keys" }, [el("span", { cls: "badge", text: q.kind })])]);
    }));
    kids = kids.concat(section("Preference pairs (explicit)", v.pref, function (p) {
      return el("div", { cls: "pair" }, [el("div", { cls: "qq", text: p.question }),
        el("div", { cls: "ch" }, [el("b", { text: "chosen: " }), p.chosen]),
        el("div", { cls: "rj" }, [el("b", { text: "rejected: " }), p.rejected]),
        el("div", { cls: "keys", text: "negative: " + p.negative + " (order " + (p.negative_order || []).map(function (k) { return k + 1; }).join(" ") + ")" })]);
    }));
    kids = kids.concat(section("Preference pairs (implicit)", v.implicit, function (p) {
      var c = p.corruption || {};
      return el("div", { cls: "pair" }, [el("div", { cls: "qq", text: p.prompt }),
        el("div", { cls: "ch" }, [el("b", { text: "chosen: " }), p.chosen]),
        el("div", { cls: "rj" }, [el("b", { text: "rejected: " }), p.rejected]),
        el("div", { cls: "keys", text: "rejected by " + p.rejected_mode + ", corruption " + (c.name || "?") + " " +
          JSON.stringify(c.params || {}) + (p.distance != null ? ", distance " + p.distance : "") })]);
    }));
    kids = kids.concat(section("Benchmark questions", v.bench, function (q) {
      var ni = "ABCD".indexOf(q.normal_answer), si = "ABCD".indexOf(q.shuffled_answer || "");
      return el("div", { cls: "q" }, [el("div", { cls: "qq", text: q.question }),
        el("ol", {}, (q.options || []).map(function (o, i) {
          return el("li", { cls: (i === ni ? "nk " : "") + (i === si ? "sk" : "") }, [letter(i) + ". " + o]);
        })),
        el("div", { cls: "keys" }, [
          "key on the normal video: " + q.normal_answer + " \u00b7 on the shuffled video: " + (q.shuffled_answer || "?") + " ",
          q.key_changed ? el("span", { cls: "badge changed", text: "shuffle changed the key" }) : el("span", { cls: "badge", text: "same key" }),
          el("span", { cls: "badge", text: q.kind })
        ])]);
    }));
    if (empty.length) {
      kids.push(el("p", { cls: "none", text: "No " + empty.join(", ") + " for this video" +
        (v.split === "test" ? " (test videos are held out for the benchmarks)." : v.split === "train" ? " (benchmarks use test videos only)." : ".") }));
      empty = [];
    }
    main.replaceChildren.apply(main, kids);
  }

  // ------------------------------------------------------------------ start
  fillSelect("f-split", uniq(function (v) { return v.split; }));
  fillSelect("f-category", uniq(function (v) { return v.category; }));
  document.getElementById("f-split").addEventListener("change", function (e) { state.split = e.target.value; renderList(); });
  document.getElementById("f-category").addEventListener("change", function (e) { state.category = e.target.value; renderList(); });
  document.getElementById("f-text").addEventListener("input", function (e) { state.text = e.target.value.trim().toLowerCase(); renderList(); });
  if (DATA.report) { var a = document.getElementById("report-link"); a.href = DATA.report; a.hidden = false; }
  var want = decodeURIComponent(location.hash.slice(1));
  if (want && VIDEOS.some(function (v) { return v.id === want; })) state.id = want;
  renderList();
  if (state.id) select(state.id);
  window.TIMEWARP_VIEWER = { select: select, state: state };
})();
