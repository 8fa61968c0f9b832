from lib.ui import page_guard
from lib.ui import posts as ui

scope = page_guard("Posts")
controls = ui.controls()
filt = controls.filter(scope.account_id)
names = ui.account_names(scope)
ui.show_posts(ui.load_posts(scope.db_url, filt, controls.sort, names), scope, filt, controls.sort, names)
