/* The members' page, beside its inline script: a card per calendar connection, "Add another calendar",
   the booking form, and the week view (the member's bookings and the busy times of every calendar that
   counts for conflicts, in the browser's time zone), with a question before confirming over a busy time.
   Plain JavaScript over the REST API. The inline script owns the status and the bookings list: it says
   when they change ("calendar:status", "calendar:bookings"); this one says "calendar:changed" back. */
"use strict";
(() => {
  const SYNC = "/api/calendar-sync/";
  const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const HOUR_PX = 44;  // the height of an hour in the week grid
  const LABELS = {google: "Google Calendar", microsoft: "Outlook Calendar", caldav: "CalDAV calendar", ics: "ICS link"};
  const $ = (id) => document.getElementById(id);
  const TIME = new Intl.DateTimeFormat(undefined, {hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
  const DAY = new Intl.DateTimeFormat(undefined, {weekday: "short", day: "numeric", month: "short"});
  const LONG_DAY = new Intl.DateTimeFormat(undefined, {weekday: "long", day: "numeric", month: "long"});

  function csrf() { return (document.cookie.match(/(?:^|; )csrftoken=([^;]+)/) || [])[1] || ""; }
  async function call(method, url, body) {
    const response = await fetch(url, {method, credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf()}, body: body ? JSON.stringify(body) : undefined});
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) {
      throw Object.assign(new Error((data && data.detail) || response.statusText), {data, status: response.status});
    }
    return data;
  }
  async function part(name, params) {  // a piece of this page, rendered on the server
    const response = await fetch(location.pathname + "?" + new URLSearchParams({part: name, ...params}), {credentials: "same-origin"});
    if (!response.ok) throw new Error(response.statusText);
    return response;
  }
  function say(text, ok, where) { const p = $(where || "outcome"); p.textContent = text; p.className = ok ? "ok" : "error"; }
  function changed() { document.dispatchEvent(new Event("calendar:changed")); }
  async function act(action, where) {
    try { await action(); } catch (error) { say(error.message, false, where); }
  }

  // ---- The member's connections -------------------------------------------------------------------
  let status = null, connectionsKey = null;
  function connectionById(id) { return status && status.connections.find((c) => String(c.id) === String(id)); }
  function labelOf(provider) {
    const configured = status && status.providers.find((p) => p.name === provider);
    return configured ? configured.label : LABELS[provider] || provider;
  }
  function nameOf(id) {
    const c = connectionById(id);
    return c ? labelOf(c.provider) + (c.account ? " (" + c.account + ")" : "") : "another calendar";
  }
  async function loadConnections() {
    const html = await (await part("connections")).text();
    $("connection-list").replaceWith(new DOMParser().parseFromString(html, "text/html").getElementById("connection-list"));
  }
  function renderAddButtons() {
    $("add-oauth").replaceChildren(...status.providers.map((p) => {
      const button = document.createElement("button");
      button.type = "button"; button.className = "secondary"; button.id = "add-" + p.name;
      button.textContent = "Add " + p.label;
      button.onclick = () => startOAuth(p.name, true);
      return button;
    }));
  }
  async function startOAuth(provider, add) {
    await act(async () => {
      sessionStorage.setItem("calendar_sync.connecting", provider);  // the inline script names it on return
      if (add) sessionStorage.setItem("calendar_sync.adding", "1"); else sessionStorage.removeItem("calendar_sync.adding");
      location.href = (await call("GET", SYNC + "auth/" + encodeURIComponent(provider) + (add ? "?add=1" : ""))).authorization_url;
    });
  }
  document.addEventListener("calendar:status", async (event) => {
    status = event.detail;
    renderAddButtons();
    const key = JSON.stringify(status.connections.map((c) => [c.id, c.write, c.conflicts, c.status, c.account]));
    if (key === connectionsKey) return;
    const first = connectionsKey === null;
    connectionsKey = key;
    if (!first) await act(loadConnections);  // the first time, the server's rendering is current
    loadWeek(true);
  });

  $("connections").addEventListener("change", async (event) => {
    const card = event.target.closest(".connection"), toggle = event.target;
    if (!card) return;
    const id = card.dataset.id, write = toggle.classList.contains("toggle-write"), on = toggle.checked;
    if (!write && !toggle.classList.contains("toggle-conflicts")) return;
    try {
      await call("PATCH", SYNC + "connections/" + id + "/", write ? {write: true} : {conflicts: on});
      say(write ? "Bookings now go to " + nameOf(id) + "; your upcoming bookings move there."
        : nameOf(id) + (on ? " counts for conflicts." : " no longer counts for conflicts."), true);
      changed();
    } catch (error) {
      toggle.checked = !on;  // refused (e.g. reconnect needed first): the box says what is true
      say(error.message, false);
    }
  });
  $("connections").addEventListener("click", (event) => {
    const card = event.target.closest(".connection");
    if (!card || event.target.tagName !== "BUTTON") return;
    const id = card.dataset.id, ask = card.querySelector(".disconnect-one-ask"), classes = event.target.classList;
    if (classes.contains("reconnect")) {
      if (card.dataset.provider === "caldav") {  // the password again, in the CalDAV form
        $("add-caldav").open = true;
        $("caldav-form").username.value = card.dataset.account;
        $("caldav-form").password.focus();
        say("Enter the server and password again to reconnect " + nameOf(id) + ".", true);
      } else {
        startOAuth(card.dataset.provider, !connectionById(id) || !connectionById(id).write);
      }
    } else if (classes.contains("disconnect-one")) {
      ask.hidden = false; event.target.hidden = true;
      ask.querySelector(".disconnect-one-confirm").focus();
    } else if (classes.contains("disconnect-one-keep")) {
      ask.hidden = true; card.querySelector(".disconnect-one").hidden = false;
    } else if (classes.contains("disconnect-one-confirm")) {
      const name = nameOf(id);
      act(async () => {
        await call("DELETE", SYNC + "connections/" + id + "/");
        say("Disconnected " + name + ".", true);
        changed();
      });
    }
  });

  // Apple iCloud (a preset: Apple's server) or any CalDAV server; an ICS link.
  const caldav = $("caldav-form");
  caldav.addEventListener("change", () => {
    const icloud = caldav.preset.value === "icloud";
    $("server-url-field").hidden = icloud;
    caldav.server_url.required = !icloud;
  });
  caldav.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = {username: caldav.username.value, password: caldav.password.value};
    if (caldav.preset.value === "icloud") body.preset = "icloud"; else body.server_url = caldav.server_url.value;
    act(async () => {
      await call("POST", SYNC + "connections/caldav", body);
      caldav.reset(); $("server-url-field").hidden = true; $("add-caldav").open = false;
      say((body.preset ? "Apple iCloud" : "Your CalDAV calendar") + " is connected.", true);
      changed();
    });
  });
  const ics = $("ics-form");
  ics.addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      await call("POST", SYNC + "connections/ics", {url: ics.url.value});
      ics.reset(); $("add-ics").open = false;
      say("The ICS link is added: its events count for conflicts.", true);
      changed();
    });
  });

  // ---- Booking -----------------------------------------------------------------------------------
  const pad = (n) => String(n).padStart(2, "0");
  const localDate = (d) => d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
  const form = $("booking-form");
  if (form) {
    const next = new Date(); next.setHours(next.getHours() + 1, 0, 0, 0);
    if (!form.date.value) {  // else: a refused form, back with what was typed
      form.date.value = localDate(next);
      form.start.value = pad(next.getHours()) + ":00";
      form.end.value = pad((next.getHours() + 1) % 24) + ":00";
    }
    form.zone.value = ZONE;
    // "Repeat": its options only when it repeats. A series is posted as a form (the page makes it with the
    // same services as the series API, and answers a clash with a page naming the dates).
    const repeats = () => { $("repeat-options").hidden = !form.repeat.value; };
    form.repeat.addEventListener("change", repeats);
    repeats();
    form.addEventListener("submit", (event) => {
      if (form.repeat.value) return;
      event.preventDefault();
      const start = new Date(form.date.value + "T" + form.start.value);  // no offset: the browser's local time
      const end = new Date(form.date.value + "T" + form.end.value);
      if (!(end > start)) { say("The end must be after the start (on the same day).", false, "booking-outcome"); return; }
      showFieldErrors({});
      const body = {workspace: form.workspace.value, title: form.title.value, start: start.toISOString(), end: end.toISOString(),
                    guests: guestList(form.guests.value), conference: form.conference ? form.conference.value : "none"};
      act(async () => {
        let booking;
        try { booking = await call("POST", "/api/bookings/", body); } catch (error) {
          const said = showFieldErrors(error.data || {});  // beside their fields, and in the outcome line
          throw said ? new Error("Not booked: " + said) : error;
        }
        say("Booked “" + booking.title + "”, " + DAY.format(start) + " " + TIME.format(start) + "–" + TIME.format(end) +
            " " + ZONE + ". Not confirmed yet: see it in your week, then confirm it.", true, "booking-outcome");
        form.title.value = form.guests.value = "";
        weekStart = mondayOf(start);
        changed();
        loadWeek(true);
      }, "booking-outcome");
    });
  }

  // Guests as the form takes them (the server reads them the same way without JavaScript): separated by
  // commas, semicolons or new lines; "Name <address>" is its address. The API checks each one.
  function guestList(text) {
    return text.split(/[,;\r\n]+/).map((e) => e.trim()).filter(Boolean)
      .map((e) => { const named = e.match(/^[^<>]*<([^<>]*)>$/); return named ? named[1].trim() : e; });
  }
  // An API refusal's words next to each field at fault ({field: [message]}); {} clears them. Returns what it said.
  function showFieldErrors(data) {
    const said = [];
    for (const span of form.querySelectorAll(".field-error")) {
      const field = span.id.replace(/-error$/, "");
      span.textContent = Array.isArray(data[field]) ? data[field].join(" ") : "";
      if (span.textContent) said.push(span.textContent);
      const input = form.elements[field];
      if (input && input.setAttribute) {
        if (span.textContent) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
      }
    }
    return said.join(" ");
  }

  // ---- The week ----------------------------------------------------------------------------------
  function mondayOf(d) { return new Date(d.getFullYear(), d.getMonth(), d.getDate() - (d.getDay() + 6) % 7); }
  function addDays(d, n) { return new Date(d.getFullYear(), d.getMonth(), d.getDate() + n); }  // local days (DST-safe)
  const overlaps = (a, b) => a.start < b.end && b.start < a.end;
  let weekStart = mondayOf(new Date()), week = {bookings: [], busy: [], errors: []}, loading = 0;
  let busyRead = {week: null, answer: null};
  {  // back from booking a series (#series-<id>): the week of its next date
    const series = location.hash.startsWith("#series-") && document.getElementById(location.hash.slice(1));
    if (series && series.dataset.next) weekStart = mondayOf(new Date(series.dataset.next));
  }  // the shown week's busy times (a promise): read once per week or change

  async function loadWeek(freshBusy) {
    const mine = ++loading, from = weekStart, range = {start: from.toISOString(), end: addDays(from, 7).toISOString()};
    if (freshBusy || busyRead.week !== from.getTime()) busyRead = {week: from.getTime(), answer: busyIn(range)};
    const busyAnswer = busyRead.answer;
    try {
      const bookings = (await (await part("week", range)).json()).bookings.map(times);
      const {busy, errors} = await busyAnswer;
      if (mine !== loading) return;  // a later load (another week, fresher data) is under way
      week = {bookings, busy, errors};
      render(from);
    } catch (error) { if (mine === loading) say(error.message, false, "week-errors"); }
  }
  function times(item) { return {...item, start: new Date(item.start), end: new Date(item.end)}; }
  async function busyIn(range) {
    if (!status || !status.connections.some((c) => c.conflicts)) return {busy: [], errors: []};
    try {
      const answer = await call("GET", SYNC + "busy?" + new URLSearchParams(range));
      return {busy: answer.busy.map(times), errors: answer.errors};
    } catch (error) {  // nothing readable: said, and the bookings still show
      return {busy: [], errors: [{connection: null, code: (error.data && error.data.code) || error.message}]};
    }
  }
  document.addEventListener("calendar:bookings", () => loadWeek(false));

  function span(item) { return TIME.format(item.start) + "–" + TIME.format(item.end); }
  function conflictsOf(booking) { return week.busy.filter((b) => overlaps(b, booking)); }

  function render(from) {
    const days = [...Array(7).keys()].map((i) => addDays(from, i));
    const last = addDays(from, 6);
    $("week-range").textContent = DAY.format(from) + " – " + DAY.format(last) + " " + last.getFullYear();
    $("week-errors").textContent = week.errors.map((e) =>
      (e.connection ? "Could not read " + nameOf(e.connection) : "Could not read your calendars") + " (" + e.code + ").").join(" ");
    // Each item cut into the part of each day it covers; the grid spans 7:00–21:00 and whatever falls outside.
    const pieces = days.map((day) => {
      const dayEnd = addDays(day, 1), cut = [];
      for (const [kind, items] of [["busy", week.busy], ["booking", week.bookings]]) {
        for (const item of items) {
          if (!overlaps(item, {start: day, end: dayEnd})) continue;
          const from = item.start > day ? item.start.getHours() + item.start.getMinutes() / 60 : 0;
          const to = item.end < dayEnd ? item.end.getHours() + item.end.getMinutes() / 60 : 24;
          cut.push({kind, item, from, to: Math.max(to, from + 0.25)});
        }
      }
      return cut;
    });
    const all = pieces.flat();
    const top = Math.min(7, ...all.map((p) => Math.floor(p.from)));
    const bottom = Math.max(21, ...all.map((p) => Math.ceil(p.to)));
    const height = (bottom - top) * HOUR_PX + "px";

    const grid = document.createElement("div");
    grid.className = "week-grid";
    grid.append(element("div", "corner"));
    const today = localDate(new Date());
    for (const day of days) {
      const head = element("div", "day-head", DAY.format(day));
      if (localDate(day) === today) head.setAttribute("aria-current", "date");
      grid.append(head);
    }
    const hours = element("div", "hours");
    hours.style.height = height;
    for (let h = top; h < bottom; h++) hours.append(element("span", "hour", pad(h) + ":00"));
    grid.append(hours);
    days.forEach((day, i) => {
      const column = element("ul", "day");
      column.setAttribute("aria-label", LONG_DAY.format(day));
      column.style.height = height;
      column.style.backgroundSize = "100% " + HOUR_PX + "px";
      const lanes = lanesOf(pieces[i]);
      for (const piece of pieces[i]) column.append(block(piece, top, lanes));
      grid.append(column);
    });
    $("week-grid").replaceChildren(grid);
    // The overlaps again in words under the grid, where a small block cannot hold them.
    $("week-conflicts").replaceChildren(...week.bookings.filter((b) => conflictsOf(b).length).map((b) =>
      element("li", "error", "⚠ “" + b.title + "”, " + DAY.format(b.start) + " " + span(b) + ", overlaps " +
        conflictsOf(b).map((x) => span(x) + " in " + nameOf(x.connection)).join(" and ") + ".")));
  }
  // Items side by side where they overlap: each piece gets the first lane free at its start.
  function lanesOf(pieces) {
    const ends = [];
    for (const piece of pieces.sort((a, b) => a.from - b.from || (a.kind === "busy" ? -1 : 1))) {
      piece.lane = ends.findIndex((end) => end <= piece.from);
      if (piece.lane < 0) piece.lane = ends.length;
      ends[piece.lane] = piece.to;
    }
    return Math.max(1, ends.length);
  }
  function element(tag, className, text) {
    const node = document.createElement(tag);
    node.className = className;
    if (text) node.textContent = text;
    return node;
  }
  function block({kind, item, from, to, lane}, top, lanes) {
    const li = element("li", "event " + kind);
    li.style.top = (from - top) * HOUR_PX + "px";
    li.style.height = (to - from) * HOUR_PX - 2 + "px";
    li.style.left = (lane * 100) / lanes + "%";
    li.style.width = 100 / lanes + "%";
    li.append(element("span", "time", span(item)), " ");
    if (kind === "busy") {
      li.dataset.connection = item.connection;
      li.append(element("span", "what", (item.title || "Busy") + " · " + nameOf(item.connection)));
      li.title = li.textContent;
      return li;
    }
    li.dataset.booking = item.id;
    li.classList.add(item.status);
    if (item.series) {  // an occurrence of a series: ↻, and the rule in words
      li.classList.add("series");
      li.dataset.series = item.series.id;
      const mark = element("span", "repeat-mark", "↻ ");
      mark.setAttribute("aria-hidden", "true");
      li.append(mark);
    }
    const link = element("a", "what", item.title);
    link.href = "#booking-" + item.id;
    li.append(link, element("span", "where", " · " + item.workspace + (item.status === "pending" ? " (not confirmed)" : "")));
    if (item.series) li.append(element("span", "repeats", "Repeats: " + item.series.rule));
    if (item.video) {  // the join link once ready (the server only sends an https one), else where it stands
      const video = item.video.url ? element("a", "video join", "Join " + item.video.name) : element("span", "video", item.video.text);
      if (item.video.url) { video.href = item.video.url; video.target = "_blank"; video.rel = "noopener"; }
      video.dataset.state = item.video.state;
      li.append(video);
    }
    if (item.guests) li.append(element("span", "guests", item.guests));
    const hits = conflictsOf(item);
    if (hits.length) {
      li.classList.add("conflict");
      li.append(element("strong", "overlap-warning", "⚠ Overlaps " + hits.map((b) => span(b) + " in " + nameOf(b.connection)).join(", ")));
    }
    li.title = li.textContent;  // the whole text, where the block is too small to show it
    return li;
  }
  $("week-prev").onclick = () => { weekStart = addDays(weekStart, -7); loadWeek(true); };
  $("week-next").onclick = () => { weekStart = addDays(weekStart, 7); loadWeek(true); };
  $("week-today").onclick = () => { weekStart = mondayOf(new Date()); loadWeek(true); };
  for (const node of document.querySelectorAll(".zone-name")) node.textContent = ZONE;

  // ---- Confirm asks first when the booking overlaps a busy time --------------------------------------
  // Busy times are read again for the booking itself (the server keeps them briefly); a read that
  // fails never blocks confirming. Without JavaScript, Confirm posts straight away.
  let asked = null;
  document.addEventListener("submit", async (event) => {
    const form = event.target, row = form.closest("#bookings tr[data-status=pending]");
    if (!row || form.dataset.checked) return;
    event.preventDefault();
    const booking = {start: new Date(row.dataset.start), end: new Date(row.dataset.end)};
    const {busy} = await busyIn({start: row.dataset.start, end: row.dataset.end});
    const hits = busy.filter((b) => overlaps(b, booking));
    if (!hits.length) { submit(form); return; }
    const title = row.querySelector("td").firstChild.textContent.trim();
    $("overlap-question").textContent = "“" + title + "” (" + DAY.format(booking.start) + ", " + span(booking) + " " + ZONE +
      ") overlaps " + hits.map((b) => (b.title ? "“" + b.title + "” " : "a busy time ") + span(b) + " in " + nameOf(b.connection)).join(" and ") +
      " — confirm anyway?";
    asked = form;
    $("overlap-ask").showModal();
  });
  function submit(form) {  // the list may have been refreshed meanwhile: post the form now on the page
    const live = [...document.forms].find((f) => f.action === form.action) || form;
    live.dataset.checked = "yes";
    live.submit();
  }
  $("overlap-confirm").onclick = () => { $("overlap-ask").close(); if (asked) submit(asked); };
  $("overlap-back").onclick = () => { $("overlap-ask").close(); asked = null; };
})();
