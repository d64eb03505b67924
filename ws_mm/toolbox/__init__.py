"""Glue between ws_mm and the OpenMMLab toolboxes: registration, safe
checkpoint loading, config checks and the launch of their train/test tools.
Nothing here is needed to use the layers in plain PyTorch."""
