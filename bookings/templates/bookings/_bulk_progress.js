// A backfill, calendar move or resync under way (status "bulk", null when none) as a progress bar
// and a line of text; the page polls status every couple of seconds while one runs.
const BULK_WORDS = {backfill: "Adding bookings to the calendar", calendar_move: "Moving events to the new calendar", resync: "Pushing bookings to the calendar again"};
function showBulk(box, bulk) {
  box.hidden = !bulk;
  if (!bulk) return;
  const bar = box.querySelector("progress"), text = box.querySelector(".bulk-text");
  if (bulk.total) { bar.max = bulk.total; bar.value = bulk.done; } else bar.removeAttribute("value");  // no total yet: indeterminate
  box.dataset.kind = bulk.kind; box.dataset.done = bulk.done; box.dataset.total = bulk.total;
  const started = bulk.started_at ? new Date(bulk.started_at).toLocaleTimeString(undefined, {timeStyle: "short"}) : "";
  text.textContent = (BULK_WORDS[bulk.kind] || bulk.kind) + ": " + (bulk.total ? bulk.done + " of " + bulk.total : "preparing") + (started ? " (since " + started + ")" : "");
}
function bulkBox(id) {
  const box = document.createElement("div");
  box.className = "bulk"; box.hidden = true;
  if (id) box.id = id;
  const bar = document.createElement("progress"), text = document.createElement("span");
  text.className = "bulk-text"; text.setAttribute("role", "status");
  box.append(bar, " ", text);
  return box;
}
