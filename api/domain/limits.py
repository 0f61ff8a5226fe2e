"""Bounds every input is checked against: the columns' ranges and the per-request caps.

Standard library only, so that the Locust swarm (`locustfile`) can import what it draws
values within without setting Django up.
"""

# Ids are 64-bit signed integers (BigAutoField) on SQLite and PostgreSQL alike.
MAX_ID = 2**63 - 1
MAX_ID_DIGITS = len(str(MAX_ID))  # 19
# The largest id a client may give a new record. Automatic ids continue after the largest
# stored id (SQLite's AUTOINCREMENT), so an explicit MAX_ID would leave none: every later
# insert without an id would fail. This leaves 2**62 of them.
AUTOMATIC_ID_ROOM = 2**62
MAX_EXPLICIT_ID = MAX_ID - AUTOMATIC_ID_ROOM
# Rows one ``type=get`` lookup may return, and synthetic records one ``type=insert&count``
# may write per model.
MAX_LOOKUP_COUNT = 1000
MAX_SYNTHETIC_COUNT = 100
# Arrays and objects nested in a JSON body: a batch needs 3 (object, list, record).
MAX_JSON_DEPTH = 8
# Orders one ``include=orders`` lookup returns per user and in all: a user with 100k
# orders answers its first ones, their total, and where to page on.
MAX_ORDERS_PER_USER = 100
MAX_INCLUDED_ORDERS = 1000
# The most a lookup answer can weigh with these caps and every text at its longest
# (a test renders that answer): the byte budget per response.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
# Missing id ranges `/api/stats/` reports per table.
MAX_REPORTED_GAPS = 100
