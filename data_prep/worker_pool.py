"""A process pool whose workers die with the process that started them.

`multiprocessing.Pool` workers outlive a parent killed with SIGKILL (it
gets no chance to terminate them): they would finish their shards and
rename them into place behind the user's back. Here each worker

* asks the Linux kernel for SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``, through ctypes), then checks that the
  parent did not die before that request (``os.getppid()``);
* can call `check_parent` (the converter does before each image and before
  renaming a shard into place), which also covers systems without prctl.
"""

import ctypes
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_parent_pid = None  # set in pool workers by `die_with_parent`


class ParentDiedError(SystemExit):
  """Raised in a pool worker whose parent process is gone (ends the worker)."""


def _request_death_signal():
  """prctl(PR_SET_PDEATHSIG, SIGKILL) on Linux; returns whether the kernel accepted it."""
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(None, use_errno=True)  # this process's symbols: libc's included
    return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
  except (OSError, AttributeError):
    return False


def die_with_parent(parent_pid):
  """Pool initializer: the worker gets SIGKILL when ``parent_pid`` dies (see module doc).

  Args:
    parent_pid: the pid of the process that creates the pool.
  """
  global _parent_pid
  _parent_pid = parent_pid
  _request_death_signal()
  check_parent()  # the parent may have died before the request


def parent_gone():
  """True in a pool worker whose parent has died (it was re-parented); False elsewhere."""
  return _parent_pid is not None and os.getppid() != _parent_pid


def check_parent():
  """Ends a pool worker whose parent died (raises ParentDiedError); no-op elsewhere."""
  if parent_gone():
    raise ParentDiedError(f"worker {os.getpid()}: parent process {_parent_pid} is gone")


def pool(num_workers):
  """A spawn-context pool of ``num_workers`` processes that die with this one.

  Spawn, not fork: TensorFlow's thread pools do not survive a fork.
  """
  return multiprocessing.get_context("spawn").Pool(
      num_workers, initializer=die_with_parent, initargs=(os.getpid(),))
