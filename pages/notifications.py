from lib.core.timeutil import floor_time, utcnow
from lib.ui import page_guard
from lib.ui.notifications import load_deliveries, load_silences, show_deliveries, show_flash, show_routes, show_silences

scope = page_guard("Notifications")
now = floor_time(utcnow(), 5)
show_flash("notify_flash")
show_routes(scope)
show_silences(scope, load_silences(scope.db_url, now), now)
deliveries, totals = load_deliveries(scope.db_url)
show_deliveries(scope, deliveries, totals)
