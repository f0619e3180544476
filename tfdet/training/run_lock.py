"""One writer per model_dir: a lock file naming its owner, stale locks detected.

Two trainings started into one ``model_dir`` would overwrite each other's
checkpoints. The chief takes ``model_dir/train.lock`` before it writes
anything: the file is created atomically (O_CREAT | O_EXCL) and holds the
owner's host, pid and start time as json. A lock is stale, and is taken
over with a warning, when its owner is on this host and its pid is no
longer alive, or when the owner (on any host) has not refreshed it for
`STALE_AFTER_S` seconds (the trainer refreshes it at every log interval, and
a killed process stops refreshing). Otherwise the second writer is refused
with `ModelDirLockedError`, which names the owner and the file.
"""

import json
import os
import socket
import time

from absl import logging

LOCK_FILE = "train.lock"
STALE_AFTER_S = 1800.0


class ModelDirLockedError(RuntimeError):
  """Another live training run owns the model_dir."""


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, someone else's
    return True
  return True


def _read(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None  # vanished, or half-written: judged by its age alone


class RunLock:
  """The lock of one model_dir (a context manager; `acquire` / `release` also work).

  Args:
    model_dir: the training directory (created if missing).
    stale_after_s: a lock not refreshed for this long is stale.
  """

  def __init__(self, model_dir, *, stale_after_s=STALE_AFTER_S):
    self.path = os.path.join(model_dir, LOCK_FILE)
    self.stale_after_s = float(stale_after_s)
    self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    self.held = False

  def _stale_reason(self):
    """Why the existing lock is stale, or None if its owner may be alive."""
    try:
      age = time.time() - os.path.getmtime(self.path)
    except OSError:
      return "it is gone"
    info = _read(self.path)
    if info and info.get("host") == self.owner["host"] and not _pid_alive(int(info["pid"])):
      return f"process {info['pid']} on this host is no longer running"
    if age > self.stale_after_s:
      return f"it was last refreshed {age:.0f} s ago (stale after {self.stale_after_s:.0f} s)"
    return None

  def acquire(self):
    """Takes the lock, or raises `ModelDirLockedError` naming the live owner."""
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    for _ in range(3):  # another process may take or drop it between our steps
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        reason = self._stale_reason()
        if reason is None:
          info = _read(self.path) or {}
          raise ModelDirLockedError(
              f"{os.path.dirname(self.path)} is in use by another training run (host "
              f"{info.get('host', '?')}, pid {info.get('pid', '?')}, lock file {self.path}): "
              "two runs would overwrite each other's checkpoints. Stop the other run, or use "
              f"another --model_dir; a lock whose owner died is taken over after "
              f"{self.stale_after_s:.0f} s, or at once on the same host.") from None
        logging.warning("taking over the stale lock %s: %s", self.path, reason)
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(self.owner, f)
      self.held = True
      return self
    raise ModelDirLockedError(f"could not take the lock {self.path}: it keeps changing owner")

  def refresh(self):
    """Marks the lock as alive (its modification time); a no-op when not held."""
    if self.held:
      try:
        os.utime(self.path)
      except OSError as e:
        logging.warning("could not refresh the lock %s: %s", self.path, e)

  def release(self):
    """Removes the lock if this process still owns it."""
    if not self.held:
      return
    self.held = False
    info = _read(self.path)
    if info and (info.get("host"), info.get("pid")) == (self.owner["host"], self.owner["pid"]):
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
