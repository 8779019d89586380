"""The messaging service's rules, free of I/O so they can be reasoned about and tested alone.

- ``templates``: placeholders, validation of a template's contents, rendering, locale fallback.
- ``plans``: what a DecideContact answer means for a notification (send on these channels in
  this order, hold until then, or suppress for this reason).
- ``delivery``: retries with back-off and jitter, and when a channel is given up for the next.
- ``contacts``: which contact point reaches which channel, and how a destination is masked.
"""

DOMAIN = "omni.messaging"
