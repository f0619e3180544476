"""The input functions the entry points bind in gin (train and eval scopes differ)."""

from tfdet.data import pipeline


def build_input(input_context=None, *, batch_size, file_pattern, mode="train", scales=(800,),
                max_size=1333, size_divisibility=32, max_instances=100,
                max_polygon_vertices=256, shuffle_buffer=1024, deterministic=False, seed=None,
                cycle_length=16, convention="detectron", flip_probability=0.5,
                keypoints_only=False, with_proposals=False, max_proposals=2000):
  """`tfdet.data.pipeline.build_dataset` with the arguments a config chooses.

  Args:
    input_context: the `tf.distribute.InputContext` of this input pipeline.
    batch_size: images per replica (the caller derives it from the global batch).
    Others: as `pipeline.build_dataset`.
  """
  return pipeline.build_dataset(
      file_pattern, mode=mode, batch_size=batch_size, input_context=input_context,
      convention=convention, scales=scales, max_size=max_size,
      size_divisibility=size_divisibility, max_instances=max_instances,
      max_polygon_vertices=max_polygon_vertices, shuffle_buffer=shuffle_buffer,
      deterministic=deterministic, seed=seed, cycle_length=cycle_length,
      flip_probability=flip_probability, keypoints_only=keypoints_only,
      with_proposals=with_proposals, max_proposals=max_proposals)
