"""Converters from public annotation formats (COCO json, proposal files) to tfdet TFRecords.

The record layout is `tfdet.data.schema`; these modules only write it.
"""
