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
    """Remove a tree nothing can make this fail on, in time linear in its size: iterative (no recursion), one
    directory fd at a time (depth and path length do not matter), each directory listed once (its unhandled names
    kept on a stack, so a wide directory costs no relisting), every directory made searchable before it is
    entered, links never followed (entered with O_NOFOLLOW), fifos and sockets only unlinked."""
    import stat

    os.chmod(path, 0o700, follow_symlinks=False)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    pending = [os.listdir(fd)]  # per entered level: its names not handled yet
    entered = []  # per entered level below the top: its name in its parent
    while True:
        if pending[-1]:
            name = pending[-1].pop()
            if not stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=fd)
                continue
            os.chmod(name, 0o700, dir_fd=fd)  # a directory (lstat said so); nothing runs that could swap it
            try:
                os.rmdir(name, dir_fd=fd)  # empty: no need to enter it
                continue
            except OSError:
                pass
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
            pending.append(os.listdir(fd))
            entered.append(name)
            continue
        if not entered:
            break
        pending.pop()
        parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = parent
        os.rmdir(entered.pop(), dir_fd=fd)
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
