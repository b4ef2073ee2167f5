"""Database wire codecs: PostgreSQL (:mod:`limen.dbproto.postgres`) and MySQL/MariaDB
(:mod:`limen.dbproto.mysql`) as pure functions and incremental splitters, bytes in and typed
messages out (and back). No I/O: the proxy's database fronts and the db agent do the I/O and
call these. Malformed input raises :class:`~limen.errors.BadParameter`, nothing else.
"""
