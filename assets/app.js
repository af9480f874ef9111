// mlbox UI: the small amount of JavaScript the pages use. Everything works without it; with it,
// states and logs update live over Server-Sent Events, destructive forms ask first, and the
// model "try it" form answers in place.
(function () {
  "use strict";

  function setState(el, state) {
    el.className = el.className.replace(/\bst-[a-z_]+/g, "").trim() + " st-" + state;
    if (el.classList.contains("badge")) el.textContent = state;
    if (el.tagName === "A") el.title = el.title.replace(/· [a-z_]+ ·/, "· " + state + " ·");
  }
  function each(sel, fn) { Array.prototype.forEach.call(document.querySelectorAll(sel), fn); }
  // The session's CSRF token: posts made from script carry it in a header.
  function csrfToken() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; }); }

  // Confirm before cancelling a run or moving an alias.
  each("form[data-confirm]", function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault();
    });
  });

  // A running run's page: task and run states as they change.
  each("[data-live-run]", function (el) {
    var id = el.getAttribute("data-live-run");
    var es = new EventSource("/api/v1/runs/" + id + "/events");
    es.addEventListener("state", function (m) {
      var ev = JSON.parse(m.data);
      if (ev.kind === "run") {
        each('[data-state-of="run:' + id + '"]', function (b) { setState(b, ev.state); });
      } else if (ev.task_id) {
        var mi = ev.map_index == null ? -1 : ev.map_index;
        each('[data-state-of="task:' + ev.task_id + ":" + mi + '"]', function (b) { setState(b, ev.state); });
        each('g.node[data-task="' + ev.task_id + '"]', function (g) {
          g.setAttribute("class", "node st-" + ev.state);
          var t = g.querySelector("tspan.state");
          if (t) t.textContent = ev.state;
        });
      }
    });
    es.addEventListener("end", function (m) {
      es.close();
      var ev = JSON.parse(m.data);
      each('[data-state-of="run:' + id + '"]', function (b) { setState(b, ev.state); });
      each('form[action$="/cancel"]', function (f) { f.remove(); });
      var note = document.createElement("p");
      note.className = "flash";
      note.innerHTML = "Run finished: " + esc(ev.state) + '. <a href="">Reload</a> for durations, outputs and artifacts.';
      el.parentNode.insertBefore(note, el.nextSibling);
    });
  });

  // Lists of runs (home, pipelines, a pipeline, runs): badges and squares follow the runs.
  if (document.querySelector('[data-state-of^="run:"]') && !document.querySelector("[data-live-run]")) {
    var feed = new EventSource("/api/v1/events");
    var told = false;
    feed.addEventListener("run", function (m) {
      var ev = JSON.parse(m.data);
      var shown = document.querySelectorAll('[data-state-of="run:' + ev.run_id + '"]');
      Array.prototype.forEach.call(shown, function (b) { setState(b, ev.state); });
      var starting = ev.state === "queued" || ev.state === "running";
      if (!shown.length && starting && !told && document.querySelector("[data-live-runs]")) {
        told = true;
        var note = document.createElement("p");
        note.className = "flash";
        note.innerHTML = 'New run <a href="/runs/' + ev.run_id + '">#' + ev.run_id + "</a> started. " + '<a href="">Reload</a> to list it.';
        document.querySelector("main").insertBefore(note, document.querySelector("main").firstChild);
      }
    });
  }

  // A task log that is still being written: replace the snapshot with the live stream.
  each("pre.log[data-follow]", function (pre) {
    var es = new EventSource(pre.getAttribute("data-follow"));
    var first = true;
    // The stream starts from the log's beginning, also after a reconnect: start over then.
    es.addEventListener("open", function () { first = true; });
    es.addEventListener("log", function (m) {
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
      if (first) { pre.textContent = ""; first = false; }
      pre.textContent += m.data;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    });
    es.addEventListener("end", function () { es.close(); pre.classList.add("done"); });
  });

  // "Try it": send the records to the serving endpoint and show the answer here.
  each("form[data-try]", function (f) {
    f.addEventListener("submit", function (e) {
      e.preventDefault();
      var out = f.parentNode.querySelector(".try-output");
      var body;
      try { body = JSON.parse(f.elements.input.value); } catch (err) {
        out.textContent = "The input is not JSON: " + err.message; return;
      }
      var alias = f.elements.alias.value.trim();
      var url = f.getAttribute("data-try") + (alias ? "?alias=" + encodeURIComponent(alias) : "");
      out.textContent = "…";
      fetch(url, { method: "POST", headers: { "content-type": "application/json", "x-csrf-token": csrfToken() }, body: JSON.stringify(body) })
        .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
        .then(function (x) { out.textContent = (x[0] === 200 ? "" : "HTTP " + x[0] + "\n") + JSON.stringify(x[1], null, 2); })
        .catch(function (err) { out.textContent = "Request failed: " + err; });
    });
  });
})();
