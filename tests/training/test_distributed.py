"""Multi-replica training equals single-replica training on the same global batch."""

import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Two TF processes on a busy 2-core machine can take minutes: a generous
# limit, and running past it is a failure (never a skip).
WORKER_TIMEOUT_S = 400


def _env(**extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT)
  env.pop("TF_CONFIG", None)
  env.update(extra)
  return env


def _result(stdout):
  line = [x for x in stdout.splitlines() if x.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def _assert_same(a, b):
  np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5, atol=1e-6)
  for x, y in zip(a["weights"], b["weights"], strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_two_cpu_replicas_match_one(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "tests.training.replica_check"], cwd=ROOT,
                        env=_env(), capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = _result(proc.stdout)
  assert result["single"]["replicas"] == 1 and result["mirrored"]["replicas"] == 2
  _assert_same(result["single"], result["mirrored"])


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.timeout(3 * WORKER_TIMEOUT_S)
def test_two_local_workers_match_one_replica(tmp_path):
  ports = [_free_port(), _free_port()]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  procs = []
  for i in range(2):
    config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "tests.training.replica_check", str(tmp_path / "mw")], cwd=ROOT,
        env=_env(TF_CONFIG=config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=WORKER_TIMEOUT_S))
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    errors = [p.communicate()[1][-1500:] for p in procs]
    pytest.fail(f"MultiWorkerMirroredStrategy on loopback did not finish in "
                f"{WORKER_TIMEOUT_S} s; the workers' stderr: {errors}")
  for p, (_, err) in zip(procs, outputs, strict=True):
    assert p.returncode == 0, err[-3000:]
  results = [_result(out)["multi_worker"] for out, _ in outputs]
  assert [r["replicas"] for r in results] == [2, 2]
  _assert_same(results[0], results[1])
  single = subprocess.run([sys.executable, "-m", "tests.training.replica_check"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
  assert single.returncode == 0, single.stderr[-3000:]
  _assert_same(_result(single.stdout)["single"], results[0])
  assert not os.path.exists(tmp_path / "mw" / "workers_tmp" / "worker_1")
  # The chief's image summaries (inference outside strategy.run) at multiples of 2 and where
  # a train() call ends (steps 1, 2, 4, 6).
  steps = []
  for path in glob.glob(str(tmp_path / "mw" / "train" / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      steps += [event.step for v in event.summary.value if v.tag == "predictions/0"]
  assert sorted(steps) == [1, 2, 4, 6]
