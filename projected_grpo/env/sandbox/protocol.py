"""What a child, its supervisor and the client exchange: the words of the result lines, the checks whose run pauses
at the phase boundary for the supervisor's snapshot, and the cap of every field of an answer line. Stdlib only: the
server imports it too."""

from __future__ import annotations

from .values import RESULT_CAP

STDOUT_CAP = 64 * 1024
TOP_LEVEL = "top"  # third word of the X line of an exception raised by the program's top-level code
# The script checks: after 'D' the child waits for EOF on fd 4 (it carries nothing) while the supervisor snapshots
# the stdout and the marker file as they are at the end of phase 1 (the outcome if a test before the one that
# raised had failed; the trainer picks it, see verdicts.script_outcome).
SCRIPT_CHECKS = ("exit", "stdout", "file")
PHASE2_CAP = 4096  # bytes of phase-2 result kept (only its first line is read)
FILE_READ_CAP = 4096
STDERR_KEEP = 2048  # bytes of stderr kept (the tail)
PHASE2_KEEP = 256  # bytes of the phase-2 line kept
# The worst size of one answer line: json.dumps writes any byte at most 6 bytes long (a control character as
# \u0001, an undecodable byte, read as U+FFFD, as \ufffd; valid multi-byte UTF-8 at most 3x), and every field is
# capped above; the client refuses more (a server that sends more is broken, not a program).
# (stdout and the marker file twice: at the end of the run and in the phase-1 snapshot)
ANSWER_CAP = 6 * (RESULT_CAP + 2 * STDOUT_CAP + STDERR_KEEP + PHASE2_KEEP + 2 * FILE_READ_CAP) + 4096
