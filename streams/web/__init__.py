"""The worker's web pages: the incident board (``GET /``) and each incident's page.

- :mod:`streams.web.board` is the state: a fold of ``aiops.incidents``, ``aiops.actions``,
  ``aiops.tickets`` and ``aiops.control`` records, with no I/O and no clock.
- :mod:`streams.web.pages` renders it: pure functions from that state to HTML, through the
  templates in ``templates/`` (:mod:`streams.web.html` escapes every value by default).
- :mod:`streams.web.server` is the thin Faust shell: it follows the topics, serves the pages,
  the server-sent events that keep them live, and ``static/``.
"""
