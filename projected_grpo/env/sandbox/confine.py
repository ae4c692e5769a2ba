"""The kernel layers that confine the server and its children: libc calls, the seccomp program, Landlock, and the
server's namespaces and chroot. Stdlib only (server side)."""

from __future__ import annotations

import os
import sys

WORKDIR = "/w"  # inside the server's root: the per-job tmpfs mount point
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUSER = 0x20000, 0x8000000, 0x20000000, 0x40000000, 0x10000000

# syscall numbers (x86_64, aarch64) denied with EPERM; None = no such syscall on that arch
_DENY = {
    "fork": (57, None), "vfork": (58, None), "clone": (56, 220), "execve": (59, 221), "execveat": (322, 281),
    "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240), "ptrace": (101, 117), "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271), "mount": (165, 40), "umount2": (166, 39), "unshare": (272, 97),
    "setns": (308, 268), "chroot": (161, 51), "pivot_root": (155, 41), "symlink": (88, None),
    "symlinkat": (266, 36), "link": (86, None), "linkat": (265, 37), "mknod": (133, None), "mknodat": (259, 33),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427), "bpf": (321, 280),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282), "keyctl": (250, 219), "add_key": (248, 217),
    "request_key": (249, 218), "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "kexec_load": (246, 104), "reboot": (169, 142), "setsid": (112, 157), "setpgid": (109, 154),
    "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "pidfd_getfd": (438, 438),
    "process_madvise": (440, 440), "socket": (41, 198), "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265), "fsopen": (430, 430), "open_tree": (428, 428), "move_mount": (429, 429),
    # per-inode kernel state of the shared read-only files (locks, watches, page-cache residency): cross-run channels
    "flock": (73, 32), "inotify_init": (253, None), "inotify_init1": (294, 26), "inotify_add_watch": (254, 27),
    "inotify_rm_watch": (255, 28), "fanotify_init": (300, 262), "fanotify_mark": (301, 263),
    "fadvise64": (221, 223), "readahead": (187, 213), "preadv2": (327, 286), "pwritev2": (328, 287),
    "mincore": (27, 232), "cachestat": (451, 451),
    # system-wide counters a child can move (cross-run channels): sysinfo (freeram, sharedram: tmpfs writes),
    # statfs/fstatfs/ustat (free blocks of a shared filesystem), syslog (the kernel log)
    "sysinfo": (99, 179), "statfs": (137, 43), "fstatfs": (138, 44), "ustat": (136, None), "syslog": (103, 116),
    # futex2 calls (glibc does not use them; their shared waits would be keyed by inode like futex's below)
    "futex_waitv": (449, 449), "futex_wake": (454, 454), "futex_wait": (455, 455), "futex_requeue": (456, 456),
}
# syscalls denied (EPERM) only for some values of one argument: name -> ((x86_64, aarch64), arg index, values)
_DENY_ARG = {
    # record locks (F_GETLK, F_SETLK, F_SETLKW, F_OFD_*), leases and dnotify: state on shared inodes
    "fcntl": ((72, 25), 1, (5, 6, 7, 36, 37, 38, 1024, 1025, 1026)),
    # PR_SET_PDEATHSIG: a child that cleared it would outlive a killed server
    "prctl": ((157, 167), 0, (1,)),
    # MADV_WILLNEED, MADV_COLD, MADV_PAGEOUT, MADV_POPULATE_READ/WRITE: page-cache residency of shared files
    "madvise": ((28, 233), 2, (3, 20, 21, 22, 23)),
}
# syscalls denied (EPERM) unless a bit of one argument is set: name -> ((x86_64, aarch64), arg index, bit)
_DENY_UNLESS_BIT = {
    # a shared (non-FUTEX_PRIVATE_FLAG) futex on a page of a shared file is keyed by its inode: one run could
    # wait on it and another wake it; CPython and glibc use private futexes only
    "futex": ((202, 98), 1, 128),
}
_ARCH = {"x86_64": (0, 0xC000003E, 435), "aarch64": (1, 0xC00000B7, 435)}  # col, AUDIT_ARCH, clone3


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _check(rc, what):
    if rc < 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def seccomp_program(machine: str) -> bytes:
    """Classic BPF: kill on a foreign arch (or x32), EPERM for the denied syscalls (socket() of every family
    included), for the denied argument values of fcntl/prctl/madvise and for shared futexes, ENOSYS for clone3,
    allow the rest."""
    import struct

    col, audit_arch, nr_clone3 = _ARCH[machine]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill, eperm, enosys = 0x7FFF0000, 0x80000000, 0x00050000 | 1, 0x00050000 | 38
    ins = [(ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, kill), (ld, 0, 0, 0)]
    if machine == "x86_64":
        ins += [(jge, 0, 1, 0x40000000), (ret, 0, 0, kill)]
    for nrs, arg, values in _DENY_ARG.values():  # the low 32 bits of args[arg] (int arguments), then reload nr
        block = [(ld, 0, 0, 16 + 8 * arg)]
        for v in values:
            block += [(jeq, 0, 1, v), (ret, 0, 0, eperm)]
        ins += [(jeq, 0, len(block) + 1, nrs[col])] + block + [(ld, 0, 0, 0)]
    for nrs, arg, bit in _DENY_UNLESS_BIT.values():
        ins += [(jeq, 0, 4, nrs[col]), (ld, 0, 0, 16 + 8 * arg), (jset, 1, 0, bit), (ret, 0, 0, eperm), (ld, 0, 0, 0)]
    for nrs in _DENY.values():
        if nrs[col] is not None:
            ins += [(jeq, 0, 1, nrs[col]), (ret, 0, 0, eperm)]
    ins += [(jeq, 0, 1, nr_clone3), (ret, 0, 0, enosys), (ret, 0, 0, allow)]
    return b"".join(struct.pack("<HBBI", *i) for i in ins)


