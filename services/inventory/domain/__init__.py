"""The inventory service's rules, free of I/O so they can be reasoned about and tested alone.

- ``stock``: quantities, availability, status and threshold crossings of a stock level, and what
  each adjustment reason allows.
- ``allocation``: how a reservation's lines are spread over locations (the strategies).
- ``geo``: great-circle distance and the bounding box that pre-filters "near me" searches.
- ``hours``: opening hours: validation and "is it open now".
"""

DOMAIN = "omni.inventory"
