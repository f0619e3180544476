"""A tiny Keypoint R-CNN overfits three drawn person images: its losses fall, and box AP and
keypoint AP (pycocotools' OKS evaluation) on the same images pass the stated thresholds.

This proves that the keypoint RoIs and heatmap targets, the heatmap loss, its gradients
through RoIAlign and the head, and the inference path (heatmaps of the detections, their
decoding into keypoints, COCO keypoint results) fit together. The person figures are those
of the synthetic data set (`tfdet.data.synthetic_shapes.person`).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.export import tiny
from tests.modeling import overfit_data
from tfdet.evaluation import coco as coco_eval
from tfdet.modeling.detectors import outputs as out
from tfdet.modeling.detectors import rcnn_losses

SCENES = [0, 1, 2]
STEPS = 150
# Measured after STEPS steps (TF 2.21, CPU, seeded and deterministic there; 10-step means
# of the keypoint loss 7.10 -> 1.19): each assertion is measured - MARGIN, so a change
# that costs more than 0.1 AP fails.
MARGIN = 0.1
MEASURED = {"bbox": {"AP": 0.900, "AP50": 1.0}, "keypoints": {"AP": 1.0, "AP50": 1.0}}
# Every predicted keypoint moved this many pixels right: the OKS evaluation must notice.
SHIFT = 6.0


def _results(model, batch):
  outputs = model(batch, training=False)
  boxes = overfit_data.coco_results(outputs, SCENES, convention="detectron")
  keypoints = []
  for i, image_id in enumerate(SCENES):
    keypoints += coco_eval.keypoints_to_coco(
        image_id, outputs[out.DETECTION_KEYPOINTS].numpy()[i],
        outputs[out.DETECTION_SCORES].numpy()[i], outputs[out.DETECTION_CLASSES].numpy()[i],
        outputs[out.NUM_DETECTIONS].numpy()[i], class_to_category={1: 1})
  return outputs, boxes, keypoints


# 152 s alone; beside another test process (tools/test.sh runs two) it passed 300 s once.
@pytest.mark.timeout(900)
def test_keypoint_rcnn_overfits(tmp_path):
  tf.keras.utils.set_random_seed(0)
  batch, coco = overfit_data.make_person_batch(SCENES)
  model = tiny.tiny_model(heads="keypoint", num_classes=2, implementation="custom",
                          build=False)
  history = overfit_data.train(
      model, batch,
      lambda m, o, b: rcnn_losses.rcnn_losses(m, o, b, seed=tf.constant([0, 0])), STEPS, 0.005)
  for name in (rcnn_losses.TOTAL_LOSS, rcnn_losses.RPN_CLS_LOSS, rcnn_losses.BOX_CLS_LOSS,
               rcnn_losses.KEYPOINT_LOSS):
    windows = overfit_data.window_means(history, name)
    print(name, np.round(windows, 3).tolist())
    assert windows[-1] < 0.5 * windows[0], (name, windows)
  assert rcnn_losses.SKIPPED_BATCH not in history[0]  # end to end: no minibatch is dropped
  outputs, boxes, keypoints = _results(model, batch)
  assert outputs[out.DETECTION_KEYPOINTS].shape[2:] == (17, 3)
  gt = overfit_data.ground_truth(coco, tmp_path / "gt.json")
  for iou_type, results in (("bbox", boxes), ("keypoints", keypoints)):
    stats, summary = coco_eval.evaluate(gt, results, iou_type)
    print(iou_type, {k: round(v, 3) for k, v in stats.items()})
    for name, value in MEASURED[iou_type].items():
      assert stats[name] >= value - MARGIN, (iou_type, name, stats[name], value, summary)
  # The keypoint AP measures where the keypoints are: shifted by SHIFT pixels (a tenth of
  # a ~60 px wide person) the same detections score far lower.
  for result in keypoints:
    result["keypoints"][0::3] = [x + SHIFT for x in result["keypoints"][0::3]]
  shifted, _ = coco_eval.evaluate(gt, keypoints, "keypoints")
  assert shifted["AP"] < 0.5, shifted
