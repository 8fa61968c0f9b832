import streamlit as st

from lib.ui import lazy_expander, page_guard
from lib.ui import metrics as ui

scope = page_guard("Metrics")
ms = ui.scope_controls(scope)
if ms is not None:
    data = ui.load_report_set(scope.db_url, ms.account_ids, ms.report_type, ms.first, ms.last)
    ui.show_summary(data, ms, scope)
    if data.frame.empty:
        ui.show_empty(ms)
    else:
        ui.show_kpis(data, scope)
        st.subheader("Trends")
        ui.show_charts(data, scope, ms)
        st.subheader("Best and worst posts")
        ui.show_best_worst(data, scope, ms)
        # below the fold, lazy: computed and sent only while open (they doubled the page's open time)
        details = lazy_expander("Report details: insights, changes, posts", key=ui.Keys.DETAILS,
                                icon=":material/article:")
        if details is not None:
            with details:
                report_ids = ui.pick_details(data.frame, scope)
                if report_ids:
                    ui.show_details(ui.load_details(scope.db_url, report_ids), scope, ms.report_type)
        comparison = lazy_expander("Period comparison", key=ui.Keys.COMPARE, icon=":material/compare_arrows:")
        if comparison is not None:
            with comparison:
                periods = ui.comparison_periods(ms)
                if periods is not None:
                    first, last = min(periods[0][0], periods[1][0]), max(periods[0][1], periods[1][1])
                    compared = ui.load_report_set(scope.db_url, ms.account_ids, ms.report_type, first, last)
                    ui.show_comparison(compared, periods, scope, ms)
