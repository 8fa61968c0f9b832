from lib.ui import digest as ui
from lib.ui import page_guard

scope = page_guard("Weekly digest")
ui.show_schedule(scope)
ui.send_button(scope)
ui.show_preview(scope)
