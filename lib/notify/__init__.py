"""Alert notifications through Apprise (docs/notifications.md). Never imports streamlit.

    routes.routes(settings)                  -> [Route]: ALERT_NOTIFY_URLS (+ _CRITICAL/_ERROR/_WARNING)
    detect.detect(conn, settings, now=...)   -> DetectReport: reads system_alerts, writes incidents and
                                                the outbox in the caller's transaction
    outbox.deliver_due(engine, settings)     -> DeliveryReport: claims due outbox rows, sends, records
    outbox.notify_tick(engine, settings)     -> both, as the worker runs them
    silences: create/end/list silences, acknowledge, the badges on the alert pages
    messages: what each notification says; digest: the weekly digest
"""
