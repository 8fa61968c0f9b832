from lib.core.timeutil import utcnow
from lib.ui import page_guard
from lib.ui import review as ui

scope = page_guard("Review")
now = utcnow()
action_type, oldest_first = ui.filters(scope)
rows = ui.load_held(scope, action_type, oldest_first, now)
ui.arrivals(scope, action_type, len(rows))  # live: says when rows arrive or leave
ui.show_queue(scope, rows, now)
ui.show_detail(scope, rows, now)
ui.confirm_bulk(scope)  # outside any fragment: a dialog
ui.show_policies(scope)
ui.show_learning(scope)
