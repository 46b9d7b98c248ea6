"""Linux userfaultfd, the little of it lazy restore uses: open, register, copy, poison, events.

Shared by the kernel side (:mod:`.pager`) and the process that serves its page faults
(:mod:`.pagerd`). Structures and ioctl numbers are those of ``<linux/userfaultfd.h>``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import struct

PAGE = mmap.PAGESIZE

# The syscall's number differs by architecture; others have no lazy restore.
SYSCALL = {"x86_64": 323, "aarch64": 282}
USER_MODE_ONLY = 1

EVENT_PAGEFAULT = 0x12
EVENT_FORK = 0x13
FEATURE_EVENT_FORK = 1 << 1
FEATURE_POISON = 1 << 14
MODE_MISSING = 1
MSG_SIZE = 32


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (0xAA << 8) | nr


_IOWR, _IOR = 3, 2
UFFDIO_API = _ioc(_IOWR, 0x3F, 24)
UFFDIO_REGISTER = _ioc(_IOWR, 0x00, 32)
UFFDIO_UNREGISTER = _ioc(_IOR, 0x01, 16)
UFFDIO_WAKE = _ioc(_IOR, 0x02, 16)
UFFDIO_COPY = _ioc(_IOWR, 0x03, 40)
UFFDIO_ZEROPAGE = _ioc(_IOWR, 0x04, 32)
UFFDIO_POISON = _ioc(_IOWR, 0x08, 32)
USERFAULTFD_IOC_NEW = 0xAA00  # _IO(0xAA, 0x00) on /dev/userfaultfd

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


class Range(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class Api(ctypes.Structure):
    _fields_ = [
        ("api", ctypes.c_uint64),
        ("features", ctypes.c_uint64),
        ("ioctls", ctypes.c_uint64),
    ]


class Register(ctypes.Structure):
    _fields_ = [("range", Range), ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


class _Copy(ctypes.Structure):
    _fields_ = [
        ("dst", ctypes.c_uint64),
        ("src", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("copy", ctypes.c_int64),
    ]


class _Fill(ctypes.Structure):
    """``uffdio_zeropage`` and ``uffdio_poison`` share this shape."""

    _fields_ = [("range", Range), ("mode", ctypes.c_uint64), ("done", ctypes.c_int64)]


def _ioctl(fd: int, request: int, arg: ctypes.Structure) -> None:
    if _libc.ioctl(fd, request, ctypes.addressof(arg)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def open_uffd() -> int:
    """A non-blocking userfaultfd with fork events and poisoning, or OSError saying why not.

    Fork events let a forked snapshot child read pages the kernel has not loaded yet
    (without them the child would read zeros there); poisoning lets a chunk that fails
    its check stop the reader instead of handing it wrong bytes.
    """
    nr = SYSCALL.get(platform.machine())
    if nr is None or not hasattr(os, "fork"):
        raise OSError(errno.ENOSYS, f"no userfaultfd on {platform.system()} {platform.machine()}")
    fd = int(_libc.syscall(nr, os.O_CLOEXEC | os.O_NONBLOCK))
    if fd < 0:
        first = ctypes.get_errno()
        fd = _from_device()
        if fd < 0:
            if first == errno.EPERM:
                raise OSError(
                    first,
                    "userfaultfd is not allowed for this user (vm.unprivileged_userfaultfd "
                    "is 0 and /dev/userfaultfd is not open to it)",
                )
            raise OSError(first, f"userfaultfd is not available ({os.strerror(first)})")
    api = Api(0xAA, FEATURE_EVENT_FORK | FEATURE_POISON, 0)
    try:
        _ioctl(fd, UFFDIO_API, api)
    except OSError as e:
        os.close(fd)
        if e.errno == errno.EPERM:
            raise OSError(e.errno, "userfaultfd fork events need CAP_SYS_PTRACE") from None
        raise OSError(
            e.errno, "this Linux kernel's userfaultfd lacks fork events or poisoning (6.6+)"
        ) from None
    return fd


def _from_device() -> int:
    try:
        dev = os.open("/dev/userfaultfd", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        return int(_libc.ioctl(dev, USERFAULTFD_IOC_NEW, os.O_CLOEXEC | os.O_NONBLOCK))
    finally:
        os.close(dev)


def register(fd: int, start: int, length: int) -> None:
    _ioctl(fd, UFFDIO_REGISTER, Register(Range(start, length), MODE_MISSING, 0))


def unregister(fd: int, start: int, length: int) -> None:
    _ioctl(fd, UFFDIO_UNREGISTER, Range(start, length))


def copy(fd: int, dst: int, src: int, length: int) -> None:
    """Fill ``[dst, dst+length)`` of the watched process from ``src`` here, and wake its readers.

    Pages already there are left as they are (a racing fault may have filled one).
    A process or mapping that is gone is no error: nobody is waiting for it.
    """
    done = 0
    while done < length:
        arg = _Copy(dst + done, src + done, length - done, 0, 0)
        try:
            _ioctl(fd, UFFDIO_COPY, arg)
            break
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ESRCH):
                return
            if arg.copy > 0:
                done += arg.copy
            elif e.errno == errno.EEXIST:
                done += PAGE
            elif e.errno != errno.EAGAIN:
                raise
    wake(fd, dst, length)


def wake(fd: int, start: int, length: int) -> None:
    try:
        _ioctl(fd, UFFDIO_WAKE, Range(start, length))
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ESRCH):
            raise


def poison(fd: int, start: int, length: int) -> None:
    """Make every read of the range fail (SIGBUS) instead of waiting or reading zeros."""
    try:
        _ioctl(fd, UFFDIO_POISON, _Fill(Range(start, length), 0, 0))
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ESRCH, errno.EEXIST):
            raise
    wake(fd, start, length)


def alive(fd: int) -> bool:
    """Whether the process a userfaultfd watches still exists.

    Asks for a zero page where nothing is mapped: a live process answers "no mapping"
    there (nothing is filled), a gone one "no such process".
    """
    try:
        _ioctl(fd, UFFDIO_ZEROPAGE, _Fill(Range(1 << 16, PAGE), 1, 0))
    except OSError as e:
        return e.errno != errno.ESRCH
    return True


def parse(message: bytes) -> tuple[int, int]:
    """``(event, value)`` of one message: the address of a fault, the new descriptor of a fork."""
    event = message[0]
    if event == EVENT_PAGEFAULT:
        return event, struct.unpack_from("Q", message, 16)[0]
    if event == EVENT_FORK:
        return event, struct.unpack_from("I", message, 8)[0]
    return event, 0


def round_up(n: int) -> int:
    return -(-n // PAGE) * PAGE
