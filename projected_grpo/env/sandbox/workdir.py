"""A job's working directory: made fresh (a tmpfs in fresh namespaces, or a directory), its marker file read
safely, removed whatever tree a program built. Stdlib only (server side)."""

from __future__ import annotations

import os

from .confine import _check
from .protocol import FILE_READ_CAP

TMPFS_SIZE = "64m"


def _enter_job_namespaces(ctx):
    """In the supervisor: fresh IPC/PID/mount namespaces and a fresh tmpfs workdir (or, where the machine lacks
    them, a fresh directory that ``_remove_tree`` removes). A layer the start-up probe found working that fails
    here raises: the job fails closed."""
    libc = ctx["libc"]
    if ctx["job_ns"]:
        _check(libc.unshare(ctx["job_ns"]), "unshare(job namespaces)")
    if ctx["jobfs"]:
        owner = f",uid={ctx['uid']},gid={ctx['uid']}" if ctx["uid"] is not None else ""
        opts = f"size={TMPFS_SIZE},nr_inodes=4096,mode=0700{owner}".encode()
        _check(libc.mount(b"tmpfs", ctx["workdir"].encode(), b"tmpfs", 2 | 4 | 8, opts), "mount(job tmpfs)")
    else:
        os.mkdir(ctx["workdir"], 0o700)
        if ctx["uid"] is not None:
            os.chown(ctx["workdir"], ctx["uid"], ctx["uid"])


def _remove_tree(path: str):
    """Remove a tree nothing can make this fail on: iterative (no recursion), one directory fd at a time (depth
    and path length do not matter), every directory made searchable before it is entered, links never
    followed (entered with O_NOFOLLOW), fifos and sockets only unlinked."""
    import stat

    os.chmod(path, 0o700, follow_symlinks=False)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    depth = 0
    while True:
        child = None
        for name in os.listdir(fd):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                child = name
                break
            os.unlink(name, dir_fd=fd)
        if child is not None:
            os.chmod(child, 0o700, dir_fd=fd)  # a directory (lstat said so); nothing runs that could swap it
            try:
                os.rmdir(child, dir_fd=fd)
                continue
            except OSError:
                pass
            sub = os.open(child, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd, depth = sub, depth + 1
            continue
        if depth == 0:
            break
        parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd, depth = parent, depth - 1
    os.close(fd)
    os.rmdir(path)


def _read_marker_file(workdir: str, name: str):
    """Content of workdir/name if it is a regular file (no link followed, no blocking, at most 4 KiB), else a
    short reason in angle brackets."""
    import stat

    dfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except FileNotFoundError:
        return "<missing>"
    except OSError as e:
        return f"<unreadable: {e.strerror}>"
    finally:
        os.close(dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "<not a regular file>"
        return os.read(fd, FILE_READ_CAP).decode("utf-8", "replace")
    finally:
        os.close(fd)
