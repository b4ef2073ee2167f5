"""Session recordings in asciicast v2: the format, the live writer, crash recovery, sinks and
rendering. Shared by the node agent (writes), auth (stores) and ``lmsh play`` (reads).

::

    node agent session ──▶ CastWriter (.cast.part, buffered, flushed in a thread)
                              │ finish(): atomic rename to .cast
                              ▼
                           RecordingSink.upload ──▶ LocalDirectorySink: DATA_DIR/log/recordings
    agent start ──▶ recover_recordings: leftover .part → valid .cast marked incomplete → sink
    lmsh play ──▶ read_cast ──▶ render(cast, "text" | "json" | "pty")

Modules: ``asciicast`` (pure format), ``writer``, ``recovery``, ``sink``, ``render``.
Layering: above ``limen.api``/``limen.errors`` only; no network.
"""

from limen.recording.asciicast import (
    FORMAT_VERSION,
    Cast,
    CastEvent,
    CastHeader,
    StreamDecoder,
    data_bytes,
    encode_event,
    encode_header,
    parse_cast,
    read_cast,
)
from limen.recording.recovery import complete_part, recover_recordings
from limen.recording.render import FORMATS, render
from limen.recording.sink import LocalDirectorySink, RecordingSink, recordings_dir, sessions_dir
from limen.recording.writer import (
    PART_SUFFIX,
    CastWriter,
    RecordingTask,
    check_session_id,
)

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "PART_SUFFIX",
    "Cast",
    "CastEvent",
    "CastHeader",
    "CastWriter",
    "LocalDirectorySink",
    "RecordingSink",
    "RecordingTask",
    "StreamDecoder",
    "check_session_id",
    "complete_part",
    "data_bytes",
    "encode_event",
    "encode_header",
    "parse_cast",
    "read_cast",
    "recordings_dir",
    "recover_recordings",
    "render",
    "sessions_dir",
]
