"""The OS layer of the sandbox: what a worker process does to itself before any hook runs.

It assumes the language layer (RestrictedPython: `_rp_compile.py`, `_rp_guards.py`) has already
fallen and the attacker runs arbitrary Python in the worker. After `enter()` that process:

* has its own user, mount, PID, network, IPC, UTS and cgroup namespaces: it is PID 1 of a
  namespace of its own (it cannot name, signal or ptrace any other process), and its
  network namespace is fresh (a loopback that is down: no route anywhere, not even to the
  host's loopback);
* sees an empty, read-only filesystem (a tmpfs root with nothing in it): no data dir, no
  home, no interpreter files, no `/proc`, no `/dev` (everything a hook needs was imported
  by the zygote before the fork);
* holds a distinct unprivileged host uid when the server runs as root (`uid_base + slot`,
  so one worker cannot signal or ptrace another, and no file of the host is its own), and
  no capabilities in any namespace;
* runs under a seccomp filter (libseccomp) that refuses execve, new sockets, fork/clone,
  ptrace, signals to other processes, namespace and mount calls, keyrings, bpf and a
  few more, and kills the process for a syscall of another architecture;
* keeps the rlimits the worker sets (memory, CPU, no file writes, no processes).

Every step raises `SandboxError` when it cannot be done: the caller refuses to run hooks
rather than run them with less (see `probe()` and the server's start-up check).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import socket
from collections.abc import Callable

__all__ = ["DEFAULT_UID_BASE", "SandboxError", "enter", "probe"]

# Host uid/gid of worker `slot` when the server runs as root: far above ordinary users
# and the usual subordinate-id ranges (100000-...), so no file on the host is theirs.
DEFAULT_UID_BASE = 2_000_000_000
# The uid and gid a worker has inside its own user namespace.
INNER_ID = 1000

_CLONE_NEWNS = 0x00020000
_CLONE_NEWCGROUP = 0x02000000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
NAMESPACES = (
    _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC
    | _CLONE_NEWUTS | _CLONE_NEWCGROUP
)  # fmt: skip

_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2

_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_PR_SET_DUMPABLE = 4
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LAST_CAP = 63  # drop every bit the kernel may know (EINVAL past its last one is ignored)

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}


class SandboxError(OSError):
    """The OS sandbox could not be set up (the worker must not run hooks)."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.prctl.argtypes = (
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise SandboxError(code, f"{what}: {os.strerror(code)}")


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
            flags, data.encode() if data else None,
        ),
        f"mount {target}",
    )  # fmt: skip


