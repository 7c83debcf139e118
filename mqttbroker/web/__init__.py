"""The HTTP listener: ``/metrics``, the admin API and the dashboard (docs/web.md).

Imported only when ``http.enabled`` is true, so a broker without it never loads aiohttp.
"""
