"""The cart's rules, free of I/O: lines and limits, pricing snapshots, promotions, totals, merge,
and the order lifecycle. Every channel goes through these same functions, which is what makes the
total on the web, in the app and at the till the same number."""
