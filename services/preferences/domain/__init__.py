"""The preferences service's rules, free of I/O so they can be reasoned about and tested alone.

- ``channels``: which channels can carry an outbound contact, which need a contact point, and
  how profile's and identity's contact kinds map to channels.
- ``checks``: validation of topics, language tags, time zones, quiet hours and caps.
- ``quiet``: quiet-hour windows in the customer's time zone (across midnight, DST-aware).
- ``caps``: sliding-window frequency caps and when a full cap frees up.
- ``decision``: DecideContact's verdict for one channel and the choice among channels.
- ``merge``: the consent-safe merge of two customers' consents.
"""

DOMAIN = "omni.preferences"
