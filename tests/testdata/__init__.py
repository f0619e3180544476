"""Real test material kept in the repository (licences: NOTICE in this folder).

Paths are found relative to this file, so the tests run from any clone.
"""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent
COCO_SAMPLE_DIR = str(ROOT / "coco_val2017_sample")
COCO_SAMPLE_JSON = str(ROOT / "coco_val2017_sample" / "person_keypoints_sample.json")
DEMO_IMAGES_DIR = str(ROOT / "demo_images")
DETECTRON_BASELINES_JSON = str(ROOT / "detectron_12_2017_baselines.json")
