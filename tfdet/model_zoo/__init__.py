"""Detectron's 12_2017 model zoo in tfdet: its config keys and its weights.

`detectron_keys` is the one table from Detectron's config keys to the gin
bindings of tfdet (what gin_configs/12_2017_baselines/*.gin must reproduce);
`gin_values` reads the values a parsed gin configuration gives them and
`derived_values` the quantities that are not one binding. `detectron_weights`
converts Detectron's .pkl weight files into checkpoints (names by rule:
`detectron_blob_names`; Caffe2 -> Keras layouts: `detectron_layouts`), run by
``python -m tfdet.import_detectron``.
"""