def _write(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise SandboxError(exc.errno or errno.EPERM, f"write {path}: {exc.strerror}") from None


def _arch() -> str:
    machine = os.uname().machine
    if machine not in _SYS_PIVOT_ROOT:
        raise SandboxError(errno.ENOSYS, f"unsupported architecture {machine}")
    return machine


# ----------------------------------------------------------------------------- steps


def become_slot_user(slot: int, uid_base: int = DEFAULT_UID_BASE) -> None:
    """As root: drop to the host uid/gid of this worker slot (no supplementary groups).
    Not root: nothing to do (every worker keeps the server's uid; the PID namespace is what
    keeps them from signalling each other)."""
    if os.geteuid() != 0:
        return
    ident = uid_base + slot
    try:
        os.setgroups([])
        os.setresgid(ident, ident, ident)
        os.setresuid(ident, ident, ident)
    except OSError as exc:
        raise SandboxError(
            exc.errno or errno.EPERM, f"drop to uid {ident}: {exc.strerror}"
        ) from None
    # A uid change makes the process non-dumpable, and its /proc/self files root's: it
    # could not write its own uid_map. The child that runs hooks turns this off again.
    _check(_libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def unshare_namespaces() -> None:
    """New namespaces for this process (and a PID namespace for its next child), mapping
    only its own host uid and gid, to INNER_ID inside."""
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(NAMESPACES), "unshare (are unprivileged user namespaces enabled?)")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{INNER_ID} {uid} 1")
    _write("/proc/self/gid_map", f"{INNER_ID} {gid} 1")


def empty_root() -> None:
    """Replace the filesystem view with an empty read-only tmpfs (call as PID 1 of the new
    PID namespace, after unshare_namespaces)."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    # Any existing directory serves as the mount point: the mount lives in our namespace only.
    new_root = "/tmp" if os.path.isdir("/tmp") else "/mnt"
    _mount(
        "wtpy-sandbox",
        new_root,
        "tmpfs",
        _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
        "size=4k,nr_inodes=4,mode=0555",
    )
    os.chdir(new_root)
    # pivot_root(".", "."): the old root ends up stacked under the new one, and is detached.
    _check(_libc.syscall(_SYS_PIVOT_ROOT[_arch()], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", _MNT_DETACH), "detach the old root")
    os.chdir("/")
    _mount(None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)


def set_hostname() -> None:
    socket.sethostname("wtpy-sandbox")


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def drop_capabilities() -> None:
    """No capability left in any set (the new user namespace granted a full set)."""
    for cap in range(_LAST_CAP + 1):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
            _check(-1, f"drop capability {cap} from the bounding set")
    _check(
        _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
        "clear ambient capabilities",
    )
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two data structs
    data = (_CapData * 2)()
    _check(_libc.syscall(_SYS_CAPSET[_arch()], ctypes.byref(header), data), "capset")


# ----------------------------------------------------------------------------- seccomp

# Refused with EPERM. Every call here is one a worker never makes once it serves jobs.
DENIED_SYSCALLS = (
    # running other programs, making processes and threads
    "execve", "execveat", "fork", "vfork", "clone", "clone3",
    # the network (the protocol socket is already open: read/write/sendmsg stay allowed)
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kill", "tkill", "tgkill",
    "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open", "pidfd_send_signal", "pidfd_getfd",
    "kcmp",
    # namespaces, mounts, identities
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr",
    "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick", "setuid", "setgid",
    "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid", "setfsgid",
    "capset", "personality",
    # kernel attack surface a hook has no use for
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
    "quotactl", "name_to_handle_at", "open_by_handle_at", "lookup_dcookie", "vhangup",
    "syslog", "uselib", "ustat", "sysfs", "iopl", "ioperm", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "memfd_create",
    "memfd_secret", "mbind", "migrate_pages", "move_pages", "set_mempolicy",
)  # fmt: skip
# ioctl requests refused: pushing input into the terminal the server may still have as stderr.
_DENIED_IOCTLS = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO_EPERM = 0x00050000 | errno.EPERM
_SCMP_CMP_EQ = 4
_SCMP_FLTATR_CTL_NNP = 3


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SandboxError(
            errno.ENOENT, f"libseccomp is not installed ({exc}); apt-get install libseccomp2"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
    )
    lib.seccomp_attr_set.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    return lib


_seccomp: ctypes.CDLL | None = None


def load_libraries() -> None:
    """Load libseccomp now (the zygote does, while the filesystem is still there)."""
    global _seccomp
    if _seccomp is None:
        _seccomp = _libseccomp()


def install_seccomp() -> None:
    """Load the filter (no_new_privs on). The default action is allow: the list above says
    what is refused; a syscall of a foreign architecture (32-bit entry points) kills."""
    load_libraries()
    lib = _seccomp
    assert lib is not None
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise SandboxError(errno.ENOMEM, "seccomp_init failed")
    try:
        _check(-lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_NNP, 1), "seccomp no_new_privs")
        for name in DENIED_SYSCALLS:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a syscall on this architecture (e.g. fork on aarch64)
                continue
            _check(
                -lib.seccomp_rule_add_array(ctx, _SCMP_ACT_ERRNO_EPERM, number, 0, None),
                f"seccomp rule {name}",
            )
        ioctl = lib.seccomp_syscall_resolve_name(b"ioctl")
        for request in _DENIED_IOCTLS:
            cmp = _ArgCmp(1, _SCMP_CMP_EQ, request, 0)
            _check(
                -lib.seccomp_rule_add_array(
                    ctx, _SCMP_ACT_ERRNO_EPERM, ioctl, 1, ctypes.byref(cmp)
                ),
                "seccomp ioctl rule",
            )
        _check(-lib.seccomp_load(ctx), "seccomp_load")
    finally:
        lib.seccomp_release(ctx)


# ----------------------------------------------------------------------------- together


def enter(slot: int, uid_base: int = DEFAULT_UID_BASE, *, report_pid: Callable[[int], None]) -> int:
    """Put this process in the sandbox. Forks once (a PID namespace applies to children):
    the caller's process reports the child's host pid with `report_pid` and exits; the
    child returns from enter() as PID 1 of its namespace, sandboxed, with a descriptor of
    its own /proc/self/statm (the worker's memory checks; there is no /proc after this).
    Raises SandboxError (in the caller, before any fork) when a step is not possible; a
    step that fails after the fork ends the child (exit status 70)."""
    load_libraries()
    become_slot_user(slot, uid_base)
    unshare_namespaces()
    pid = os.fork()
    if pid:
        report_pid(pid)
        os._exit(0)
    try:
        statm = os.open("/proc/self/statm", os.O_RDONLY)
        empty_root()
        set_hostname()
        # Not dumpable: nothing else of this uid may ptrace it or open its /proc files.
        _check(_libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        drop_capabilities()
        install_seccomp()
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(2, f"wtpy sandbox: {exc}\n".encode())
        os._exit(70)  # the worker never says ready: the pool sees it fail to start
    return statm


def probe(slot: int = 0, uid_base: int = DEFAULT_UID_BASE) -> str | None:
    """Can this machine sandbox a worker? None if so, else why not (a fork does the work,
    so this process is untouched)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the probe child
        os.close(read)
        try:
            reported: list[int] = []
            enter(slot, uid_base, report_pid=reported.append)
            os.write(write, b"ok")
        except BaseException as exc:  # noqa: BLE001  (the reason travels back as text)
            os.write(write, f"{exc}".encode()[:4000] or b"failed")
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 4096):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    answer = b"".join(chunks).decode(errors="replace")
    return None if answer == "ok" else answer or "the sandboxed probe process died"