def install_seccomp(libc, prog: bytes):
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = SockFprog(len(prog) // 8, ctypes.addressof(buf))
    _check(libc.prctl(38, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    _check(libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0), "prctl(SET_SECCOMP)")


def landlock_abi(libc) -> int:
    return max(0, libc.syscall(444, None, 0, 1))


def install_landlock(libc, abi: int, ro_dirs, rw_dirs):
    import ctypes
    import struct

    fs_bits = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}.get(abi, 16)
    handled_fs = (1 << fs_bits) - 1
    attr = struct.pack("<QQQ", handled_fs, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    fd = _check(libc.syscall(444, attr[:size], size, 0), "landlock_create_ruleset")
    try:
        rules = [(d, 0b1101) for d in ro_dirs] + [(d, handled_fs) for d in rw_dirs]  # EXECUTE|READ_FILE|READ_DIR
        for path, access in rules:
            if not os.path.isdir(path):
                continue
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = ctypes.create_string_buffer(struct.pack("<Qi", access, pfd), 12)
                _check(libc.syscall(445, fd, 1, rule, 0), f"landlock_add_rule({path})")
            finally:
                os.close(pfd)
        _check(libc.prctl(38, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        _check(libc.syscall(446, fd, 0), "landlock_restrict_self")
    finally:
        os.close(fd)


def _readonly_dirs() -> list[str]:
    import sysconfig

    paths = sysconfig.get_paths()
    stdlib = os.path.dirname(os.__file__)
    dirs = {paths["stdlib"], paths["platstdlib"], stdlib, os.path.join(stdlib, "lib-dynload")}
    dynload = sys.modules.get("_ctypes")
    if dynload is not None and getattr(dynload, "__file__", None):
        dirs.add(os.path.dirname(dynload.__file__))
    multiarch = sysconfig.get_config_var("MULTIARCH")
    for d in ("/usr/lib", "/lib"):
        if multiarch:
            dirs.add(f"{d}/{multiarch}")
    return sorted(os.path.realpath(d) for d in dirs if d and os.path.isdir(d))


def _enter_namespaces(libc, root_dir: str, is_root: bool, ro_dirs: list[str]) -> tuple[dict, bool]:
    """Empty netns; as root also a private mount namespace whose root holds only read-only binds of /usr and the
    stdlib dirs and the workdir mount point, entered with chroot. Returns (layers, chrooted)."""
    layers = {}
    flags = CLONE_NEWNET if is_root else CLONE_NEWNET | CLONE_NEWUSER
    try:
        _check(libc.unshare(flags), "unshare(NEWNET)")
        layers["netns"] = "ok"
    except OSError as e:
        layers["netns"] = f"unavailable ({e}): the program can reach the network (loopback listeners included)"
    leak = ("stat()/name_to_handle_at resolve every host path the server's uid can search: the sizes and names "
            "of files in the project and the cache leak")
    if not is_root:
        layers["chroot"] = f"unavailable (not root): {leak}"
        return layers, False
    try:
        ms_bind, ms_rec, ms_rdonly, ms_remount, ms_private, ms_nosuid, ms_nodev = 4096, 16384, 1, 32, 262144, 2, 4
        _check(libc.unshare(CLONE_NEWNS), "unshare(NEWNS)")
        _check(libc.mount(b"none", b"/", None, ms_rec | ms_private, None), "mount(/, MS_REC|MS_PRIVATE)")
        _check(libc.mount(b"tmpfs", root_dir.encode(), b"tmpfs", ms_nosuid | ms_nodev, b"size=1m,mode=0755"),
               f"mount(tmpfs, {root_dir})")
        binds = ["/usr"] + [d for d in ro_dirs if not d.startswith("/usr/")]
        for name in ("bin", "lib", "lib32", "lib64", "sbin"):
            if os.path.islink("/" + name):
                os.symlink(os.readlink("/" + name), os.path.join(root_dir, name))
            elif os.path.isdir("/" + name) and "/" + name not in binds:
                binds.append("/" + name)
        for src in binds:
            dst = (root_dir + src).encode()
            os.makedirs(dst, exist_ok=True)
            _check(libc.mount(src.encode(), dst, None, ms_bind | ms_rec, None), f"bind {src}")
            _check(libc.mount(None, dst, None, ms_bind | ms_remount | ms_rdonly | ms_nosuid, None), f"ro {src}")
        os.mkdir(os.path.join(root_dir, WORKDIR.lstrip("/")), 0o755)
        os.chroot(root_dir)
        os.chdir("/")
        layers["chroot"] = "ok"
        return layers, True
    except OSError as e:
        layers["chroot"] = f"unavailable ({e}): {leak}"
        return layers, False
